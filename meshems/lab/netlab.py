"""Network plumbing of the fault lab: one namespace per gateway, veth pairs on a bridge,
nft rules that cut and heal WireGuard links, and a teardown that works after a crash.

Owns namespaces, links, routes and nft tables whose names carry the lab's tag (`mlab-TAG-*`,
`mlbTAG`, `mlvTAG*`), and a state file listing them. Runs `ip` and `nft` (root only). Must
not start meshems processes (gateways.py does) and must not touch anything without the tag.

Addressing: underlay 10.98.X.0/24 on the bridge (the bridge itself is .254 in the root
namespace), overlay 10.77.X.0/24 inside the tunnels; the root namespace routes each
gateway's overlay address via its underlay address so operators (and the fault test's
client) reach every node's API without crossing the tunnels that faults cut.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from meshems.core.errors import MeshemsError

WG_PORT = 51820
NFT_TABLE = "meshems_lab"


class LabError(MeshemsError):
    code = "E_LAB"


def run(*cmd: str, check: bool = True, timeout_s: float = 20.0) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(list(cmd), capture_output=True, text=True, timeout=timeout_s)
    if check and out.returncode != 0:
        raise LabError(f"{' '.join(cmd)} failed: {(out.stderr or out.stdout).strip()}")
    return out


def in_ns(ns: str, *cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run("ip", "netns", "exec", ns, *cmd, check=check)


@dataclass
class NetPlan:
    """Names and addresses of one lab (saved to STATE so `lab down` can undo it all)."""

    tag: str
    octet: int
    nodes: list[str]
    namespaces: dict[str, str] = field(default_factory=dict)
    veths: dict[str, str] = field(default_factory=dict)
    bridge: str = ""

    @classmethod
    def make(cls, tag: str, octet: int, nodes: list[str]) -> NetPlan:
        plan = cls(tag=tag, octet=octet, nodes=list(nodes), bridge=f"mlb{tag}")
        for i, n in enumerate(nodes):
            plan.namespaces[n] = f"mlab-{tag}-{n}"
            plan.veths[n] = f"mlv{tag}{i}"
        return plan

    def underlay(self, node: str) -> str:
        return f"10.98.{self.octet}.{self.nodes.index(node) + 1}"

    def overlay(self, node: str) -> str:
        return f"10.77.{self.octet}.{self.nodes.index(node) + 1}"

    @property
    def bridge_address(self) -> str:
        return f"10.98.{self.octet}.254"


def free_octet() -> int:
    """An X for 10.98.X.0/24 and 10.77.X.0/24 that no route in the root namespace uses."""
    routes = run("ip", "-4", "route", "show").stdout
    for x in range(100, 200):
        if f"10.98.{x}." not in routes and f"10.77.{x}." not in routes:
            return x
    raise LabError("no free 10.98.X.0/24 for a lab (100..199 all in use): run `meshems lab down --all`")


def build(plan: NetPlan) -> None:
    """Create the bridge, the namespaces, their veths, addresses, routes and nft tables."""
    run("ip", "link", "add", plan.bridge, "type", "bridge")
    run("ip", "address", "add", f"{plan.bridge_address}/24", "dev", plan.bridge)
    run("ip", "link", "set", plan.bridge, "up")
    for node in plan.nodes:
        ns, veth = plan.namespaces[node], plan.veths[node]
        run("ip", "netns", "add", ns)
        run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        run("ip", "link", "set", veth, "master", plan.bridge)
        run("ip", "link", "set", veth, "up")
        in_ns(ns, "ip", "link", "set", "lo", "up")
        in_ns(ns, "ip", "address", "add", f"{plan.underlay(node)}/24", "dev", "eth0")
        in_ns(ns, "ip", "link", "set", "eth0", "up")
        in_ns(
            ns,
            "nft",
            f"add table inet {NFT_TABLE}; "
            f"add chain inet {NFT_TABLE} input {{ type filter hook input priority 0; }}; "
            f"add chain inet {NFT_TABLE} output {{ type filter hook output priority 0; }}",
        )
        run("ip", "route", "replace", f"{plan.overlay(node)}/32", "via", plan.underlay(node))


def cut(plan: NetPlan, a: str, b: str) -> None:
    """Drop WireGuard traffic between gateways a and b (both directions, in a's namespace)."""
    ns, peer = plan.namespaces[a], plan.underlay(b)
    in_ns(
        ns,
        "nft",
        f"add rule inet {NFT_TABLE} input ip saddr {peer} udp sport {WG_PORT} drop; "
        f"add rule inet {NFT_TABLE} output ip daddr {peer} udp dport {WG_PORT} drop",
    )


def cut_oneway(plan: NetPlan, src: str, dst: str) -> None:
    """Drop WireGuard traffic from gateway `src` to `dst` only (in dst's namespace, inbound):
    `dst` still reaches `src`, as with a one-way radio link or an asymmetric firewall."""
    in_ns(
        plan.namespaces[dst],
        "nft",
        f"add rule inet {NFT_TABLE} input ip saddr {plan.underlay(src)} udp sport {WG_PORT} drop",
    )


def lossy(plan: NetPlan, percent: int) -> None:
    """Every gateway drops `percent` % of the WireGuard packets it receives, at random
    (nft `numgen random`): each link loses about that share in each direction."""
    if not 0 < percent < 100:
        raise ValueError(f"lossy links: percent must be between 1 and 99, got {percent}")
    for node in plan.nodes:
        in_ns(
            plan.namespaces[node],
            "nft",
            f"add rule inet {NFT_TABLE} input udp sport {WG_PORT} numgen random mod 100 < {percent} drop",
        )


def heal_all(plan: NetPlan) -> None:
    for node in plan.nodes:
        ns = plan.namespaces[node]
        in_ns(ns, "nft", f"flush chain inet {NFT_TABLE} input; flush chain inet {NFT_TABLE} output")


def partition(plan: NetPlan, groups: list[list[str]]) -> None:
    """Cut every link between different groups (nodes in no group are left as they are)."""
    for gi, ga in enumerate(groups):
        for gb in groups[gi + 1 :]:
            for a in ga:
                for b in gb:
                    cut(plan, a, b)


def isolate(plan: NetPlan, node: str) -> None:
    partition(plan, [[node], [n for n in plan.nodes if n != node]])


def _kill_namespace_pids(ns: str) -> None:
    out = run("ip", "netns", "pids", ns, check=False)
    pids = [int(p) for p in out.stdout.split() if p.strip().isdigit()]
    for sig in (signal.SIGCONT, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
    end = time.monotonic() + 5
    while pids and time.monotonic() < end:
        pids = [p for p in pids if Path(f"/proc/{p}").exists() and _not_zombie(p)]
        time.sleep(0.05)


def _not_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def teardown(plan: NetPlan) -> list[str]:
    """Remove everything the plan created; never raises for what is already gone."""
    removed = []
    for node in plan.nodes:
        ns = plan.namespaces[node]
        if ns in list_namespaces():
            _kill_namespace_pids(ns)
            run("ip", "netns", "del", ns, check=False)
            removed.append(ns)
        run("ip", "route", "del", f"{plan.overlay(node)}/32", check=False)
        if run("ip", "link", "show", plan.veths[node], check=False).returncode == 0:
            run("ip", "link", "del", plan.veths[node], check=False)
    if run("ip", "link", "show", plan.bridge, check=False).returncode == 0:
        run("ip", "link", "del", plan.bridge, check=False)
        removed.append(plan.bridge)
    for sock in Path("/var/run/wireguard").glob(f"mw{plan.tag}-*.sock"):
        sock.unlink(missing_ok=True)
    return removed


def list_namespaces() -> list[str]:
    out = run("ip", "netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def teardown_all() -> list[str]:
    """Remove every lab's namespaces, bridges and veths (by name prefix), e.g. after a crash."""
    removed = []
    for ns in list_namespaces():
        if ns.startswith("mlab-"):
            _kill_namespace_pids(ns)
            run("ip", "netns", "del", ns, check=False)
            removed.append(ns)
    links = run("ip", "-o", "link", "show", check=False).stdout
    for line in links.splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        if name.startswith(("mlb", "mlv")):
            run("ip", "link", "del", name, check=False)
            removed.append(name)
    for route in run("ip", "-4", "route", "show", check=False).stdout.splitlines():
        dest = route.split()[0] if route.strip() else ""
        if dest.startswith("10.77.") and "via 10.98." in route:
            run("ip", "route", "del", dest, check=False)
    return removed
