"""The lab's link faults on real namespaces and nft: a one-way cut drops one direction of the
WireGuard port only, and lossy links drop about the share asked for (numgen random)."""

from __future__ import annotations

import secrets
import subprocess
import sys
from collections.abc import Iterator

import pytest

from meshems.lab import netlab
from meshems.lab.netlab import WG_PORT, NetPlan

pytestmark = pytest.mark.lab

RECEIVE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
s.settimeout(float(sys.argv[3]))
n = 0
try:
    while True:
        s.recv(64)
        n += 1
except TimeoutError:
    pass
print(n)
"""
SEND = """
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
for i in range(int(sys.argv[5])):
    s.sendto(b"x" * 32, (sys.argv[3], int(sys.argv[4])))
    if i % 50 == 49:
        time.sleep(0.005)
"""


@pytest.fixture
def plan() -> Iterator[NetPlan]:
    p = NetPlan.make(secrets.token_hex(2), netlab.free_octet(), ["n1", "n2"])
    try:
        netlab.build(p)
        yield p
    finally:
        netlab.teardown(p)
    assert not [ns for ns in netlab.list_namespaces() if ns.startswith(f"mlab-{p.tag}-")]


def datagrams(plan: NetPlan, src: str, dst: str, count: int) -> int:
    """Send `count` datagrams from src's WireGuard port to dst's; how many dst received."""
    recv = subprocess.Popen(
        ["ip", "netns", "exec", plan.namespaces[dst], sys.executable, "-c", RECEIVE, plan.underlay(dst),
         str(WG_PORT), "0.5"], stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        subprocess.run(["sleep", "0.3"], check=True)  # the receiver binds first
        subprocess.run(
            ["ip", "netns", "exec", plan.namespaces[src], sys.executable, "-c", SEND, plan.underlay(src),
             str(WG_PORT), plan.underlay(dst), str(WG_PORT), str(count)], check=True, timeout=20,
        )  # fmt: skip
        out, _ = recv.communicate(timeout=20)
    finally:
        recv.kill()
        recv.wait()
    return int(out.strip())


def test_a_oneway_cut_drops_one_direction_and_heal_restores_it(plan: NetPlan) -> None:
    assert datagrams(plan, "n1", "n2", 50) == 50 and datagrams(plan, "n2", "n1", 50) == 50
    netlab.cut_oneway(plan, "n1", "n2")
    assert datagrams(plan, "n1", "n2", 50) == 0
    assert datagrams(plan, "n2", "n1", 50) == 50
    netlab.heal_all(plan)
    assert datagrams(plan, "n1", "n2", 50) == 50


def test_lossy_links_drop_about_the_share_asked_for(plan: NetPlan) -> None:
    netlab.lossy(plan, 30)
    got = datagrams(plan, "n1", "n2", 1000)
    assert 600 <= got <= 800, f"{got} of 1000 arrived with 30 % loss"
    netlab.heal_all(plan)
    assert datagrams(plan, "n1", "n2", 200) == 200
    with pytest.raises(ValueError, match="between 1 and 99"):
        netlab.lossy(plan, 0)
