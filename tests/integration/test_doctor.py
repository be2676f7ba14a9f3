"""`meshems doctor` against a real wired 3-node cluster: healthy it exits 0 with no ✗; each
failure injected once (an expired certificate, a wrong CN, a secret of mode 0644, a silent
Modbus device, a full data folder, a closed broker port, a stopped node) gives its ✗ and
hint, and exit 1. Every injection is undone; the stopped node comes last."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshems.adapters import pki
from meshems.ops.supervisor import LocalCluster
from tests.conftest import free_ports
from tests.integration.conftest import meshems_cli

pytestmark = pytest.mark.integration


def doctor(config: str | Path, *extra: str) -> tuple[int, dict[str, dict[str, Any]], str]:
    """(exit code, checks by name from -o json, the table output)."""
    args = ("doctor", "--config", str(config), *extra)
    as_json = meshems_cli(*args, "-o", "json", timeout=90)
    table = meshems_cli(*args, timeout=90)
    assert as_json.returncode == table.returncode, table.stdout + table.stderr
    assert as_json.stdout.startswith("{"), as_json.stderr
    body = json.loads(as_json.stdout)
    assert body["ok"] == (as_json.returncode == 0)
    return as_json.returncode, {c["name"]: c for c in body["checks"]}, table.stdout


def failures(checks: dict[str, dict[str, Any]]) -> list[str]:
    return [n for n, c in checks.items() if c["status"] == "fail"]


@contextlib.contextmanager
def kept(*paths: Path) -> Iterator[None]:
    """Put `paths` back as they were when the block ends."""
    saved = {p: (p.read_bytes(), p.stat().st_mode) for p in paths}
    try:
        yield
    finally:
        for p, (data, mode) in saved.items():
            p.write_bytes(data)
            os.chmod(p, mode & 0o777)


def variant(cluster: LocalCluster, name: str, edit: Any) -> Path:
    """A copy of the cluster's config next to it (relative paths stay valid), changed by `edit`."""
    doc = yaml.safe_load(Path(cluster.config_path).read_text())
    edit(doc)
    path = Path(cluster.config_path).with_name(f"{name}.yaml")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    from tests.integration.conftest import ClusterFactory

    factory = ClusterFactory(tmp_path_factory.mktemp("doctor"))
    try:
        yield factory(wired=True)
    finally:
        factory.close()


def test_a_healthy_zone_passes(cluster: LocalCluster) -> None:
    code, checks, table = doctor(cluster.config_path)
    print(table)
    assert code == 0, table
    assert not failures(checks)
    for name in ("config", "secret", "cert n1", "cert n1 CN", "cert n1 chain", "n2 raft", "n3 api"):
        assert checks[name]["status"] == "ok", checks[name]
    assert checks["n2 api"]["detail"].count("term") == 1
    assert any(n.startswith("device n1-") for n in checks)
    assert checks["data n1 writable"]["status"] == "ok"
    assert checks["poll errors n2-meter"]["status"] == "ok", checks
    assert "outbox" not in checks  # no cloud configured
    assert "✓ config" in table and table.rstrip().endswith("0 failed")


def test_an_expired_certificate_fails_with_the_renewal_hint(cluster: LocalCluster) -> None:
    tls = cluster.cfg.tls_dir
    with kept(tls / "n2.crt", tls / "n2.key"):
        now = datetime.now(UTC)
        pki.issue(tls, "n2", "node", not_before=now - timedelta(days=400), not_after=now - timedelta(days=1),
                  force=True)  # fmt: skip
        code, checks, table = doctor(cluster.config_path, "--skip", "devices")
    assert code == 1
    assert failures(checks) == ["cert n2"], table
    assert "expired on" in checks["cert n2"]["detail"]
    assert "pki issue" in checks["cert n2"]["hint"]
    assert "✗ cert n2 " in table and "→ meshems pki issue" in table


def test_a_certificate_not_yet_valid_points_at_the_clock(cluster: LocalCluster) -> None:
    tls = cluster.cfg.tls_dir
    with kept(tls / "operator.crt", tls / "operator.key"):
        now = datetime.now(UTC)
        pki.issue(tls, "operator", "operator", role="admin", not_before=now + timedelta(hours=2),
                  not_after=now + timedelta(days=90), force=True)  # fmt: skip
        code, checks, table = doctor(cluster.config_path, "--skip", "devices", "--skip", "peers")
    assert code == 1
    assert failures(checks) == ["cert operator"], table
    assert "not valid before" in checks["cert operator"]["detail"]
    assert "clock" in checks["cert operator"]["hint"]


def test_a_certificate_expiring_soon_warns_but_does_not_fail(cluster: LocalCluster) -> None:
    tls = cluster.cfg.tls_dir
    with kept(tls / "n3.crt", tls / "n3.key"):
        pki.issue(tls, "n3", "node", days=10, force=True)
        code, checks, table = doctor(cluster.config_path, "--skip", "devices")
    assert code == 0, table
    assert checks["cert n3"]["status"] == "warn" and "expires in" in checks["cert n3"]["detail"]
    assert "! cert n3 " in table


def test_a_wrong_cn_fails(cluster: LocalCluster) -> None:
    tls = cluster.cfg.tls_dir
    with kept(tls / "n1.crt", tls / "n1.key"):
        key, crt = pki.issue(tls, "gw-wrong", "node", force=True)
        shutil.copyfile(crt, tls / "n1.crt")
        shutil.copyfile(key, tls / "n1.key")
        key.unlink()
        crt.unlink()
        code, checks, table = doctor(cluster.config_path, "--node", "n1", "--skip", "devices")
    assert code == 1
    assert failures(checks) == ["cert n1 CN"], table
    assert "'gw-wrong'" in checks["cert n1 CN"]["detail"]
    assert "pki issue n1" in checks["cert n1 CN"]["hint"]


def test_a_certificate_of_another_ca_does_not_chain(cluster: LocalCluster, tmp_path: Path) -> None:
    tls = cluster.cfg.tls_dir
    pki.init_ca(tmp_path, "other-zone")
    key, crt = pki.issue(tmp_path, "n2", "node")
    with kept(tls / "n2.crt", tls / "n2.key"):
        shutil.copyfile(crt, tls / "n2.crt")
        shutil.copyfile(key, tls / "n2.key")
        code, checks, table = doctor(cluster.config_path, "--skip", "devices", "--skip", "peers")
    assert code == 1
    assert failures(checks) == ["cert n2 chain"], table


def test_a_secret_readable_by_others_fails(cluster: LocalCluster) -> None:
    secret = cluster.cfg.secret_path
    with kept(secret):
        os.chmod(secret, 0o644)
        code, checks, table = doctor(cluster.config_path, "--skip", "devices", "--skip", "peers")
    assert code == 1
    assert failures(checks) == ["secret"], table
    assert "0644" in checks["secret"]["detail"]
    assert checks["secret"]["hint"] == f"chmod 600 {secret}"


def test_a_key_readable_by_the_group_fails(cluster: LocalCluster) -> None:
    key = cluster.cfg.tls_dir / "operator.key"
    with kept(key):
        os.chmod(key, 0o640)
        code, checks, _ = doctor(cluster.config_path, "--skip", "devices", "--skip", "peers")
    assert code == 1
    assert failures(checks) == ["key operator.key"]


def test_a_silent_device_fails_with_its_code(cluster: LocalCluster) -> None:
    dead_port = free_ports(1)[0]  # nothing listens there

    def edit(doc: dict[str, Any]) -> None:
        doc["nodes"][0]["buses"].append({"id": "dead", "type": "tcp", "host": "127.0.0.1", "port": dead_port,
                                         "timeout_s": 0.3})  # fmt: skip
        meter = next(d for d in doc["nodes"][0]["devices"] if d["kind"] == "meter")
        meter["bus"] = "dead"

    path = variant(cluster, "silent", edit)
    code, checks, table = doctor(path, "--node", "n1", "--skip", "peers")
    assert code == 1
    assert failures(checks) == ["device n1-meter"], table
    assert "E_CONNECT" in checks["device n1-meter"]["detail"]
    assert "nc -zv" in checks["device n1-meter"]["hint"]
    assert checks["device n1-bat"]["status"] == "ok"


def test_a_serial_port_that_is_missing_fails(cluster: LocalCluster) -> None:
    def edit(doc: dict[str, Any]) -> None:
        doc["nodes"][0]["buses"].append({"id": "rs485", "type": "rtu", "serial_port": "/dev/ttyMESHEMSnone"})
        next(d for d in doc["nodes"][0]["devices"] if d["kind"] == "meter")["bus"] = "rs485"

    code, checks, _ = doctor(variant(cluster, "serial", edit), "--node", "n1", "--skip", "peers")
    assert code == 1
    assert failures(checks) == ["serial rs485"]
    assert "no such device" in checks["serial rs485"]["detail"]


def test_a_closed_broker_port_fails_with_the_nc_hint(cluster: LocalCluster) -> None:
    port = free_ports(1)[0]

    def edit(doc: dict[str, Any]) -> None:
        doc["cloud"] = {"broker_host": "127.0.0.1", "broker_port": port}

    code, checks, table = doctor(variant(cluster, "broker", edit), "--node", "n1", "--skip", "devices")
    assert code == 1
    assert failures(checks) == ["broker tcp"], table
    assert f"nc -zv 127.0.0.1 {port}" in checks["broker tcp"]["hint"]


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("mount") is None, reason="a tmpfs needs root")
def test_a_full_data_folder_fails(cluster: LocalCluster) -> None:
    mount = Path(tempfile.mkdtemp(prefix="meshems-doctor-full-"))
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True, timeout=10)
        try:
            with open(mount / "fill", "wb") as f, contextlib.suppress(OSError):
                for _ in range(8):  # bounded: 8 MiB into a 4 MiB tmpfs
                    f.write(b"\0" * (1 << 20))
                    f.flush()

            def edit(doc: dict[str, Any]) -> None:
                doc["raft"]["data_dir"] = str(mount)

            code, checks, table = doctor(variant(cluster, "full", edit), "--node", "n1", "--skip", "peers",
                                         "--skip", "devices")  # fmt: skip
        finally:
            subprocess.run(["umount", str(mount)], check=True, timeout=10)
    finally:
        mount.rmdir()
    assert code == 1
    assert failures(checks) == ["data n1", "data n1 writable"], table
    assert "below raft.min_free_mib" in checks["data n1"]["detail"]
    assert "free space" in checks["data n1"]["hint"]


def test_a_stopped_node_fails_its_ports(cluster: LocalCluster) -> None:
    """Last: it leaves n3 stopped."""
    cluster.kill("n3")
    code, checks, table = doctor(cluster.config_path, "--skip", "devices")
    assert code == 1
    assert sorted(failures(checks)) == ["n3 api", "n3 raft"], table
    assert "refused" in checks["n3 raft"]["detail"].lower()
    assert "running" in checks["n3 api"]["hint"]
    assert checks["n1 api"]["status"] == "ok"


def test_slow_silent_and_sunspec_devices_of_the_simulator(tmp_path: Path) -> None:
    """The simulator's fault injection: a meter answering in 0.6 s of its 1 s timeout is a
    warning (raise timeout_s), a silent battery a failure (E_TIMEOUT), a SunSpec PV is
    checked by its SunS marker."""
    from meshems.adapters.config_file import load_config
    from meshems.adapters.secret import init_secret
    from tests.conftest import write_config
    from tests.integration.conftest import sim_process

    path = write_config(tmp_path, nodes=1, wired=True, profiles={"pv": "sunspec"})
    doc = yaml.safe_load(path.read_text())
    doc["nodes"][0]["buses"][0]["timeout_s"] = 1.0
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    init_secret(load_config(path).secret_path)
    site = yaml.safe_load((tmp_path / "site-n1.yaml").read_text())
    site["faults"] = [
        {"server": "main", "unit_id": 1, "kind": "slow", "delay_s": 0.6},
        {"server": "main", "unit_id": 2, "kind": "silent"},
    ]
    (tmp_path / "sim").mkdir()
    with sim_process(tmp_path / "sim", site):
        code, checks, table = doctor(path, "--node", "n1", "--skip", "peers")
    assert code == 1
    assert [n for n in failures(checks) if n.startswith("device")] == ["device n1-bat"], table
    assert "E_TIMEOUT" in checks["device n1-bat"]["detail"]
    assert "unit_id" in checks["device n1-bat"]["hint"]
    assert checks["device n1-meter"]["status"] == "warn", table
    assert "timeout_s" in checks["device n1-meter"]["hint"]
    assert checks["device n1-pv"]["status"] == "ok" and "SunS marker" in checks["device n1-pv"]["detail"]
    assert checks["device n1-relays"]["status"] == "ok"
