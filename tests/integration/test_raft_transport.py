"""The hardened Raft transport with real pysyncobj members on loopback (in this process):
what an unauthenticated peer may send, for how long, how many of them, and what a node
says when its peers refuse its secret. Each guard reports the peer and what it refused."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from meshems.adapters.config_file import load_config
from meshems.adapters.consensus import RaftNode
from meshems.adapters.raft_transport import MAX_UNAUTH_PER_PEER, UNAUTH_BYTE_BUDGET, UNAUTH_DEADLINE_S
from tests.conftest import free_ports, write_config

pytestmark = pytest.mark.integration
SECRET_A = "4f3c9a0e1b7d2c6a8e5f0b3d9c1a7e2f6b8d0c4a9e3f1b5d7c2a0e8f4b6d1c3a"
SECRET_B = "9e1d7c3b5a0f8e2d6c4b1a9f7e3d5c0b2a8f6e4d1c9b7a3f5e0d2c8b6a4f1e7d"


class Node:
    def __init__(self, cfg_path: Path, node_id: str, secret: str) -> None:
        self.violations: list[tuple[str, str]] = []

        def note(peer: str, what: str) -> None:
            self.violations.append((peer, what))

        self.raft = RaftNode(load_config(cfg_path), node_id, secret, on_violation=note)
        self.raft.start()

    def saw(self, text: str, timeout_s: float = 8.0) -> tuple[str, str]:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            for v in list(self.violations):
                if text in v[1]:
                    return v
            time.sleep(0.05)
        raise AssertionError(f"no violation with {text!r}; got {self.violations}")


def two_nodes(tmp_path: Path) -> Path:
    """n1 and n2 on loopback, n2's address sorting above n1's (so n2 connects to n1)."""
    path = write_config(tmp_path, nodes=2)
    doc = yaml.safe_load(path.read_text())
    ports = sorted(free_ports(2), key=lambda p: f"127.0.0.1:{p}")
    doc["nodes"][0]["raft_port"], doc["nodes"][1]["raft_port"] = ports
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.fixture
def nodes() -> Iterator[list[Node]]:
    started: list[Node] = []
    yield started
    for n in started:
        n.raft.stop()


def test_the_connecting_side_learns_that_its_peer_refuses_its_secret(
    tmp_path: Path, nodes: list[Node]
) -> None:
    path = two_nodes(tmp_path)
    nodes += [Node(path, "n1", SECRET_A), Node(path, "n2", SECRET_B)]
    n1, n2 = nodes
    n1.saw("do not share the cluster secret")  # the side that receives
    peer, what = n2.saw("refuses this node's cluster secret")  # the side that connects
    assert peer == n1.raft.node.raft_endpoint and "3 times in a row" in what
    assert n1.raft.status().leader is None and n2.raft.status().leader is None


def raw(endpoint: str) -> socket.socket:
    host, port = endpoint.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=5)


def closed(s: socket.socket, within_s: float) -> bool:
    s.settimeout(within_s)
    try:
        return s.recv(1) == b""
    except TimeoutError:
        return False
    except OSError:
        return True


@pytest.mark.parametrize(
    ("length", "text"),
    [(0x7FFFFFFF, "announced a frame of 2147483647 bytes"), (-5, "announced a frame of -5 bytes"),
     (UNAUTH_BYTE_BUDGET + 1, f"at most {UNAUTH_BYTE_BUDGET} here")],
)  # fmt: skip
def test_a_frame_too_large_for_an_unauthenticated_peer_closes_it_at_once(
    tmp_path: Path, nodes: list[Node], length: int, text: str
) -> None:
    nodes.append(Node(two_nodes(tmp_path), "n1", SECRET_A))
    s = raw(nodes[0].raft.node.raft_endpoint)
    s.sendall(struct.pack("i", length) + b"\0" * 64)
    assert closed(s, 2.0)
    peer, _ = nodes[0].saw(text)
    assert peer == "127.0.0.1"


def test_idle_unauthenticated_connections_are_capped_and_cut(tmp_path: Path, nodes: list[Node]) -> None:
    nodes.append(Node(two_nodes(tmp_path), "n1", SECRET_A))
    endpoint = nodes[0].raft.node.raft_endpoint
    t0 = time.monotonic()
    socks = [raw(endpoint) for _ in range(40)]  # pysyncobj alone: a backlog of 5, and stuck
    assert time.monotonic() - t0 < 1.0
    time.sleep(0.5)
    assert sum(closed(s, 0.05) for s in socks[:-MAX_UNAUTH_PER_PEER]) == 40 - MAX_UNAUTH_PER_PEER
    nodes[0].saw("too many unauthenticated connections (127.0.0.1)")
    assert all(closed(s, UNAUTH_DEADLINE_S + 2) for s in socks[-MAX_UNAUTH_PER_PEER:])
    assert time.monotonic() - t0 < UNAUTH_DEADLINE_S + 3
    nodes[0].saw(f"did not authenticate within {UNAUTH_DEADLINE_S:g} s")
    for s in socks:
        s.close()
    # and a real member still gets in afterwards
    nodes.append(Node(tmp_path / "cluster.yaml", "n2", SECRET_A))
    end = time.monotonic() + 10
    while nodes[0].raft.status().leader is None and time.monotonic() < end:
        time.sleep(0.05)
    assert nodes[0].raft.status().leader is not None
