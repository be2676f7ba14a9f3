"""The rendered systemd units: the directives the issue asks for, serial ports and the
overlay, `systemd-analyze verify` on every file, and the node unit's exposure score from
`systemd-analyze security --offline=true` (measured: 1.1 without serial ports, 1.5 with)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshems.core.config import ClusterConfig, parse_config
from meshems.ops.units import CONFIG_PATH, Install, node_unit, render_all, warnings

ANALYZE = shutil.which("systemd-analyze")
needs_analyze = pytest.mark.skipif(ANALYZE is None, reason="systemd-analyze missing (Debian package systemd)")
#: the exposure scores measured with systemd 252; a unit that gets weaker fails here
MAX_SCORE_PLAIN, MAX_SCORE_SERIAL = 1.1, 1.5

BASE: dict[str, Any] = {
    "cluster": "demo",
    "zone": "zone-a",
    "raft": {"secret_file": "raft.secret", "data_dir": "/var/lib/meshems"},
    "nodes": [
        {"id": "n1", "address": "192.0.2.11", "raft_port": 17101, "api_port": 17201,
         "devices": [{"id": "n1-bat", "kind": "battery", "min_kw": -50, "max_kw": 50}]},
        {"id": "n2", "address": "192.0.2.12", "raft_port": 17101, "api_port": 17201},
    ],
}  # fmt: skip


def config(**changes: Any) -> ClusterConfig:
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    doc.update(changes)
    return parse_config(doc, source=CONFIG_PATH)


def serial_config() -> ClusterConfig:
    doc = yaml.safe_load(yaml.safe_dump(BASE))
    doc["nodes"][0]["buses"] = [
        {"id": "rs485", "type": "rtu", "serial_port": "/dev/ttyUSB0"},
        {"id": "gw", "type": "rtu-over-tcp", "host": "192.0.2.30", "port": 4001},
    ]
    doc["nodes"][0]["devices"][0].update(bus="rs485", unit_id=2, profile="battery")
    doc["overlay"] = {"key_dir": "keys"}
    doc["nodes"][0]["overlay_address"] = "10.77.0.1"
    doc["nodes"][1]["overlay_address"] = "10.77.0.2"
    return parse_config(doc, source=CONFIG_PATH)


def directives(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, _, value = line.partition("=")
            out.setdefault(key, []).append(value)
    return out


INST = Install(python=sys.executable)


def test_node_unit_has_the_hardening_the_issue_names() -> None:
    d = directives(node_unit(config(), "n1", INST))
    for key, value in {
        "Type": "notify", "NotifyAccess": "main", "WatchdogSec": "30", "Restart": "on-failure",
        "User": "meshems", "Group": "meshems", "StateDirectory": "meshems",
        "ConfigurationDirectory": "meshems",
        "ProtectSystem": "strict", "ProtectHome": "yes", "NoNewPrivileges": "yes", "PrivateTmp": "yes",
        "PrivateDevices": "yes", "CapabilityBoundingSet": "", "AmbientCapabilities": "",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX", "MemoryDenyWriteExecute": "yes",
        "ProtectProc": "invisible", "ProcSubset": "pid", "UMask": "0077", "SystemCallArchitectures": "native",
    }.items():  # fmt: skip
        assert d.get(key, [None])[0] == value, key
    assert "@system-service" in d["SystemCallFilter"]
    assert d["ExecStart"] == [f"{sys.executable} -m meshems node run --config {CONFIG_PATH} --node n1"]
    assert "SupplementaryGroups" not in d and "DeviceAllow" not in d
    assert "meshems-firewall.service" in d["After"][0] and "meshems-overlay.service" not in d["After"][0]
    assert "network-online.target" in d["Wants"][0]


def test_serial_ports_get_dialout_and_a_device_acl() -> None:
    files = render_all(serial_config(), "n1", INST)
    d = directives(files["etc/systemd/system/meshems-node.service"])
    assert d["SupplementaryGroups"] == ["dialout"]
    assert d["DevicePolicy"] == ["closed"] and d["DeviceAllow"] == ["/dev/ttyUSB0 rw"]  # not the TCP one
    assert "PrivateDevices" not in d
    assert "m meshems dialout" in files["usr/lib/sysusers.d/meshems.conf"]
    assert "meshems-overlay.service" in d["Wants"][0] and "meshems-overlay.service" in d["After"][0]


def test_oneshots_run_before_the_node_with_net_admin() -> None:
    files = render_all(serial_config(), "n1", INST)
    for name, command in (("overlay", "overlay up"), ("firewall", "firewall apply")):
        d = directives(files[f"etc/systemd/system/meshems-{name}.service"])
        assert d["Type"] == ["oneshot"] and d["RemainAfterExit"] == ["yes"]
        assert d["CapabilityBoundingSet"] == ["CAP_NET_ADMIN"] and d["AmbientCapabilities"] == [
            "CAP_NET_ADMIN"
        ]
        assert "meshems-node.service" in d["Before"][0]
        assert d["ExecStart"] == [f"{sys.executable} -m meshems {command} --config {CONFIG_PATH} --node n1"]
    assert "meshems-overlay.service" not in "".join(render_all(config(), "n1", INST))


def test_sysusers_tmpfiles_and_paths() -> None:
    cfg = config(raft={"secret_file": "raft.secret", "data_dir": "../data"})
    files = render_all(cfg, "n1", INST)
    assert files["usr/lib/sysusers.d/meshems.conf"].splitlines()[1:] == [
        'u meshems - "meshems node" /var/lib/meshems'
    ]
    tmp = files["usr/lib/tmpfiles.d/meshems.conf"]
    assert "d /var/lib/meshems 0700 meshems meshems -" in tmp
    assert "d /etc/data 0700 meshems meshems -" in tmp  # a data_dir outside the state folder
    assert f"z {CONFIG_PATH} 0640 root meshems -" in tmp and "z /etc/meshems/raft.secret 0600 meshems" in tmp
    assert "ReadWritePaths=/etc/data" in files["etc/systemd/system/meshems-node.service"]
    assert any("raft.data_dir resolves to /etc/data" in w for w in warnings(cfg, "n1"))
    hidden = config(raft={"secret_file": "/home/me/raft.secret", "data_dir": "/var/lib/meshems"})
    assert any("cannot see" in w for w in warnings(hidden, "n1"))
    assert warnings(config(), "n1") == []


def write(files: dict[str, str], root: Path) -> list[Path]:
    units = []
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        if p.suffix == ".service":
            units.append(p)
    return units


def analyze(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    assert ANALYZE is not None
    return subprocess.run([ANALYZE, *args], capture_output=True, text=True, timeout=60, cwd=cwd)


@needs_analyze
@pytest.mark.parametrize("cfg", [config(), serial_config()], ids=["plain", "serial+overlay"])
def test_systemd_analyze_verify_accepts_every_unit(tmp_path: Path, cfg: ClusterConfig) -> None:
    units = write(render_all(cfg, "n1", INST), tmp_path)
    out = analyze("verify", *map(str, units))
    assert out.returncode == 0 and out.stderr.strip() == "", out.stderr


@needs_analyze
def test_verify_catches_a_missing_interpreter(tmp_path: Path) -> None:
    """The control: verify does fail when ExecStart names no executable."""
    units = write(render_all(config(), "n1", Install(python="/nonexistent/python3")), tmp_path)
    out = analyze("verify", str(units[0]))
    assert out.returncode != 0 and "/nonexistent/python3" in out.stderr


@needs_analyze
@pytest.mark.parametrize(
    ("cfg", "limit"),
    [(config(), MAX_SCORE_PLAIN), (serial_config(), MAX_SCORE_SERIAL)],
    ids=["plain", "serial"],
)
def test_node_unit_exposure_score(tmp_path: Path, cfg: ClusterConfig, limit: float) -> None:
    write(render_all(cfg, "n1", INST), tmp_path)
    folder = tmp_path / "etc/systemd/system"
    out = analyze("security", "--offline=true", "./meshems-node.service", cwd=folder)
    m = re.search(r"Overall exposure level for meshems-node\.service: ([0-9.]+)", out.stdout + out.stderr)
    assert m is not None, out.stdout + out.stderr
    assert float(m.group(1)) <= limit
