"""What GET /metrics says about a node: Raft, the zone, each device, the cloud uplink, read
from the node's parts at scrape time (tests/node/metrics_fixtures.py builds the node)."""

from __future__ import annotations

import asyncio
import dataclasses
from types import SimpleNamespace
from typing import Any
from unittest.mock import patch

from prometheus_client.parser import text_string_to_metric_families

from meshems.adapters.consensus import RaftStatus
from meshems.core import commands
from meshems.core.policy import Policy
from meshems.core.zone_records import DispatchRecord
from meshems.node.bridge import Bridge
from meshems.node.consensus import RaftService
from meshems.node.histogram import Histogram
from tests.node.metrics_fixtures import SyntheticNode, synthetic_node


def scrape(node: SyntheticNode) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a render, by (name, sorted labels)."""
    out = {}
    for fam in text_string_to_metric_families(node.metrics.render().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_raft_gauges_follow_the_members_status() -> None:
    node = synthetic_node(2, 1)
    node.raft.leader_changes, node.raft.committed, node.raft.pending = 3, 17, 2
    node.raft.failed = {"E_TIMEOUT": 4}
    node.raft.commit_latency.observe(0.003)
    m = scrape(node)
    assert value(m, "meshems_raft_has_leader") == 1 and value(m, "meshems_raft_is_leader") == 1
    assert value(m, "meshems_raft_leader_changes_seen_total") == 3
    assert (value(m, "meshems_raft_term"), value(m, "meshems_raft_commit_index")) == (3, 42)
    assert value(m, "meshems_raft_applied_index") == 41
    assert value(m, "meshems_raft_proposals_committed_total") == 17
    assert value(m, "meshems_raft_proposals_failed_total", code="E_TIMEOUT") == 4
    assert value(m, "meshems_raft_proposals_pending") == 2
    assert value(m, "meshems_raft_propose_commit_duration_seconds_bucket", le="0.002") == 0
    assert value(m, "meshems_raft_propose_commit_duration_seconds_bucket", le="0.004") == 1
    assert value(m, "meshems_raft_propose_commit_duration_seconds_count") == 1
    assert value(m, "meshems_node_info", node="n1", zone="z1") == 1
    node.raft.status = RaftStatus("candidate", 4, 42, 42, 42, None, False, 11, {}, {})
    m = scrape(node)
    assert value(m, "meshems_raft_has_leader") == 0 and value(m, "meshems_raft_is_leader") == 0
    assert value(m, "meshems_raft_has_quorum") == 0 and value(m, "meshems_raft_term") == 4


def test_devices_up_state_errors_and_batteries() -> None:
    node = synthetic_node(4, 2)  # d0 a battery (every 4th), d1..d3 meters
    poller = node.field.poller
    poller.devices["d1"].counters["timeouts"] += 3
    poller.devices["d1"].counters["crc_errors"] += 1
    poller.devices["d2"].last_ok = node.clock.now - 60  # stale
    poller.paused = {"d3"}  # shared and owned elsewhere: its owner reports it
    m = scrape(node)
    assert value(m, "meshems_device_up", device="d0") == 1
    assert value(m, "meshems_device_up", device="d2") == 0
    assert value(m, "meshems_device_state", device="d2", state="stale") == 1
    assert value(m, "meshems_device_state", device="d1", state="ok") == 1
    assert not [k for k in m if ("device", "d3") in k[1]]
    assert value(m, "meshems_device_poll_errors_total", device="d1", code="E_TIMEOUT") == 3
    assert value(m, "meshems_device_poll_errors_total", device="d1", code="E_CRC") == 1
    assert not [k for k in m if k[0] == "meshems_device_poll_errors_total" and ("device", "d0") in k[1]]
    assert value(m, "meshems_battery_power_kw", device="d0") == 2.0
    assert value(m, "meshems_battery_soc_pct", device="d0") == 50.0
    assert not [k for k in m if k[0].startswith("meshems_battery") and ("device", "d1") in k[1]]


def test_poll_duration_is_observed_per_bus_when_a_poll_finishes() -> None:
    node = synthetic_node(4, 2)
    rt = node.field.poller.devices["d1"]  # on bus b1
    rt.poll_starts.append(node.clock.now - 0.03)
    node.field._polled(rt)
    m = scrape(node)
    assert value(m, "meshems_poll_duration_seconds_count", bus="b1") == 1
    assert value(m, "meshems_poll_duration_seconds_count", bus="b0") == 0
    assert value(m, "meshems_poll_duration_seconds_bucket", bus="b1", le="0.025") == 0
    assert value(m, "meshems_poll_duration_seconds_bucket", bus="b1", le="0.05") == 1
    assert abs(value(m, "meshems_poll_duration_seconds_sum", bus="b1") - 0.03) < 1e-9


def test_zone_dispatch_mode_and_trips() -> None:
    node = synthetic_node(1, 1)
    m = scrape(node)
    assert "meshems_zone_import_kw" not in {k[0] for k in m}  # no dispatch yet: nothing to say
    assert "meshems_dispatch_last_commit_age_seconds" not in {k[0] for k in m}
    inputs = (("zone_import_kw", 63.5), ("import_limit_kw", 60.0), ("export_limit_kw", 30.0))
    rec = DispatchRecord(7, 3, 40, inputs, ())
    node.raft.state = dataclasses.replace(
        node.raft.state, last_dispatch=rec, policy=Policy(import_limit_kw=60.0)
    )
    node.stats.applied(node.raft.state)
    node.clock.now += 4.0
    node.stats.applied(node.raft.state)  # the same record again: its age keeps growing
    node.stats.dispatch_committed(0.02)
    node.stats.logged("I_PROTECTION_TRIP", {"kind": "shed"})
    node.stats.logged("I_PROTECTION_TRIP", {"kind": "shed"})
    node.stats.logged("I_ROLE", {"kind": "x"})
    node.machine.mode = "survival"
    m = scrape(node)
    assert value(m, "meshems_zone_import_kw") == 63.5 and value(m, "meshems_zone_export_kw") == 0
    assert value(m, "meshems_zone_import_limit_kw") == 60.0
    assert value(m, "meshems_zone_export_limit_kw") == 1e9  # the policy's, not the record's
    assert value(m, "meshems_dispatch_last_commit_age_seconds") == 4.0
    assert value(m, "meshems_dispatch_duration_seconds_count") == 1
    assert value(m, "meshems_protection_trips_total", kind="shed") == 2
    assert ("meshems_protection_trips_total", (("kind", "x"),)) not in m
    assert value(m, "meshems_node_mode", mode="survival") == 1
    assert value(m, "meshems_node_mode", mode="normal") == 0
    export = DispatchRecord(8, 3, 41, (("zone_import_kw", -12.0),), ())
    node.raft.state = dataclasses.replace(node.raft.state, last_dispatch=export)
    node.stats.applied(node.raft.state)
    m = scrape(node)
    assert value(m, "meshems_zone_export_kw") == 12.0 and value(m, "meshems_zone_import_kw") == 0
    assert value(m, "meshems_dispatch_last_commit_age_seconds") == 0


def test_cloud_backlog_only_where_a_cloud_worker_runs() -> None:
    assert not [k for k in scrape(synthetic_node(1, 1)) if k[0].startswith("meshems_cloud")]
    cloud = {"backlog": 5, "oldest_unsent_age_s": 950.0, "acked_through": 12, "stream_seq": 17,
             "outbox_records": 5, "publishing": True}  # fmt: skip
    m = scrape(synthetic_node(1, 1, cloud=cloud))
    assert value(m, "meshems_cloud_backlog_records") == 5
    assert value(m, "meshems_cloud_backlog_oldest_age_seconds") == 950.0
    assert value(m, "meshems_cloud_acked_seq") == 12 and value(m, "meshems_cloud_publishing") == 1
    m = scrape(synthetic_node(1, 1, cloud={**cloud, "backlog": 0, "oldest_unsent_age_s": None}))
    assert value(m, "meshems_cloud_backlog_oldest_age_seconds") == 0


def test_histogram_buckets_are_cumulative_and_a_bound_counts_in_its_own_bucket() -> None:
    h = Histogram((0.1, 1.0))
    for v in (0.05, 0.1, 0.5, 3.0):
        h.observe(v)
    assert h.cumulative() == [("0.1", 2.0), ("1.0", 3.0), ("+Inf", 4.0)]
    assert h.count == 4 and abs(h.sum - 3.65) < 1e-9


class _Member:
    """A stand-in for adapters.consensus.RaftNode: a settable status, proposals answered."""

    def __init__(self) -> None:
        self.leader: str | None = None
        self.answer: tuple[Any, Any, str] = ({"ok": True, "term": 1, "index": 1}, None, "")

    def status(self) -> RaftStatus:
        return RaftStatus("follower", 1, 0, 0, 0, self.leader, self.leader is not None, 1, {}, {})

    def ready(self) -> bool:
        return True

    def propose(self, data: bytes, done: Any) -> None:
        done(*self.answer)


def _service() -> tuple[RaftService, _Member]:
    """A RaftService around a stand-in member (RaftService's own __init__ starts pysyncobj)."""
    member = _Member()
    cfg: Any = SimpleNamespace(raft=SimpleNamespace(max_in_flight=4, commit_timeout_s=1.0))
    with patch("meshems.node.consensus.RaftNode", lambda *a, **k: member):
        svc = RaftService(cfg, "n1", "secret", Bridge(), *(lambda *a: None,) * 4)
    return svc, member


def test_the_service_counts_leaders_seen_and_proposals_by_outcome() -> None:
    svc, member = _service()
    svc.view()
    assert svc.leader_changes == 0  # no leader yet
    for leader in ("n1", "n1", None, "n1", "n2"):  # a lost leader that comes back is no change
        member.leader = leader
        svc.view()
    assert svc.leader_changes == 2

    async def proposals() -> None:
        svc.bridge.bind(asyncio.get_running_loop())
        data = commands.encode("barrier", "r1")
        await svc.commit(data)
        member.answer = (None, "E_NOT_LEADER", "not the leader")
        await svc.commit(data)

    asyncio.run(proposals())
    assert (svc.committed, dict(svc.failed), svc.pending) == (1, {"E_NOT_LEADER": 1}, 0)
    assert svc.commit_latency.count == 1
