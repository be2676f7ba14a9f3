"""Two gateways in their own network namespaces, joined by veth: `meshems overlay up` brings
wireguard-go tunnels up (twice: idempotent), TCP crosses the overlay, `overlay status` shows a
fresh handshake, `overlay down` removes everything. Root only; always cleaned up."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from meshems.adapters.config_file import load_config
from meshems.adapters.wireguard import keygen
from tests.conftest import write_config

pytestmark = pytest.mark.lab


def sh(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=30, check=check)


def meshems_in(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "meshems", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_overlay_up_carries_tcp_between_namespaces(tmp_path: Path) -> None:
    tag = uuid.uuid4().hex[:5]
    ns = [f"mlab{tag}a", f"mlab{tag}b"]
    veth = [f"mv{tag}a", f"mv{tag}b"]
    path = write_config(tmp_path, nodes=2)
    doc = yaml.safe_load(path.read_text())
    doc["overlay"] = {"key_dir": "keys", "listen_port": 51820}
    for i, n in enumerate(doc["nodes"]):
        n["address"] = f"10.98.7.{i + 1}"
        n["overlay_address"] = f"10.77.7.{i + 1}"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = load_config(path)
    for n in cfg.nodes:
        keygen(cfg, n.id)
    server = None
    try:
        for n in ns:
            sh("ip", "netns", "add", n)
        sh(
            "ip",
            "link",
            "add",
            veth[0],
            "netns",
            ns[0],
            "type",
            "veth",
            "peer",
            "name",
            veth[1],
            "netns",
            ns[1],
        )
        for i in (0, 1):
            sh(
                "ip",
                "netns",
                "exec",
                ns[i],
                "ip",
                "address",
                "add",
                f"{cfg.nodes[i].address}/24",
                "dev",
                veth[i],
            )
            sh("ip", "netns", "exec", ns[i], "ip", "link", "set", veth[i], "up")
            sh("ip", "netns", "exec", ns[i], "ip", "link", "set", "lo", "up")
        for _ in range(2):  # idempotent
            for i, n in enumerate(cfg.nodes):
                out = meshems_in(ns[i], "overlay", "up", "--config", str(path), "--node", n.id)
                assert out.returncode == 0, out.stderr
        server = subprocess.Popen(
            [
                "ip",
                "netns",
                "exec",
                ns[1],
                "socat",
                "-T",
                "10",
                f"TCP-LISTEN:7000,bind={cfg.nodes[1].overlay_address}",
                "SYSTEM:echo over-the-overlay",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        got = ""
        for _ in range(40):
            out = sh(
                "ip",
                "netns",
                "exec",
                ns[0],
                "socat",
                "-T",
                "3",
                "-",
                f"TCP:{cfg.nodes[1].overlay_address}:7000",
                check=False,
            )
            got = out.stdout.strip()
            if got:
                break
            subprocess.run(["sleep", "0.25"], check=False)
        assert got == "over-the-overlay"
        status = meshems_in(
            ns[0], "overlay", "status", "--config", str(path), "--node", cfg.nodes[0].id, "-o", "json"
        )
        assert status.returncode == 0, status.stdout + status.stderr
        rows = json.loads(status.stdout)
        assert rows[0]["peer"] == cfg.nodes[1].id and rows[0]["handshake_age_s"] is not None
        assert rows[0]["rx_bytes"] > 0 and rows[0]["stale"] is False
        for i, n in enumerate(cfg.nodes):
            out = meshems_in(ns[i], "overlay", "down", "--config", str(path), "--node", n.id)
            assert out.returncode == 0 and "removed" in out.stdout
            assert (
                sh("ip", "netns", "exec", ns[i], "ip", "link", "show", f"mwg-{n.id}", check=False).returncode
                != 0
            )
    finally:
        if server is not None:
            server.kill()
            server.wait(timeout=5)
        for i, n in enumerate(cfg.nodes):
            sh("ip", "netns", "exec", ns[i], "ip", "link", "del", f"mwg-{n.id}", check=False)
        for n in ns:
            sh("ip", "netns", "del", n, check=False)
