"""The node as one state machine (etcd-io/raft's RawNode pattern, applied to a gateway).

`Node.step(event) -> list[Action]`: events in (`core.node_events`: a tick with `now`, an
applied entry, a device reading, the Raft view, the outcome of a proposal or a write),
actions out (proposals, device writes, polling pauses, logs, history saves). The daemon
(`meshems.node`) and the simulation harness (`meshems.sim.harness`) both run this class,
so one implementation of the rules is what ships and what the scenarios test.

Rules of this module (each a method below, in this order):
- declare: once a leader exists, propose this node's declaration until it is applied; a
  leader also declares every configured initial node the zone does not know yet.
- report: about every `report_s`, propose the next measurement summary (seq = the
  committed one + 1) with this node's readings and its forecast battery reserve.
- ownership: poll a shared device only while the zone says this node owns it.
- lead: while leading with quorum, commit the configured policy if the zone has none (once
  its loads are declared), move shared devices of gone owners, and dispatch once per
  policy cycle (at once after becoming leader).
- survival and liveness: see `core.survival`; actuation: see `core.actuation` (only once
  caught up, so a replayed journal never drives a device).
- protect: every answered site-meter reading is checked against the node's hard limits at
  once; trips lock their targets out for `hold_s`.
Pure: no I/O, clock, threads or randomness; time only arrives in events.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from meshems.core.actuation import Actuation
from meshems.core.cluster import ZoneState
from meshems.core.day_peak import DayPeak
from meshems.core.dispatch import dispatch
from meshems.core.errors import RETRYABLE_CODES
from meshems.core.health import device_state
from meshems.core.load_history import LoadHistory
from meshems.core.node_duties import declare, publish_forecast, report
from meshems.core.node_events import (
    Action,
    Applied,
    DeviceReading,
    Event,
    Log,
    Propose,
    Proposed,
    RaftChanged,
    SetPaused,
    Solved,
    Tick,
    Write,
    Written,
)
from meshems.core.node_lead import lead
from meshems.core.node_plan import publish_node_forecast, solved
from meshems.core.node_spec import NodeSpec
from meshems.core.policy import Policy
from meshems.core.process_image import DeviceInfo, image_from_readings
from meshems.core.protection import LoadState, protect
from meshems.core.survival import Liveness, QuorumWatch, survival_policy

NEVER = -1e18


@dataclass
class _Reading:
    """The last poll of a device: values by role (the last good ones), its health inputs."""

    values: dict[str, float]
    last_ok_s: float | None
    failures: int


@dataclass
class _Duty:
    """A periodic duty with at most one proposal in flight."""

    last_s: float = NEVER
    in_flight: bool = False

    def due(self, now_s: float, every_s: float) -> bool:
        return not self.in_flight and now_s - self.last_s >= every_s

    def start(self, now_s: float) -> None:
        self.last_s, self.in_flight = now_s, True


@dataclass
class Node:
    spec: NodeSpec
    #: makes this process's request ids unique (the daemon passes a random one per start)
    rid_salt: str = "n"
    now_s: float = 0.0
    wall_s: float = 0.0
    raft: RaftChanged = field(default_factory=lambda: RaftChanged("follower", 0, None, False, False))
    zone: ZoneState = field(default_factory=ZoneState)
    readings: dict[str, _Reading] = field(default_factory=dict)
    history: LoadHistory = field(default_factory=LoadHistory)  # load: import + batteries + PV
    pv_history: LoadHistory = field(default_factory=LoadHistory)

    def __post_init__(self) -> None:
        t = self.spec.timing
        self.actuation = Actuation(self.spec.devices)
        self.quorum = QuorumWatch(t.survival_after_s)
        self.liveness = Liveness(t.stale_report_s)
        self.paused = frozenset(d.id for d in self.spec.devices.values() if d.shared)
        self.declared = False
        self.started = False  # a first Tick has given the machine its time
        self.reserve_kwh, self.forecast_basis = 0.0, "no history yet"
        self.trips: list[dict[str, Any]] = []
        self.dispatch_refusals = 0
        self.payload_advice: Any = None  # the active payload's core.payload_dispatch.Advice (leader)
        self.duties = {
            k: _Duty()
            for k in (
                "declare",
                "report",
                "dispatch",
                "policy",
                "orphans",
                "forecast",
                "survival",
                "history",
                "node_forecast",
                "plan",
            )
        }
        # the planner (core.node_plan): the quarter-hour last forecast, the solve in flight, and
        # the term and policy of this leader's last plan
        self.forecast_step = NEVER
        self.solving: str | None = None
        self.plan_term, self.plan_policy, self.plan_asked_s, self.plan_note = -1, None, NEVER, ""
        self.plan_inputs: tuple = ()
        self.import_peak = DayPeak()  # the zone import's quarter-hour means today (its view)
        self.rids = 0
        #: overrides this leader asked to clear (answered by a Proposed "expire")
        self.expiring: set[str] = set()
        self.forecast_tries = 0
        self.forecast_done = self.spec.forecast is None
        self.leading = False
        self._writes: dict[str, Write] = {}
        self._trips_pending: dict[str, dict[str, Any]] = {}

    @property
    def mode(self) -> str:
        return "survival" if self.quorum.survival else "normal"

    @property
    def has_quorum(self) -> bool:
        return self.raft.has_quorum and self.raft.leader is not None

    @property
    def leads(self) -> bool:
        return self.raft.role == "leader" and self.raft.has_quorum

    # --- the one entry point -------------------------------------------------------------------

    def step(self, event: Event) -> list[Action]:
        """Handle one event; return what the services must carry out, in order. Until the
        first Tick the machine only records what it hears (it has no time yet)."""
        out: list[Action] = []
        if isinstance(event, Tick):
            self.now_s, self.wall_s = event.now_s, event.wall_s
            if not self.started:
                self.started = True
                self.liveness.update(self.zone, self.now_s)
        elif isinstance(event, RaftChanged):
            self.raft = event
        elif isinstance(event, Applied):
            self.zone = event.state
            if self.started:
                self.liveness.update(event.state, self.now_s)
            out += self._ownership()
        elif isinstance(event, DeviceReading):
            self.now_s = max(self.now_s, event.now_s)
            last = self.readings.get(event.device_id)
            last_ok = event.now_s if event.answered else (last.last_ok_s if last else None)
            self.readings[event.device_id] = _Reading(dict(event.values), last_ok, event.failures)
            if event.answered and self.started:
                out += self._protect(event)
            return out
        elif isinstance(event, Proposed):
            out += self._proposed(event)
        elif isinstance(event, Written):
            out += self._written(event)
            return out
        elif isinstance(event, Solved):
            out += solved(self, event)
        if not self.started:
            return out
        out += self._survival()
        out += (
            declare(self) + report(self) + publish_forecast(self) + publish_node_forecast(self) + lead(self)
        )
        out += self._actuate()
        return self._remember(out)

    def _remember(self, actions: list[Action]) -> list[Action]:
        for a in actions:
            if isinstance(a, Write):
                self._writes[a.key] = a
        return actions

    # --- declare, report, forecast: core.node_duties; lead: core.node_lead -------------------

    def propose(self, duty: str, data: bytes, key: str = "", timeout_s: float | None = None) -> Propose:
        """A proposal for one of the node's duties (at most one of each in flight)."""
        self.duties[duty].start(self.now_s)
        return Propose(data, duty, key, timeout_s)

    def health(self, device_id: str) -> str:
        """unknown | ok | stale | defective, now (see core.health)."""
        r, dev = self.readings.get(device_id), self.spec.devices.get(device_id)
        if r is None or dev is None:
            return "unknown"
        return device_state(self.now_s, r.last_ok_s, dev.poll_interval_s, r.failures)

    def polled(self) -> dict[str, tuple[str, dict[str, float]]]:
        """(health, values by role) of every device this node polls now."""
        return {k: (self.health(k), r.values) for k, r in self.readings.items() if k not in self.paused}

    # --- ownership ------------------------------------------------------------------------------

    def _ownership(self) -> list[Action]:
        devs, me = self.zone.devices, self.spec.node_id
        paused = frozenset(
            d.id
            for d in self.spec.devices.values()
            if d.shared and (d.id not in devs or devs[d.id].owner != me)
        )
        if paused == self.paused:
            return []
        gained, self.paused = self.paused - paused, paused
        logs: list[Action] = [
            Log("info", "I_OWNERSHIP", f"now the owner of shared device {d}: polling it", {"device": d})
            for d in sorted(gained)
        ]
        return [SetPaused(paused), *logs]

    # --- survival and actuation -------------------------------------------------------------------

    def _survival(self) -> list[Action]:
        change = self.quorum.update(self.has_quorum, self.now_s)
        if change == "survival":
            return [Log("warning", "E_QUORUM", "no quorum: survival mode inside the last committed envelope")]
        if change == "normal":
            self.actuation.leave_survival()
            return [Log("info", "I_SURVIVAL_END", "quorum is back: following the leader's setpoints again")]
        return []

    def _actuate(self) -> list[Action]:
        if self.quorum.survival:
            return self._survive()
        if not self.raft.ready:
            return []  # replaying the journal: these are old setpoints, long replaced
        answered = {k for k, r in self.readings.items() if r.last_ok_s is not None}
        return self.actuation.committed(self.zone, self.now_s, self.paused, answered)

    def _survive(self) -> list[Action]:
        duty = self.duties["survival"]
        envelope = self.zone.envelopes.get(self.spec.node_id)
        if envelope is None or not duty.due(self.now_s, self.spec.timing.survival_step_s):
            return []  # never received an envelope: protection alone keeps the site safe
        duty.last_s = self.now_s
        base = self.zone.policy or Policy()
        devices = [
            DeviceInfo(d.id, d.kind, self.spec.node_id, d.min_kw, d.max_kw)
            for d in self.spec.devices.values()
            if d.wired and d.id not in self.paused
        ]
        image = image_from_readings(devices, self.polled())
        reserve = self.reserve_kwh if base.reserve_forecast else 0.0
        result = dispatch(
            image,
            survival_policy(base, envelope),
            reserve_kwh=reserve,
            shed_kw=dict(self.actuation.survival_shed_kw),
            overridden=frozenset(self.zone.overrides),
        )
        return self.actuation.survival(result, self.now_s)

    # --- protection ------------------------------------------------------------------------------

    def _protect(self, reading: DeviceReading) -> list[Action]:
        prot, dev = self.spec.protection, self.spec.devices.get(reading.device_id)
        if prot is None or dev is None or dev.kind != "meter" or "power_kw" not in reading.values:
            return []
        grid, now = reading.values["power_kw"], reading.now_s
        loads = [
            LoadState(f"{d.id}:{ch}", v[f"relay_{ch}"] >= 0.5, v.get(f"load_{ch}_kw", 0.0))
            for d in self.spec.own("relay")
            if d.id not in self.paused
            for v in [self.readings[d.id].values if d.id in self.readings else {}]
            for ch in _channels(v)
        ]
        loads = [ld for ld in loads if not self.actuation.locked_out(ld.id, now)]
        shed_order = self.zone.policy.shed_order if self.zone.policy else ()
        pv_ids = [d.id for d in self.spec.own("pv") if d.id not in self.paused]
        out: list[Action] = []
        for trip in protect(grid, prot.max_import_kw, prot.max_export_kw, loads, shed_order, pv_ids):
            self.actuation.lock_out(trip.target, now + prot.hold_s)
            write = self.actuation.trip(trip)
            if write is None:
                continue
            self._trips_pending[write.key] = {
                "kind": trip.kind,
                "target": trip.target,
                "reason": trip.reason,
                "grid_kw": grid,
                "detected_s": now,
                "wall_s": self.wall_s,
            }
            out.append(write)
        return self._remember(out)

    # --- outcomes ---------------------------------------------------------------------------------

    def _proposed(self, ev: Proposed) -> list[Action]:
        res, code = ev.result, ev.result.get("code")
        ok, retry = bool(res.get("ok")), code in RETRYABLE_CODES
        duty = self.duties.get(ev.purpose)
        if duty is not None:
            duty.in_flight = False
        if ev.purpose == "declare" and ev.key == self.spec.node_id and (ok or not retry):
            self.declared = True
            return [Log("info", "I_DECLARED", "devices declared to the zone", {"result": dict(res)})]
        if ev.purpose == "report" and not ok and not retry and code != "E_STALE_REPORT":
            return [Log("warning", code or "E_REPORT", f"report refused: {res.get('message')}")]
        if ev.purpose == "policy":
            return [Log("info", "I_POLICY", "committed the configured zone policy", {"result": code})]
        if ev.purpose == "forecast" and (ok or not retry):
            self.forecast_done = True
            v = self.spec.forecast.model.version if self.spec.forecast else 0
            return [Log("info", "I_FORECAST", f"forecast model v{v} replicated", {"result": code})]
        if ev.purpose == "plan":
            if not ok:
                self.plan_term = -1  # ask again
            word = "committed" if ok else "refused"
            level, log_code = ("info", "I_PLAN") if ok else ("warning", code or "E_PLAN")
            return [Log(level, log_code, f"plan {word}: {res.get('message')} (v{ev.key})")]
        if ev.purpose == "expire":
            self.expiring.discard(ev.key)
            return [
                Log(
                    "info",
                    "I_OVERRIDE_EXPIRED",
                    f"{ev.key}: override expired, control resumes",
                    {"result": code},
                )
            ]
        if ev.purpose == "transfer":
            dev, old, heir = ev.key.split(":")
            return [
                Log("info", "I_OWNERSHIP", f"{dev}: owner {old} is gone, moved to {heir}", {"result": code})
            ]
        if ev.purpose == "dispatch":
            # one stale cycle happens when an old leader's dispatch commits late; a run of
            # them means dispatch is not getting through, and that must be visible
            self.dispatch_refusals = 0 if ok or retry else self.dispatch_refusals + 1
            unexpected = not ok and not retry and code != "E_STALE_DISPATCH"
            if unexpected or self.dispatch_refusals in (3, 30, 300):
                return [
                    Log(
                        "warning",
                        code or "E_DISPATCH",
                        f"dispatch refused: {res.get('message')}",
                        {"in_a_row": self.dispatch_refusals},
                    )
                ]
        return []

    def _written(self, ev: Written) -> list[Action]:
        out: list[Action] = list(self.actuation.written(ev, self._writes.pop(ev.key, None)))
        trip = self._trips_pending.pop(ev.key, None)
        if trip is not None:
            event = {
                "t": trip["wall_s"],
                "kind": trip["kind"],
                "target": trip["target"],
                "reason": trip["reason"],
                "grid_kw": trip["grid_kw"],
                "ok": ev.ok,
                "ms": round(1000 * (ev.now_s - trip["detected_s"]), 1),
            }
            self.trips = [*self.trips[-49:], event]
            out.append(
                Log(
                    "warning",
                    "I_PROTECTION_TRIP",
                    f"{trip['kind']} {trip['target']}: {trip['reason']}",
                    event,
                )
            )
        return out


def _channels(values: dict[str, float]) -> list[int]:
    ch = 1
    while f"relay_{ch}" in values:
        ch += 1
    return list(range(1, ch))
