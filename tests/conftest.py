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


def write_site(
    folder: Path,
    node_id: str,
    modbus_port: int,
    seed: int = 1,
    control_port: int = 0,
    params: dict[str, object] | None = None,
    profiles: dict[str, str] | None = None,
) -> Path:
    """A simulated site for one node: meter, battery, PV, relays on one Modbus TCP server;
    `profiles` replaces the profile of some models (e.g. {"pv": "sunspec"})."""
    chosen = {"meter": "meter", "battery": "battery", "pv": "pv", "relay": "relay", **(profiles or {})}
    doc = {
        "site": {"seed": seed, "start_h": 12, "soc_pct": 60, **(params or {})},
        "control": {"host": "127.0.0.1", "port": control_port},
        "servers": [{"id": "main", "type": "tcp", "host": "127.0.0.1", "port": modbus_port}],
        "devices": [
            {"server": "main", "unit_id": 1, "model": "meter", "profile": chosen["meter"]},
            {"server": "main", "unit_id": 2, "model": "battery", "profile": chosen["battery"]},
            {"server": "main", "unit_id": 3, "model": "pv", "profile": chosen["pv"]},
            {"server": "main", "unit_id": 4, "model": "relay", "profile": chosen["relay"]},
        ],
    }
    path = folder / f"site-{node_id}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def wired_devices(
    node_id: str, revert_timeout_s: float = 3.0, profiles: dict[str, str] | None = None
) -> list[dict[str, object]]:
    devices = [
        {"id": f"{node_id}-meter", "kind": "meter", "bus": "site", "unit_id": 1, "profile": "meter"},
        {"id": f"{node_id}-bat", "kind": "battery", "min_kw": -50, "max_kw": 50, "bus": "site", "unit_id": 2,
         "profile": "battery", "revert_timeout_s": revert_timeout_s},
        {"id": f"{node_id}-pv", "kind": "pv", "min_kw": 0, "max_kw": 40, "rated_kw": 40, "bus": "site",
         "unit_id": 3, "profile": "pv", "revert_timeout_s": revert_timeout_s},
        {"id": f"{node_id}-relays", "kind": "relay", "bus": "site", "unit_id": 4, "profile": "relay"},
    ]  # fmt: skip
    for d in devices:
        d["profile"] = (profiles or {}).get(str(d["kind"]), d["profile"])
    return devices


def write_config(
    folder: Path,
    nodes: int = 3,
    joiners: int = 0,
    wired: bool = False,
    policy: dict[str, object] | None = None,
    protection: dict[str, object] | None = None,
    site: dict[str, object] | None = None,
    profiles: dict[str, str] | None = None,
    **raft: object,
) -> Path:
    """A cluster config with `nodes` initial members and `joiners` that join at run time;
    `wired` gives each node a simulated site (sim_site) and its four Modbus devices, with
    `profiles` by model where they are not the built-in flat ones (e.g. {"pv": "sunspec"})."""
    # every port in one call: ports taken in two calls can collide (the first ones are closed)
    all_ports = free_ports(4 * (nodes + joiners) if wired else 2 * (nodes + joiners))
    ports, modbus = all_ports[: 2 * (nodes + joiners)], all_ports[2 * (nodes + joiners) :]
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
    if policy is not None:
        doc["policy"] = policy
    if wired:
        for i, n in enumerate(doc["nodes"]):
            sim = write_site(folder, n["id"], modbus[2 * i], i + 1, modbus[2 * i + 1], site, profiles)
            if protection is not None:
                n["protection"] = protection
            n["sim_site"] = sim.name
            n["buses"] = [
                {"id": "site", "type": "tcp", "host": "127.0.0.1", "port": modbus[2 * i], "timeout_s": 0.3}
            ]
            n["devices"] = wired_devices(n["id"], profiles=profiles)
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


def _hypothesis_profile() -> None:
    """In CI (CI=true) property tests run derandomized: the same examples every run, so a
    landing never depends on a lucky seed; developers' runs keep exploring new examples."""
    import os

    from hypothesis import settings

    settings.register_profile("ci", derandomize=True, database=None)
    if os.environ.get("CI"):
        settings.load_profile("ci")


_hypothesis_profile()
