"""`GET /metrics`: the node's state in the Prometheus text format, read at scrape time.

Owns the metric names (etcd style, `meshems_` prefix, labels no wider than a device id) and
`NodeStats`, the few figures no other part keeps (dispatch timing, trips, the last dispatch
seen). A custom collector on a private registry reads Raft, the zone state, the machine, the
poller and the cloud worker when Prometheus asks: no background thread, changes nothing.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Sample

from meshems.adapters.poller import ERROR_COUNTERS
from meshems.core.cluster import ZoneState
from meshems.core.health import device_state
from meshems.core.zone_records import DispatchRecord
from meshems.node.histogram import COMMIT_BUCKETS_S, Histogram
from meshems.node.views import Views

#: the poller's counter names back to the stable error codes they count
ERROR_CODE_OF = {counter: code for code, counter in ERROR_COUNTERS.items()} | {"other_errors": "E_OTHER"}
DEVICE_STATES = ("ok", "stale", "defective", "unknown")
MODES = ("normal", "survival")
#: the classic text format generate_latest writes, which every Prometheus 2.x parses
CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4


@dataclass
class NodeStats:
    """What the daemon counts for /metrics that the machine and the services do not keep."""

    clock: Callable[[], float] = time.monotonic
    dispatch_duration: Histogram = field(default_factory=lambda: Histogram(COMMIT_BUCKETS_S))
    trips: Counter[str] = field(default_factory=Counter)
    plan_solves: Counter[str] = field(default_factory=Counter)
    plan_solve_s: float | None = None
    last_dispatch: DispatchRecord | None = None
    last_dispatch_s: float | None = None

    def planned(self, seconds: float, status: str) -> None:
        """The planner answered this leader after `seconds` with `status`."""
        self.plan_solves[status] += 1
        self.plan_solve_s = seconds

    def dispatch_committed(self, seconds: float) -> None:
        """A dispatch this node proposed committed `seconds` after it was decided."""
        self.dispatch_duration.observe(seconds)

    def applied(self, state: ZoneState) -> None:
        """A state was applied: note when its dispatch record changed (one identity check)."""
        if state.last_dispatch is not self.last_dispatch:
            self.last_dispatch = state.last_dispatch
            self.last_dispatch_s = self.clock()

    def logged(self, code: str, fields: Mapping[str, Any]) -> None:
        if code == "I_PROTECTION_TRIP":
            self.trips[str(fields.get("kind", "unknown"))] += 1


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _histogram(
    name: str,
    doc: str,
    hist: Histogram,
    labels: list[str] | None = None,
    values: list[str] | None = None,
    family: HistogramMetricFamily | None = None,
) -> HistogramMetricFamily:
    fam = family or HistogramMetricFamily(name, doc, labels=labels)
    fam.add_metric(values or [], hist.cumulative(), hist.sum)
    return fam


class NodeCollector(Collector):
    """Reads the node's parts at every scrape (`collect`); keeps nothing between scrapes."""

    def __init__(self, views: Views, stats: NodeStats, clock: Callable[[], float] = time.monotonic) -> None:
        self.views, self.stats, self.clock = views, stats, clock

    def collect(self) -> Iterator[Metric]:
        yield from self._raft()
        yield from self._zone()
        yield from self._devices()
        yield from self._cloud()
        yield from self._clocks()

    def _clocks(self) -> Iterator[Metric]:
        offsets = GaugeMetricFamily(
            "meshems_peer_clock_offset_seconds",
            "A peer's clock minus this node's (NTP-style).",
            labels=["peer"],
        )
        for peer, offset in self.views.clock.current(self.clock()).items():
            offsets.add_metric([peer], offset)
        yield offsets

    def _raft(self) -> Iterator[Metric]:
        raft = self.views.raft
        st = raft.raft.status()
        info = GaugeMetricFamily("meshems_node_info", "This node's ids (always 1).", labels=["node", "zone"])
        info.add_metric([self.views.node_id, self.views.cfg.zone], 1)
        yield info
        yield _gauge("meshems_raft_has_leader", "1 if this member knows a leader.", st.leader is not None)
        yield _gauge("meshems_raft_is_leader", "1 if this member is the leader.", st.role == "leader")
        yield _gauge("meshems_raft_has_quorum", "1 if this member sees a quorum.", st.has_quorum)
        yield CounterMetricFamily(
            "meshems_raft_leader_changes_seen",
            "Leader changes this member has seen.",
            value=raft.leader_changes,
        )
        yield _gauge("meshems_raft_term", "The current Raft term.", st.term)
        yield _gauge("meshems_raft_commit_index", "The highest log index known committed.", st.commit_index)
        yield _gauge("meshems_raft_applied_index", "The highest log index applied.", st.applied_index)
        yield CounterMetricFamily(
            "meshems_raft_proposals_committed", "Proposals of this node that committed.", value=raft.committed
        )
        failed = CounterMetricFamily(
            "meshems_raft_proposals_failed",
            "Proposals of this node that did not commit, by error code.",
            labels=["code"],
        )
        for code, n in sorted(raft.failed.items()):
            failed.add_metric([code], n)
        yield failed
        yield _gauge("meshems_raft_proposals_pending", "Proposals of this node in flight now.", raft.pending)
        yield _histogram(
            "meshems_raft_propose_commit_duration_seconds",
            "Seconds from proposing to the commit of this node's proposals.",
            raft.commit_latency,
        )

    def _zone(self) -> Iterator[Metric]:
        state, machine, stats = self.views.raft.state, self.views.machine, self.stats
        mode = GaugeMetricFamily("meshems_node_mode", "1 for the mode this node is in.", labels=["mode"])
        for m in MODES:
            mode.add_metric([m], machine.mode == m)
        yield mode
        yield _histogram(
            "meshems_dispatch_duration_seconds",
            "Seconds from deciding a dispatch cycle (this node leading) to its commit.",
            stats.dispatch_duration,
        )
        if stats.last_dispatch_s is not None and stats.last_dispatch is not None:
            yield _gauge(
                "meshems_dispatch_last_commit_age_seconds",
                "Seconds since the zone's last dispatch record was applied here.",
                self.clock() - stats.last_dispatch_s,
            )
        rec = state.last_dispatch
        inputs = dict(rec.inputs) if rec is not None else {}
        if "zone_import_kw" in inputs:
            grid = inputs["zone_import_kw"]
            yield _gauge(
                "meshems_zone_import_kw", "Zone grid import (kW) the last dispatch saw.", max(grid, 0.0)
            )
            yield _gauge(
                "meshems_zone_export_kw", "Zone grid export (kW) the last dispatch saw.", max(-grid, 0.0)
            )
        if state.plan is not None:
            p = state.plan
            yield _gauge("meshems_plan_version", "The committed zone plan's version.", p.version)
            yield _gauge("meshems_plan_age_seconds", "Seconds since the leader made the committed plan.",
                         max(0.0, time.time() - p.made_s))  # fmt: skip
            yield _gauge("meshems_plan_peak_kw", "The committed plan's highest zone import (kW).", p.peak_kw)
        if stats.plan_solves:
            solves = CounterMetricFamily("meshems_plan_solves", "Planner runs on this node by status.",
                                         labels=["status"])  # fmt: skip
            for status, n in sorted(stats.plan_solves.items()):
                solves.add_metric([status], n)
            yield solves
            yield _gauge("meshems_plan_solve_seconds", "Seconds the last planner run took here.",
                         stats.plan_solve_s or 0.0)  # fmt: skip
        policy = state.policy
        imp = policy.import_limit_kw if policy else inputs.get("import_limit_kw")
        exp = policy.export_limit_kw if policy else inputs.get("export_limit_kw")
        if imp is not None:
            yield _gauge("meshems_zone_import_limit_kw", "The zone's grid import limit (kW).", imp)
        if exp is not None:
            yield _gauge("meshems_zone_export_limit_kw", "The zone's grid export limit (kW).", exp)
        trips = CounterMetricFamily(
            "meshems_protection_trips", "Protection trips carried out by this node, by kind.", labels=["kind"]
        )
        for kind, n in sorted(stats.trips.items()):
            trips.add_metric([kind], n)
        yield trips

    def _devices(self) -> Iterator[Metric]:
        fs = self.views.field
        if fs is None:
            return
        up = GaugeMetricFamily(
            "meshems_device_up", "1 if the device's last poll is fresh (state ok).", labels=["device"]
        )
        state = GaugeMetricFamily(
            "meshems_device_state",
            "1 for the device's state (ok, stale, defective, unknown).",
            labels=["device", "state"],
        )
        errors = CounterMetricFamily(
            "meshems_device_poll_errors",
            "Failed requests to the device by error code.",
            labels=["device", "code"],
        )
        power = GaugeMetricFamily(
            "meshems_battery_power_kw", "Battery power in kW (its power_kw role).", labels=["device"]
        )
        soc = GaugeMetricFamily("meshems_battery_soc_pct", "Battery state of charge (%).", labels=["device"])
        # Samples built directly, not by add_metric (its zip and dict per sample): 2,000 devices
        # are ~5,000 samples, and the render must stay within tens of milliseconds
        now, paused = fs.clock(), fs.poller.paused
        up_s, state_s, errors_s, power_s, soc_s = (
            up.samples,
            state.samples,
            errors.samples,
            power.samples,
            soc.samples,
        )
        for dev_id, rt in fs.poller.devices.items():
            if dev_id in paused:  # a shared device another node owns now: its owner reports it
                continue
            cfg, c = rt.cfg, rt.counters
            st = device_state(now, rt.last_ok, cfg.poll_interval_s, rt.failures)
            up_s.append(Sample("meshems_device_up", {"device": dev_id}, 1.0 if st == "ok" else 0.0))
            state_s.append(Sample("meshems_device_state", {"device": dev_id, "state": st}, 1.0))
            for counter, code in ERROR_CODE_OF.items():
                n = c.get(counter)
                if n:
                    errors_s.append(
                        Sample("meshems_device_poll_errors_total", {"device": dev_id, "code": code}, n)
                    )
            if cfg.kind == "battery":
                values = rt.role_values()
                if "power_kw" in values:
                    power_s.append(Sample("meshems_battery_power_kw", {"device": dev_id}, values["power_kw"]))
                if "soc_pct" in values:
                    soc_s.append(Sample("meshems_battery_soc_pct", {"device": dev_id}, values["soc_pct"]))
        yield from (up, state, errors, power, soc)
        poll = HistogramMetricFamily(
            "meshems_poll_duration_seconds",
            "Seconds a device poll took (all its requests), per bus.",
            labels=["bus"],
        )
        for bus, hist in sorted(fs.poll_latency.items()):
            _histogram("", "", hist, values=[bus], family=poll)
        yield poll

    def _cloud(self) -> Iterator[Metric]:
        cloud = self.views.cloud_status()
        if not cloud:
            return
        if "backlog" in cloud:
            yield _gauge(
                "meshems_cloud_backlog_records",
                "Telemetry records not yet acknowledged by the broker.",
                cloud["backlog"],
            )
            yield _gauge(
                "meshems_cloud_backlog_oldest_age_seconds",
                "Age of the oldest unacknowledged record (0 with no backlog).",
                cloud.get("oldest_unsent_age_s") or 0.0,
            )
        if "acked_through" in cloud:
            yield _gauge(
                "meshems_cloud_acked_seq",
                "The committed broker watermark (records acknowledged).",
                cloud["acked_through"],
            )
        if "stream_seq" in cloud:
            yield _gauge(
                "meshems_cloud_stream_seq", "The last telemetry record derived.", cloud["stream_seq"]
            )
        if "outbox_records" in cloud:
            yield _gauge(
                "meshems_cloud_outbox_records", "Records held in the outbox.", cloud["outbox_records"]
            )
        yield _gauge(
            "meshems_cloud_publishing",
            "1 if this node publishes for the zone.",
            bool(cloud.get("publishing")),
        )


class NodeMetrics:
    """The /metrics body: the collector on a registry of its own (no process-wide state)."""

    def __init__(self, views: Views, stats: NodeStats, clock: Callable[[], float] = time.monotonic) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(views, stats, clock))

    def render(self) -> bytes:
        return generate_latest(self.registry)
