"""The `meshems` command against real node processes: status, setpoints, errors, secrets,
damaged journals, and pysyncobj's own syncobj_admin tool."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from meshems.ops.supervisor import LocalCluster
from tests.conftest import write_config
from tests.integration.conftest import meshems_cli
from tests.integration.test_cluster import set_sp, status_of, wait_until

pytestmark = pytest.mark.integration


def test_status_json_has_a_row_per_node(shared_cluster: LocalCluster) -> None:
    out = meshems_cli("status", "--config", shared_cluster.config_path, "-o", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["id"] for r in rows] == ["n1", "n2", "n3"]
    for r in rows:
        for key in (
            "id",
            "reachable",
            "role",
            "term",
            "commit_index",
            "applied_index",
            "has_quorum",
            "lag",
            "uptime_s",
            "leader",
        ):
            assert key in r
    assert sum(r["role"] == "leader" for r in rows) == 1
    assert len({r["leader"] for r in rows}) == 1


def test_status_table(shared_cluster: LocalCluster) -> None:
    out = meshems_cli("status", "--config", shared_cluster.config_path)
    assert out.returncode == 0, out.stderr
    for word in ("ROLE", "TERM", "COMMIT", "APPLIED", "LAG", "QUORUM", "leader", "follower"):
        assert word in out.stdout


def test_setpoint_set_and_get(shared_cluster: LocalCluster) -> None:
    cfg = shared_cluster.config_path
    out = meshems_cli("setpoint", "set", "--config", cfg, "n3-bat", "-4.5")
    assert out.returncode == 0, out.stderr
    assert "term" in out.stdout and "index" in out.stdout
    out = meshems_cli("setpoint", "get", "--config", cfg, "n3-bat", "-o", "json", "--consistent")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert rows[0]["device_id"] == "n3-bat" and rows[0]["kw"] == -4.5
    assert rows[0]["term"] >= 1 and rows[0]["index"] >= 1


def test_setpoint_for_unknown_device_fails_clearly(shared_cluster: LocalCluster) -> None:
    out = meshems_cli("setpoint", "set", "--config", shared_cluster.config_path, "ghost", "1")
    assert out.returncode == 1
    assert "E_UNKNOWN_DEVICE" in out.stderr and "ghost" in out.stderr
    out = meshems_cli("setpoint", "get", "--config", shared_cluster.config_path, "ghost")
    assert out.returncode == 1 and "E_UNKNOWN_DEVICE" in out.stderr


def test_syncobj_admin_status_works(shared_cluster: LocalCluster) -> None:
    admin = shutil.which("syncobj_admin", path=str(Path(os.sys.executable).parent))
    assert admin, "syncobj_admin is installed with pysyncobj"
    node = shared_cluster.cfg.node("n1")
    secret = shared_cluster.cfg.secret_path.read_text().strip()
    out = subprocess.run(
        [admin, "-conn", node.raft_endpoint, "-pass", secret, "-status"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "raft_term:" in out.stdout and "leader:" in out.stdout, out.stdout + out.stderr
    wrong = subprocess.run(
        [admin, "-conn", node.raft_endpoint, "-pass", "wrong", "-status"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "raft_term:" not in wrong.stdout


def test_status_shows_unreachable_nodes_and_still_succeeds(make_cluster) -> None:
    c = make_cluster()
    c.kill("n3")
    out = meshems_cli("status", "--config", c.config_path, "-o", "json")
    assert out.returncode == 0
    rows = {r["id"]: r for r in json.loads(out.stdout)}
    assert rows["n3"]["reachable"] is False and rows["n1"]["reachable"] is True
    c.stop_all()
    out = meshems_cli("status", "--config", c.config_path, "-o", "json")
    assert out.returncode == 1 and "E_UNREACHABLE" in out.stderr


def test_node_run_without_secret_names_the_command(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    out = meshems_cli("node", "run", "--config", str(cfg), "--node", "n1", "--allow-root", timeout=30)
    assert out.returncode == 2
    assert "meshems secret init --config" in out.stderr


def test_secret_init_is_0600_and_exposed_secret_is_refused(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    out = meshems_cli("secret", "init", "--config", str(cfg))
    assert out.returncode == 0, out.stderr
    secret = tmp_path / "secret" / "raft.secret"
    assert secret.stat().st_mode & 0o777 == 0o600
    again = meshems_cli("secret", "init", "--config", str(cfg))
    assert again.returncode == 2 and "already exists" in again.stderr
    secret.chmod(0o644)
    out = meshems_cli("node", "run", "--config", str(cfg), "--node", "n1", "--allow-root", timeout=30)
    assert out.returncode == 2 and "chmod 600" in out.stderr


def test_bad_config_names_file_and_key(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    cfg.write_text(cfg.read_text().replace("heartbeat", "x").replace("raft:\n", "raft:\n  heartbeet_s: 1\n"))
    out = meshems_cli("status", "--config", str(cfg))
    assert out.returncode == 2
    assert str(cfg) in out.stderr and "raft.heartbeet_s" in out.stderr and "E_CONFIG" in out.stderr
    out = meshems_cli("node", "run", "--config", str(cfg), "--node", "n1", "--allow-root")
    assert out.returncode == 2


def test_damaged_journal_is_reported_then_reset_catches_up(make_cluster) -> None:
    c = make_cluster()
    for i in range(10):
        assert set_sp(c, "n1-bat", float(i))["ok"]
    victim = next(n for n in ("n1", "n2", "n3") if status_of(c, n)["role"] != "leader")
    c.stop(victim)
    journal = c.cfg.data_dir(victim) / "raft.journal"
    data = bytearray(journal.read_bytes())
    intact = bytes(data)
    pos = data.index(b"source", 200)
    data[pos] ^= 0x01
    journal.write_bytes(bytes(data))
    c.start(victim)
    proc = c.procs[victim]
    assert proc.wait(timeout=30) == 1
    log = c.log_text(victim)
    assert "E_JOURNAL_CORRUPT" in log and str(journal) in log and "--reset-journal" in log
    # truncation is caught the same way (the file is preallocated: cut inside the records)
    records_end = int.from_bytes(intact[36:40], "little")
    journal.write_bytes(intact[: records_end * 2 // 3])
    c.start(victim)
    assert c.procs[victim].wait(timeout=30) == 1
    assert "truncated" in c.log_text(victim) or "bad size" in c.log_text(victim)
    # the operator resets it: the node moves its files aside and catches up from peers
    c.start(victim, "--reset-journal")
    c.wait_api(victim)
    assert list(journal.parent.glob("raft.journal.corrupt-*"))
    wait_until(
        lambda: (
            status_of(c, victim)["state_hash"] == status_of(c, "n1" if victim != "n1" else "n2")["state_hash"]
        ),
        what="reset node converges",
    )
    assert set_sp(c, "n2-bat", 1.0, via=victim)["ok"]
