"""`meshems firewall` in real network namespaces: apply is atomic and idempotent and check
names the drift; in the 3-gateway WireGuard lab every node's allow-list is applied, the
cluster keeps electing and committing, a port scan from a namespace that is not a peer finds
nothing open (nor refused: dropped), and its Raft connection is dropped while a write
commits. Root only; every namespace, link and process is removed in `finally`."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshems.adapters import nft
from meshems.adapters.config_file import load_config
from meshems.core import commands, firewall
from meshems.lab import netlab
from meshems.lab.gateways import API_PORT, MODBUS_PORT, RAFT_PORT, Lab
from tests.conftest import write_config

pytestmark = pytest.mark.lab

SCANNER = Path(__file__).with_name("portscan.py")


def sh(*cmd: str, check: bool = True, timeout_s: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout_s, check=check)


def meshems(*args: str, netns: str | None = None) -> subprocess.CompletedProcess[str]:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    cmd = [*prefix, sys.executable, "-m", "meshems", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60)


def input_rules(ns: str) -> list[str]:
    return firewall.normalize(nft.list_table(ns) or "").get("input", [])


def test_apply_is_atomic_and_idempotent_and_check_names_the_drift(tmp_path: Path) -> None:
    path = write_config(tmp_path, nodes=3)
    doc = yaml.safe_load(path.read_text())
    doc["overlay"] = {"key_dir": "keys"}
    doc["api"] = {"operator_networks": ["10.99.0.0/24"]}
    for i, n in enumerate(doc["nodes"]):
        n["address"], n["overlay_address"] = f"10.98.9.{i + 1}", f"10.77.9.{i + 1}"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = load_config(path)
    expected = firewall.render(cfg, "n1").rules
    ns = f"mfw{uuid.uuid4().hex[:6]}"
    conf = ["--config", str(path), "--node", "n1", "--netns", ns]
    try:
        sh("ip", "netns", "add", ns)
        out = meshems("firewall", "check", *conf)
        assert out.returncode == 1 and "table inet meshems is not loaded" in out.stdout, (
            out.stdout + out.stderr
        )
        for _ in range(2):  # idempotent: the second apply replaces the first
            out = meshems("firewall", "apply", *conf)
            assert out.returncode == 0, out.stdout + out.stderr
            assert f"n1: table inet meshems loaded in network namespace {ns}" in out.stdout
        ruleset = sh("ip", "netns", "exec", ns, "nft", "list", "ruleset").stdout
        assert ruleset.count("table inet meshems {") == 1
        assert firewall.normalize(ruleset) == expected  # no rule twice
        out = meshems("firewall", "check", *conf)
        assert out.returncode == 0 and "matches the rendered ruleset" in out.stdout, out.stdout

        # someone opens SSH by hand: check names that rule
        sh("ip", "netns", "exec", ns, "nft", "insert rule inet meshems input tcp dport 22 accept")
        out = meshems("firewall", "check", *conf)
        assert out.returncode == 1 and "+ chain input: tcp dport 22 accept" in out.stdout, out.stdout
        report = json.loads(meshems("firewall", "check", *conf, "-o", "json").stdout)
        assert report["in_sync"] is False and report["unexpected"] == ["chain input: tcp dport 22 accept"]
        assert report["missing"] == []
        assert meshems("firewall", "apply", *conf).returncode == 0
        assert meshems("firewall", "check", *conf).returncode == 0

        # a ruleset the kernel refuses half-way changes nothing: one transaction
        before = nft.list_table(ns)
        broken = firewall.render(cfg, "n1").text.replace("\t\tcounter", "\t\tjump nowhere\n\t\tcounter")
        with pytest.raises(nft.NftSyntaxError):
            nft.apply(broken, netns=ns)
        assert nft.list_table(ns) == before

        # a node the config does not know: exit 2 naming the nodes
        out = meshems("firewall", "apply", "--config", str(path), "--node", "n9", "--netns", ns)
        assert out.returncode == 2 and "no node 'n9'" in out.stderr and "n1, n2, n3" in out.stderr
    finally:
        sh("ip", "netns", "del", ns, check=False)
    assert ns not in netlab.list_namespaces()


def _propose(lab: Lab, node: str, device: str, kw: float) -> dict[str, Any]:
    data = commands.encode("set_setpoint", uuid.uuid4().hex, device_id=device, kw=kw, source="test")
    _, body = lab.client.request(lab.cfg.node(node), "POST", "/v1/propose", data, timeout_s=6.0)
    return body


def _committed_everywhere(lab: Lab, index: int, timeout_s: float = 10.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        rows = lab.status(timeout_s=1.0)
        if len(rows) == 3 and all(r.get("reachable") and r["applied_index"] >= index for r in rows):
            return True
        time.sleep(0.05)
    return False


def _scan(ns: str, targets: list[tuple[str, str, int]], timeout_s: float) -> dict[str, list[list[Any]]]:
    arg = json.dumps({"targets": targets, "timeout_s": timeout_s})
    cmd = ["ip", "netns", "exec", ns, sys.executable, str(SCANNER)]
    out = subprocess.run(cmd, input=arg, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(out.stdout)


def _listening(ns: str, proto: str) -> set[int]:
    out = sh("ip", "netns", "exec", ns, "ss", "-Hn", "-l", "-t" if proto == "tcp" else "-u").stdout
    return {int(m.group(1)) for m in re.finditer(r"\S+:(\d+)\s+\S+:\*", out)}


def _drops(ns: str, node: str) -> int:
    listing = nft.list_table(ns) or ""
    m = re.search(rf'counter packets (\d+) bytes \d+ comment "meshems {node}: dropped by policy"', listing)
    assert m, listing
    return int(m.group(1))


def test_firewalled_lab_keeps_working_and_a_non_peer_finds_nothing_open(tmp_path: Path) -> None:
    lab = Lab.create(tmp_path / "lab", nodes=3, sims=True, progress=lambda *a: None)
    plan = lab.plan
    scan_ns, scan_veth = f"mlab-{plan.tag}-scan", f"mlv{plan.tag}s"
    try:
        leader = lab.wait_leader(30)
        # the scanner: on the gateways' underlay bridge, routes to their overlay addresses,
        # no WireGuard key: a stranger on the site network
        sh("ip", "netns", "add", scan_ns)
        sh("ip", "link", "add", scan_veth, "type", "veth", "peer", "name", "eth0", "netns", scan_ns)
        sh("ip", "link", "set", scan_veth, "master", plan.bridge)
        sh("ip", "link", "set", scan_veth, "up")
        sh("ip", "netns", "exec", scan_ns, "ip", "link", "set", "lo", "up")
        sh(
            "ip",
            "netns",
            "exec",
            scan_ns,
            "ip",
            "address",
            "add",
            f"10.98.{plan.octet}.200/24",
            "dev",
            "eth0",
        )
        sh("ip", "netns", "exec", scan_ns, "ip", "link", "set", "eth0", "up")
        for n in plan.nodes:
            sh(
                "ip",
                "netns",
                "exec",
                scan_ns,
                "ip",
                "route",
                "add",
                f"{plan.overlay(n)}/32",
                "via",
                plan.underlay(n),
            )

        # before: the scanner reaches Raft and the API (so the scan below can fail)
        known = [("tcp", plan.overlay(n), p) for n in plan.nodes for p in (RAFT_PORT, API_PORT)]
        closed = [("tcp", plan.underlay(n), 1) for n in plan.nodes]
        before = _scan(scan_ns, known + closed, timeout_s=1.0)
        assert sorted(map(tuple, before["open"])) == sorted(known), before
        assert sorted(map(tuple, before["refused"])) == sorted(closed), before

        # the operators' network of this lab: the root namespace's address on the bridge
        doc = yaml.safe_load(Path(lab.cfg.source).read_text())
        doc.setdefault("api", {})["operator_networks"] = [f"{plan.bridge_address}/32"]
        fw_config = lab.folder / "firewall.yaml"
        fw_config.write_text(yaml.safe_dump(doc, sort_keys=False))
        for n in plan.nodes:
            args = ["firewall", "apply", "--config", str(fw_config), "--node", n]
            # n1 applies from inside its namespace, the others through --netns
            out = lab.exec_meshems(n, *args) if n == "n1" else meshems(*args, "--netns", plan.namespaces[n])
            assert out.returncode == 0, out.stdout + out.stderr
            assert "input policy drop" in out.stdout
        for n in plan.nodes:
            out = meshems(
                "firewall", "check", "--config", str(fw_config), "--node", n, "--netns", plan.namespaces[n]
            )
            assert out.returncode == 0, out.stdout

        # the cluster keeps working behind its firewalls: a leader, a committed write everywhere
        leader = lab.wait_leader(15)
        body = _propose(lab, leader, "n2-bat", 6.5)
        assert body["ok"], body
        assert _committed_everywhere(lab, body["index"])

        # a scan of every port the nodes listen on and 1-1024, TCP and UDP, both addresses
        targets: list[tuple[str, str, int]] = []
        for n in plan.nodes:
            ns = plan.namespaces[n]
            for proto in ("tcp", "udp"):
                extra = {RAFT_PORT, API_PORT, MODBUS_PORT} if proto == "tcp" else {netlab.WG_PORT}
                ports = sorted(set(range(1, 1025)) | _listening(ns, proto) | extra)
                targets += [(proto, host, p) for host in (plan.underlay(n), plan.overlay(n)) for p in ports]
        drops_before = {n: _drops(plan.namespaces[n], n) for n in plan.nodes}
        after = _scan(scan_ns, targets, timeout_s=0.5)
        assert after["open"] == [] and after["refused"] == [], {k: v[:20] for k, v in after.items()}
        assert len(after["silent"]) == len(targets) > 6 * 2000
        assert all(_drops(plan.namespaces[n], n) > drops_before[n] for n in plan.nodes)
        print(f"scan: {len(targets)} probes, 0 open, 0 refused, {len(after['silent'])} dropped")

        # a Raft connection from the non-peer is dropped while the cluster commits
        result: dict[str, Any] = {}
        target = [("tcp", plan.overlay(leader), RAFT_PORT)]
        prober = threading.Thread(target=lambda: result.update(_scan(scan_ns, target, timeout_s=3.0)))
        prober.start()
        try:
            body = _propose(lab, leader, "n3-bat", -2.5)
        finally:
            prober.join(timeout=30)
        assert body["ok"], body
        assert _committed_everywhere(lab, body["index"])
        assert result["silent"] == [list(target[0])] and not result["open"] and not result["refused"], result
        assert lab.wait_leader(10) in plan.nodes
        # WireGuard still carries the mesh: fresh handshakes with both peers
        peers = next(r for r in lab.status() if r["id"] == leader).get("overlay")
        assert isinstance(peers, list) and len(peers) == 2 and not any(p["stale"] for p in peers), peers
    finally:
        sh("ip", "netns", "del", scan_ns, check=False)
        sh("ip", "link", "del", scan_veth, check=False)
        lab.down()
    assert not [ns for ns in netlab.list_namespaces() if ns.startswith(f"mlab-{plan.tag}-")]
