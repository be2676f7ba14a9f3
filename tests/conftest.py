"""Shared test helpers: free ports and throw-away cluster configs on 127.0.0.1."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml


def free_ports(n: int) -> list[int]:
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def write_config(folder: Path, nodes: int = 3, joiners: int = 0, **raft: object) -> Path:
    """A cluster config with `nodes` initial members and `joiners` that join at run time."""
    ports = free_ports(2 * (nodes + joiners))
    doc = {
        "cluster": "test",
        "zone": "zone-t",
        "raft": {"secret_file": "secret/raft.secret", "data_dir": "data", **raft},
        "nodes": [
            {
                "id": f"n{i + 1}",
                "address": "127.0.0.1",
                "raft_port": ports[2 * i],
                "api_port": ports[2 * i + 1],
                "initial": i < nodes,
                "devices": [{"id": f"n{i + 1}-bat", "kind": "battery", "min_kw": -50, "max_kw": 50}],
            }
            for i in range(nodes + joiners)
        ],
    }
    path = folder / "cluster.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def pytest_runtest_setup(item: pytest.Item) -> None:
    """Lab tests need root (network namespaces): skip with a reason, or fail when CI requires
    them (MESHEMS_REQUIRE_LAB=1)."""
    import os

    if item.get_closest_marker("lab") is None or os.geteuid() == 0:
        return
    reason = "lab tests need root for network namespaces and wireguard-go"
    if os.environ.get("MESHEMS_REQUIRE_LAB") == "1":
        pytest.fail(f"{reason}, and MESHEMS_REQUIRE_LAB=1 requires them", pytrace=False)
    pytest.skip(reason)
