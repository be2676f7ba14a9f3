"""A synthetic node for the /metrics collector: a real poller (never started) with N devices
on a few buses, and stand-ins for Raft, the machine and the cloud worker. Shared by
tests/node/test_metrics.py and scripts/bench/metrics_bench.py."""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

from meshems.adapters.consensus import RaftStatus
from meshems.adapters.profiles import load_profile
from meshems.core.cluster import ZoneState
from meshems.core.config import ClusterConfig, NodeConfig
from meshems.node.field import FieldService
from meshems.node.histogram import COMMIT_BUCKETS_S, Histogram
from meshems.node.metrics import NodeMetrics, NodeStats
from meshems.node.views import Views


@dataclass
class FakeClock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class FakeRaft:
    """What the collector reads of `node.consensus.RaftService`."""

    status: RaftStatus
    state: ZoneState = field(default_factory=ZoneState)
    leader_changes: int = 0
    committed: int = 0
    failed: dict[str, int] = field(default_factory=dict)
    pending: int = 0
    commit_latency: Histogram = field(default_factory=lambda: Histogram(COMMIT_BUCKETS_S))

    @property
    def raft(self) -> Any:
        return SimpleNamespace(status=lambda: self.status)


def node_config(devices: int, buses: int = 10, batteries_every: int = 4) -> NodeConfig:
    """A node with `devices` devices spread over `buses` TCP buses; every n-th is a battery."""
    bus_rows = [{"id": f"b{i}", "type": "tcp", "host": "127.0.0.1", "port": 1502 + i} for i in range(buses)]
    dev_rows = [
        {
            "id": f"d{i}",
            "kind": "battery" if i % batteries_every == 0 else "meter",
            "bus": f"b{i % buses}",
            "unit_id": 1 + i % 247,
            "profile": "battery" if i % batteries_every == 0 else "meter",
            "poll_interval_s": 1.0,
        }
        for i in range(devices)
    ]
    return NodeConfig.model_validate(
        {
            "id": "n1",
            "address": "127.0.0.1",
            "raft_port": 1,
            "api_port": 2,
            "buses": bus_rows,
            "devices": dev_rows,
        }
    )


@dataclass
class SyntheticNode:
    views: Views
    stats: NodeStats
    field: FieldService
    raft: FakeRaft
    machine: SimpleNamespace
    clock: FakeClock
    cloud: dict[str, Any] | None
    metrics: NodeMetrics


def synthetic_node(devices: int, buses: int = 10, cloud: dict[str, Any] | None = None) -> SyntheticNode:
    clock = FakeClock()
    node = node_config(devices, buses)
    profiles = {"battery": load_profile("battery"), "meter": load_profile("meter")}
    fs = FieldService(
        node, {d.id: profiles[d.profile or "meter"] for d in node.devices}, lambda r: None, clock
    )
    for i, rt in enumerate(fs.poller.devices.values()):  # all fresh; batteries at 2 kW, 50 + i % 50 %
        rt.last_ok = clock.now
        for role, value in (("power_kw", 2.0), ("soc_pct", 50.0 + i % 50)):
            point = rt.profile.roles.get(role)
            if point is not None:
                rt.values[point] = value
    status = RaftStatus("leader", 3, 42, 41, 42, "n1", True, 10, {"n2": True}, {"n2": 42})
    raft = FakeRaft(status)
    machine = SimpleNamespace(mode="normal")
    cfg = cast(ClusterConfig, SimpleNamespace(zone="z1", cluster="c1"))
    box: dict[str, Any] = {"cloud": cloud}
    views = Views(cfg, "n1", cast(Any, raft), cast(Any, machine), fs, lambda: box["cloud"], lambda: None)
    stats = NodeStats(clock=clock)
    return SyntheticNode(views, stats, fs, raft, machine, clock, cloud, NodeMetrics(views, stats, clock))
