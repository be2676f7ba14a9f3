"""`ops.doctor` probes on local files and processes: key modes, clock offsets from status
bodies, chrony's tracking through a stand-in `chronyc` on PATH, and devices of nodes not
wired here (a warning without --node, failures with it), and a device whose profile comes
from a profiles payload (`payload:NAME`) probed by the one the node holds."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from meshems.adapters.config_file import load_config
from meshems.adapters.secret import init_secret
from meshems.ops import doctor, doctor_field
from tests.conftest import write_config


def test_modes_list_the_secret_and_every_key(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path))
    assert doctor.check_modes(cfg)[0].status == "fail"  # no secret yet
    init_secret(cfg.secret_path)
    cfg.tls_dir.mkdir(parents=True)
    (cfg.tls_dir / "n1.key").write_text("k")
    os.chmod(cfg.tls_dir / "n1.key", 0o644)
    checks = {c.name: c for c in doctor.check_modes(cfg)}
    assert checks["secret"].status == "ok"
    assert checks["key n1.key"].status == "fail" and "chmod 600" in checks["key n1.key"].hint


def test_clock_offsets_come_from_the_status_bodies_when_present() -> None:
    rows = [{"id": "n1", "clock_offsets_s": {"n2": 0.01, "n3": -0.8}}, {"id": "n2"}]
    checks = {c.name: c.status for c in doctor.check_clock_offsets(rows)}
    assert checks == {"clock n1→n2": "ok", "clock n1→n3": "warn"}
    assert doctor.check_clock_offsets([{"id": "n1"}]) == []


@pytest.mark.parametrize(
    ("system_time", "leap", "status"),
    [
        ("0.000120 seconds fast of NTP time", "Normal", "ok"),
        ("0.900000 seconds slow of NTP time", "Normal", "warn"),
        ("0.000120 seconds fast of NTP time", "Not synchronised", "warn"),
    ],
)
def test_chrony_tracking_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, system_time: str, leap: str, status: str
) -> None:
    fake = tmp_path / "chronyc"
    lines = [f"echo 'System time     : {system_time}'", f"echo 'Leap status     : {leap}'"]
    fake.write_text("#!/bin/sh\n" + "\n".join(lines) + "\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    [check] = doctor.check_time_sync()
    assert check.status == status and check.detail.startswith("chrony")


def test_devices_of_a_node_not_wired_here_are_one_warning_without_node(tmp_path: Path) -> None:
    cfg = load_config(write_config(tmp_path, nodes=2, wired=True))  # no simulator runs: nothing answers
    checks = doctor_field.check_devices(cfg, list(cfg.nodes), explicit=False)
    assert [(c.name, c.status) for c in checks] == [("devices n1", "warn"), ("devices n2", "warn")]
    assert "--node n1" in checks[0].hint
    explicit = doctor_field.check_devices(cfg, [cfg.node("n1")], explicit=True)
    assert explicit and all(c.status == "fail" and "E_CONNECT" in c.detail for c in explicit)


def test_a_bad_config_is_one_line_naming_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("cluster: c\nzone: z\nraft: {secret_file: s, heartbeat_s: x}\nnodes: []\n")
    cfg, check = doctor.check_config(str(path))
    assert cfg is None and check.status == "fail"
    assert "raft.heartbeat_s" in check.detail and "\n" not in check.detail and str(path) in check.detail
    cfg, check = doctor.check_config(str(tmp_path / "none.yaml"))
    assert cfg is None and "--config" in check.hint


def test_overlay_handshakes_are_read_from_wg_show(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in `wg` prints a dump: n2 shook hands 10 s ago, n3 never."""
    import time

    from meshems.adapters.wireguard import keygen
    from tests.adapters.test_wireguard import overlay_config

    (tmp_path / "zone").mkdir()
    cfg = overlay_config(tmp_path / "zone")
    publics = {n.id: keygen(cfg, n.id)[1] for n in cfg.nodes}
    now = int(time.time())
    dump = [
        "priv\tpub\t51820\toff",
        f"{publics['n2']}\t(none)\t10.0.0.2:51820\t10.77.0.2/32\t{now - 10}\t100\t200\t25",
        f"{publics['n3']}\t(none)\t10.0.0.3:51820\t10.77.0.3/32\t0\t0\t0\t25",
    ]
    (tmp_path / "dump").write_text("\n".join(dump) + "\n")
    fake = tmp_path / "bin" / "wg"
    fake.parent.mkdir()
    fake.write_text(f"#!/bin/sh\ncat {tmp_path / 'dump'}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")
    checks = {c.name: c for c in doctor.check_overlay(cfg, "n1")}
    assert checks["overlay n2"].status == "ok"
    assert checks["overlay n3"].status == "fail" and "no handshake" in checks["overlay n3"].detail
    fake.write_text("#!/bin/sh\necho 'Unable to access interface: No such device' >&2\nexit 1\n")
    [down] = doctor.check_overlay(cfg, "n1")
    assert down.status == "fail" and "overlay up" in down.hint


def test_a_device_on_a_payload_profile_is_probed_by_the_profile_the_node_holds(tmp_path: Path) -> None:
    from meshems.adapters.payload_profiles import write_held

    cfg = load_config(write_config(tmp_path, nodes=1, wired=True, profiles={"battery": "payload:site-bat"}))
    checks = {c.name: c for c in doctor_field.check_devices(cfg, [cfg.node("n1")], explicit=True)}
    [bat] = [c for n, c in checks.items() if "bat" in n]
    assert (
        bat.status == "fail"
        and "no profiles payload in effect on this node holds site-bat.yaml" in bat.detail
    )
    assert "held: none" in bat.detail
    data = cfg.data_dir("n1")
    files = data / "payloads" / ("d" * 64) / "files" / "vendor"
    files.mkdir(parents=True)
    (files / "site-bat.yaml").write_text(
        (Path(doctor.__file__).parents[1] / "profiles/battery.yaml").read_text()
    )
    write_held(data, {"site-profiles": {"id": "p-1", "version": "1.0.0", "digest": "d" * 64}})
    checks = {c.name: c for c in doctor_field.check_devices(cfg, [cfg.node("n1")], explicit=True)}
    [bat] = [c for n, c in checks.items() if "bat" in n]
    assert bat.status == "fail" and "E_CONNECT" in bat.detail, bat  # the profile loaded; nothing listens
