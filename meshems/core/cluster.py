"""The replicated zone state and `apply`, the function every replica runs on the Raft log.

Rules of this module (as h11 writes its rules at the top):
- `apply(state, data, term, index)` is pure: the same state and the same log entry give the
  same new state and result on every replica; no I/O, clock, randomness or threads.
- States are immutable; `apply` returns a new one and shares what did not change.
- A malformed or refused command changes nothing but the applied position and the dedup
  window, and is refused with the same code everywhere.
- A command whose request id was already applied returns the first result and changes
  nothing (client retries after E_LEADER_CHANGED / E_UNKNOWN_OUTCOME are safe).
- Committed setpoints carry the (term, index) of their log entry: the fencing token.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import msgpack

from meshems.core.commands import Command, Rejection, decode, peek_rid
from meshems.core.policy import Envelope, Policy, with_changes

#: The dedup window: request ids are remembered in generations of RID_GENERATION ids, the
#: newest RID_GENERATIONS generations are kept, so the window holds between
#: (RID_GENERATIONS - 1) x RID_GENERATION and RID_GENERATIONS x RID_GENERATION ids. Small
#: generations keep `apply` cheap: only the newest one is copied per entry.
RID_GENERATION = 512
RID_GENERATIONS = 16
SNAPSHOT_VERSION = 1
#: How far one entry may move a counter past its current value: a node's report sequence,
#: the dispatch cycle (both taken from the zone state by the proposer, so a real step is 1,
#: a few after lost proposals) and a forecast model version (chosen by a user, e.g. a date).
#: A jump to 2**63-1 is refused on every replica instead of wedging the stream for good.
MAX_SEQ_STEP = 1000
MAX_VERSION_STEP = 10**9


@dataclass(frozen=True, slots=True)
class Member:
    node_id: str
    raft: str
    api: str


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    kind: str
    owner: str
    min_kw: float
    max_kw: float


@dataclass(frozen=True, slots=True)
class Setpoint:
    """A committed setpoint and its fencing token (term, index)."""

    device_id: str
    kw: float
    term: int
    index: int
    rid: str
    source: str


@dataclass(frozen=True, slots=True)
class Result:
    """What applying one log entry returned to the proposer."""

    ok: bool
    code: str
    message: str
    term: int
    index: int
    duplicate: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "code": self.code,
            "message": self.message,
            "term": self.term,
            "index": self.index,
            "duplicate": self.duplicate,
        }


@dataclass(frozen=True, slots=True)
class Reading:
    """One device's summary in a node report: health and values by role."""

    device_id: str
    state: str
    values: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class NodeReport:
    """A node's latest measurement summary (about 1 Hz), stamped with its log position."""

    node_id: str
    seq: int
    term: int
    index: int
    readings: tuple[Reading, ...]


@dataclass(frozen=True, slots=True)
class RelayState:
    """A committed state of one relay-switched load (from dispatch), with its token."""

    load: str
    closed: bool
    term: int
    index: int
    controller: str
    expected_kw: float


@dataclass(frozen=True, slots=True)
class DispatchRecord:
    """What the last committed dispatch used and decided (for `meshems explain`)."""

    cycle: int
    term: int
    index: int
    inputs: tuple[tuple[str, float], ...]
    decisions: tuple[tuple[str, str, str], ...]  # device or load id, controller, reason


@dataclass(frozen=True, slots=True)
class ForecastRecord:
    """A node's load forecaster, replicated so peers hold it with its version and digest."""

    node_id: str
    version: int
    digest: str
    data: bytes  # the .npz (verified against the digest by whoever loads it)
    term: int
    index: int


@dataclass(frozen=True, slots=True)
class ZoneState:
    last_term: int = 0
    last_index: int = 0
    members: Mapping[str, Member] = field(default_factory=dict)
    devices: Mapping[str, Device] = field(default_factory=dict)
    setpoints: Mapping[str, Setpoint] = field(default_factory=dict)
    reports: Mapping[str, NodeReport] = field(default_factory=dict)
    #: shared device -> the nodes that can reach it (its owner among them)
    shared: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    policy: Policy | None = None
    forecasts: Mapping[str, ForecastRecord] = field(default_factory=dict)
    relays: Mapping[str, RelayState] = field(default_factory=dict)
    envelopes: Mapping[str, Envelope] = field(default_factory=dict)
    last_dispatch: DispatchRecord | None = None
    #: request id -> first result, newest generation first (see RID_GENERATION)
    rids: tuple[Mapping[str, Result], ...] = ()
    #: zone telemetry records derived so far (see core/telemetry.py): one per applied
    #: report, setpoint and dispatch, so every replica numbers the stream the same way
    telemetry_seq: int = 0
    #: the highest telemetry seq the cloud broker acknowledged (all below it too)
    cloud_acked: int = 0


def _remember(state: ZoneState, rid: str | None, result: Result) -> dict[str, Any]:
    """The dedup window after recording `rid` (bounded generations, oldest dropped)."""
    if rid is None:
        return {}
    rids = state.rids
    if not rids or len(rids[0]) >= RID_GENERATION:
        return {"rids": ({rid: result}, *rids[: RID_GENERATIONS - 1])}
    return {"rids": ({**rids[0], rid: result}, *rids[1:])}


def seen(state: ZoneState, rid: str) -> Result | None:
    for generation in state.rids:
        found = generation.get(rid)
        if found is not None:
            return found
    return None


def apply(state: ZoneState, data: bytes, term: int, index: int) -> tuple[ZoneState, Result]:
    """Apply one committed log entry (command bytes at `term`, `index`)."""
    if index <= state.last_index:
        # A replay of an entry already in the state (e.g. after restore): no effect.
        return state, Result(False, "E_CMD_REPLAYED", "entry already applied", term, index)
    cmd = decode(data)
    # Dedup before anything else, also for a rejected command whose rid is readable: a
    # retry gets the first result, and a reject never overwrites an earlier rid's result.
    rid = peek_rid(data) if isinstance(cmd, Rejection) else cmd.rid
    earlier = seen(state, rid) if rid is not None else None
    if earlier is not None:
        dup = replace(earlier, duplicate=True)
        return replace(state, last_term=term, last_index=index), dup
    if isinstance(cmd, Rejection):
        result = Result(False, cmd.code, cmd.message, term, index)
        return _advance(state, term, index, rid, result, {}), result
    changes, result = _HANDLERS[cmd.type](state, cmd, term, index)
    if result.ok and cmd.type in TELEMETRY_TYPES:
        changes["telemetry_seq"] = state.telemetry_seq + 1
    return _advance(state, term, index, cmd.rid, result, changes), result


def _advance(
    state: ZoneState, term: int, index: int, rid: str | None, result: Result, changes: dict
) -> ZoneState:
    return replace(state, last_term=term, last_index=index, **changes, **_remember(state, rid, result))


def _step_refusal(
    what: str, new: int, current: int, max_step: int, stale_code: str, term: int, index: int
) -> Result | None:
    """Refuse a counter that does not move forward, or jumps more than `max_step`."""
    if new <= current:
        return _refuse(stale_code, f"{what} {new} is not newer than {current}", term, index)
    if new - current > max_step:
        msg = f"{what} {new} jumps more than {max_step} past {current} (the next is {current + 1})"
        return _refuse("E_SEQ_JUMP", msg, term, index)
    return None


def _ok(term: int, index: int, message: str = "") -> Result:
    return Result(True, "OK", message, term, index)


def _refuse(code: str, message: str, term: int, index: int) -> Result:
    return Result(False, code, message, term, index)


def _declare_node(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    f = cmd.fields
    node_id = f["node_id"]
    shared = dict(state.shared)
    for dev in f["devices"]:
        owner = state.devices.get(dev["id"])
        if owner is not None and owner.owner != node_id and not (dev.get("shared") and dev["id"] in shared):
            msg = f"device {dev['id']!r} is owned by node {owner.owner!r}"
            return {}, _refuse("E_DEVICE_OWNED", msg, term, index)
    declared = {d["id"] for d in f["devices"]}
    # a node that no longer declares a shared device can no longer reach it
    for dev_id, nodes in list(shared.items()):
        if node_id in nodes and dev_id not in declared:
            shared[dev_id] = tuple(n for n in nodes if n != node_id)
    devices = {k: v for k, v in state.devices.items() if v.owner != node_id or k in declared}
    for d in f["devices"]:
        current = state.devices.get(d["id"])
        if d.get("shared"):
            shared[d["id"]] = tuple(sorted({*shared.get(d["id"], ()), node_id}))
            if current is not None and current.owner != node_id:
                continue  # reachable from here too; ownership stays until transferred
        devices[d["id"]] = Device(d["id"], d["kind"], node_id, d["min_kw"], d["max_kw"])
    for dev_id in list(shared):
        if dev_id not in devices or not shared[dev_id]:
            del shared[dev_id]
    # A setpoint outside its device's (possibly narrowed) limits is no longer actuated.
    setpoints = {
        k: v
        for k, v in state.setpoints.items()
        if k in devices and devices[k].min_kw <= v.kw <= devices[k].max_kw
    }
    members = {**state.members, node_id: Member(node_id, f["raft"], f["api"])}
    changes = {"members": members, "devices": devices, "setpoints": setpoints, "shared": shared}
    report = state.reports.get(node_id)
    if report is not None and any(r.device_id not in declared for r in report.readings):
        kept = tuple(r for r in report.readings if r.device_id in declared)
        changes["reports"] = {**state.reports, node_id: replace(report, readings=kept)}
    return changes, _ok(term, index, f"node {node_id} declared with {len(declared)} devices")


def _remove_node(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    node_id = cmd.fields["node_id"]
    if node_id not in state.members:
        return {}, _refuse("E_UNKNOWN_NODE", f"node {node_id!r} is not a member", term, index)
    members = {k: v for k, v in state.members.items() if k != node_id}
    shared = {k: tuple(n for n in v if n != node_id) for k, v in state.shared.items()}
    devices = {}
    for k, v in state.devices.items():
        if v.owner != node_id:
            devices[k] = v
        elif shared.get(k):  # a shared device moves to the next gateway that reaches it
            devices[k] = replace(v, owner=shared[k][0])
    shared = {k: v for k, v in shared.items() if v and k in devices}
    setpoints = {k: v for k, v in state.setpoints.items() if k in devices}
    reports = {k: v for k, v in state.reports.items() if k != node_id}
    changes = {
        "members": members,
        "devices": devices,
        "setpoints": setpoints,
        "reports": reports,
        "shared": shared,
    }
    return changes, _ok(term, index, f"node {node_id} removed")


def _set_setpoint(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    f = cmd.fields
    dev = state.devices.get(f["device_id"])
    if dev is None:
        known = ", ".join(sorted(state.devices)) or "none yet"
        msg = f"the zone knows no device {f['device_id']!r} (known: {known})"
        return {}, _refuse("E_UNKNOWN_DEVICE", msg, term, index)
    if not dev.min_kw <= f["kw"] <= dev.max_kw:
        msg = f"{f['kw']} kW is outside {dev.id}'s limits [{dev.min_kw}, {dev.max_kw}] kW"
        return {}, _refuse("E_LIMIT", msg, term, index)
    sp = Setpoint(dev.id, f["kw"], term, index, cmd.rid, f["source"])
    return {"setpoints": {**state.setpoints, dev.id: sp}}, _ok(term, index)


def _barrier(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    return {}, _ok(term, index)


def _cloud_ack(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    seq = cmd.fields["seq"]
    if seq > state.telemetry_seq:
        msg = f"cloud ack {seq} is ahead of the telemetry stream ({state.telemetry_seq})"
        return {}, _refuse("E_CLOUD_ACK_AHEAD", msg, term, index)
    if seq <= state.cloud_acked:
        return {}, _ok(term, index, f"already acknowledged through {state.cloud_acked}")
    return {"cloud_acked": seq}, _ok(term, index, f"cloud acknowledged through {seq}")


def _report(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    f = cmd.fields
    node_id = f["node_id"]
    if node_id not in state.members:
        return {}, _refuse("E_UNKNOWN_NODE", f"node {node_id!r} is not a member", term, index)
    previous = state.reports.get(node_id)
    current = previous.seq if previous is not None else -1
    refusal = _step_refusal(f"report of {node_id}", f["seq"], current, MAX_SEQ_STEP, "E_STALE_REPORT", term,
                            index)  # fmt: skip
    if refusal is not None:
        return {}, refusal
    for r in f["devices"]:
        dev = state.devices.get(r["id"])
        if dev is None or dev.owner != node_id:
            return {}, _refuse("E_DEVICE_OWNED", f"{node_id} does not own device {r['id']!r}", term, index)
    readings = tuple(
        Reading(r["id"], r["state"], tuple(r["values"].items()))
        for r in sorted(f["devices"], key=lambda r: r["id"])
    )
    report = NodeReport(node_id, f["seq"], term, index, readings)
    return {"reports": {**state.reports, node_id: report}}, _ok(term, index)


def _set_policy(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    for load in cmd.fields["values"].get("shed_order", ()):
        dev = state.devices.get(load.rpartition(":")[0])
        if dev is None or dev.kind != "relay":
            relays = (
                ", ".join(sorted(d.id for d in state.devices.values() if d.kind == "relay")) or "none yet"
            )
            msg = f"shed_order: {load!r} is not a load of a relay device in the zone (relays: {relays})"
            return {}, _refuse("E_POLICY", msg, term, index)
    policy = with_changes(state.policy or Policy(), cmd.fields["values"])
    if policy.soc_floor_pct >= policy.soc_ceiling_pct:
        msg = f"soc_floor_pct {policy.soc_floor_pct} must be below soc_ceiling_pct {policy.soc_ceiling_pct}"
        return {}, _refuse("E_POLICY", msg, term, index)
    return {"policy": policy}, _ok(term, index, "policy updated")


def _dispatch(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    f = cmd.fields
    current = state.last_dispatch.cycle if state.last_dispatch is not None else 0
    refusal = _step_refusal("dispatch cycle", f["cycle"], current, MAX_SEQ_STEP, "E_STALE_DISPATCH", term,
                            index)  # fmt: skip
    if refusal is not None:
        return {}, refusal
    for sp in f["setpoints"]:
        dev = state.devices.get(sp["device_id"])
        if dev is None or dev.kind not in ("battery", "pv"):
            return {}, _refuse("E_UNKNOWN_DEVICE", f"dispatch names {sp['device_id']!r}", term, index)
        if not dev.min_kw <= sp["kw"] <= dev.max_kw:
            msg = f"dispatch sets {dev.id} to {sp['kw']} kW outside [{dev.min_kw}, {dev.max_kw}]"
            return {}, _refuse("E_LIMIT", msg, term, index)
    for r in f["relays"]:
        dev = state.devices.get(r["load"].rpartition(":")[0])
        if dev is None or dev.kind != "relay":
            return {}, _refuse(
                "E_UNKNOWN_DEVICE", f"dispatch switches unknown load {r['load']!r}", term, index
            )
    setpoints = dict(state.setpoints)
    decisions = []
    for sp in f["setpoints"]:
        setpoints[sp["device_id"]] = Setpoint(sp["device_id"], sp["kw"], term, index, cmd.rid,
                                              f"dispatch:{sp['controller']}")  # fmt: skip
        decisions.append((sp["device_id"], sp["controller"], sp["reason"]))
    relays = dict(state.relays)
    for r in f["relays"]:
        relays[r["load"]] = RelayState(r["load"], r["closed"], term, index, r["controller"], r["expected_kw"])
        decisions.append((r["load"], r["controller"], r["reason"]))
    envelopes = {
        e["node_id"]: Envelope(e["node_id"], e["import_limit_kw"], e["export_limit_kw"], e["soc_reserve_pct"],
                               tuple(str(x) for x in e["shed"]))
        for e in f["envelopes"]
    }  # fmt: skip
    record = DispatchRecord(f["cycle"], term, index, tuple(f["inputs"].items()), tuple(sorted(decisions)))
    changes = {"setpoints": setpoints, "relays": relays, "envelopes": envelopes, "last_dispatch": record}
    return changes, _ok(term, index, f"dispatch cycle {f['cycle']}")


def _transfer_device(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    """Bus ownership: a shared device (a single-master Modbus device several gateways can
    reach) moves to another gateway that declared it can reach it."""
    f = cmd.fields
    dev = state.devices.get(f["device_id"])
    if dev is None or f["device_id"] not in state.shared:
        return {}, _refuse("E_UNKNOWN_DEVICE", f"{f['device_id']!r} is not a shared device", term, index)
    if f["node_id"] not in state.shared[f["device_id"]]:
        msg = f"node {f['node_id']!r} has not declared it can reach {f['device_id']!r}"
        return {}, _refuse("E_NOT_REACHABLE", msg, term, index)
    if dev.owner == f["node_id"]:
        return {}, _ok(term, index, "already the owner")
    devices = {**state.devices, dev.id: replace(dev, owner=f["node_id"])}
    return {"devices": devices}, _ok(term, index, f"{dev.id} now owned by {f['node_id']}")


def _forecast_model(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    f = cmd.fields
    if f["node_id"] not in state.members:
        return {}, _refuse("E_UNKNOWN_NODE", f"node {f['node_id']!r} is not a member", term, index)
    current = state.forecasts.get(f["node_id"])
    refusal = _step_refusal(f"forecast model version of {f['node_id']}", f["version"],
                            current.version if current is not None else 0, MAX_VERSION_STEP,
                            "E_STALE_MODEL", term, index)  # fmt: skip
    if refusal is not None:
        return {}, refusal
    record = ForecastRecord(f["node_id"], f["version"], f["digest"], f["data"], term, index)
    return {"forecasts": {**state.forecasts, f["node_id"]: record}}, _ok(
        term, index, f"model v{f['version']}"
    )


_HANDLERS = {
    "forecast_model": _forecast_model,
    "transfer_device": _transfer_device,
    "set_policy": _set_policy,
    "dispatch": _dispatch,
    "report": _report,
    "declare_node": _declare_node,
    "set_setpoint": _set_setpoint,
    "remove_node": _remove_node,
    "barrier": _barrier,
    "cloud_ack": _cloud_ack,
}
#: successfully applied commands of these types each add one record to the telemetry stream
TELEMETRY_TYPES = frozenset({"report", "set_setpoint", "dispatch"})


# --- snapshot, restore, hash -------------------------------------------------------------


def _result_row(r: Result) -> list:
    return [r.ok, r.code, r.message, r.term, r.index]


def to_snapshot(state: ZoneState) -> dict[str, Any]:
    """A canonical plain-data form of the state (sorted, msgpack-ready)."""
    return {
        "v": SNAPSHOT_VERSION,
        "last_term": state.last_term,
        "last_index": state.last_index,
        "members": [[m.node_id, m.raft, m.api] for _, m in sorted(state.members.items())],
        "devices": [[d.id, d.kind, d.owner, d.min_kw, d.max_kw] for _, d in sorted(state.devices.items())],
        "setpoints": [
            [s.device_id, s.kw, s.term, s.index, s.rid, s.source] for _, s in sorted(state.setpoints.items())
        ],
        "reports": [
            [
                r.node_id,
                r.seq,
                r.term,
                r.index,
                [[x.device_id, x.state, [list(v) for v in x.values]] for x in r.readings],
            ]
            for _, r in sorted(state.reports.items())
        ],
        "shared": [[k, list(v)] for k, v in sorted(state.shared.items())],
        "forecasts": [
            [r.node_id, r.version, r.digest, r.data, r.term, r.index]
            for _, r in sorted(state.forecasts.items())
        ],
        "policy": None if state.policy is None else state.policy.to_dict(),
        "relays": [
            [r.load, r.closed, r.term, r.index, r.controller, r.expected_kw]
            for _, r in sorted(state.relays.items())
        ],
        "envelopes": [
            [e.node_id, e.import_limit_kw, e.export_limit_kw, e.soc_reserve_pct, list(e.shed)]
            for _, e in sorted(state.envelopes.items())
        ],
        "last_dispatch": None
        if state.last_dispatch is None
        else [
            state.last_dispatch.cycle,
            state.last_dispatch.term,
            state.last_dispatch.index,
            [list(x) for x in state.last_dispatch.inputs],
            [list(x) for x in state.last_dispatch.decisions],
        ],
        # Generations in order (newest first), each in insertion order: eviction depends on it.
        "rids": [[[k, *_result_row(v)] for k, v in gen.items()] for gen in state.rids],
        "telemetry_seq": state.telemetry_seq,
        "cloud_acked": state.cloud_acked,
    }


def snapshot(state: ZoneState) -> bytes:
    return msgpack.packb(to_snapshot(state))


def restore(data: bytes) -> ZoneState:
    """Rebuild a state from `snapshot` bytes; raises ValueError on a damaged snapshot."""
    try:
        raw = msgpack.unpackb(data, raw=False)
        if raw.get("v") != SNAPSHOT_VERSION:
            raise ValueError(f"snapshot version {raw.get('v')!r} is not {SNAPSHOT_VERSION}")
        return ZoneState(
            last_term=raw["last_term"],
            last_index=raw["last_index"],
            members={r[0]: Member(*r) for r in raw["members"]},
            devices={r[0]: Device(*r) for r in raw["devices"]},
            setpoints={r[0]: Setpoint(*r) for r in raw["setpoints"]},
            reports={
                r[0]: NodeReport(
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    tuple(Reading(x[0], x[1], tuple((k, v) for k, v in x[2])) for x in r[4]),
                )
                for r in raw["reports"]
            },
            shared={r[0]: tuple(r[1]) for r in raw["shared"]},
            forecasts={r[0]: ForecastRecord(*r) for r in raw["forecasts"]},
            policy=None if raw["policy"] is None else with_changes(Policy(), raw["policy"]),
            relays={r[0]: RelayState(*r) for r in raw["relays"]},
            envelopes={e[0]: Envelope(e[0], e[1], e[2], e[3], tuple(e[4])) for e in raw["envelopes"]},
            last_dispatch=None
            if raw["last_dispatch"] is None
            else DispatchRecord(
                raw["last_dispatch"][0],
                raw["last_dispatch"][1],
                raw["last_dispatch"][2],
                tuple((k, v) for k, v in raw["last_dispatch"][3]),
                tuple((a, b, c) for a, b, c in raw["last_dispatch"][4]),
            ),
            rids=tuple({r[0]: Result(*r[1:]) for r in gen} for gen in raw["rids"]),
            telemetry_seq=int(raw.get("telemetry_seq", 0)),
            cloud_acked=int(raw.get("cloud_acked", 0)),
        )
    except (KeyError, IndexError, TypeError, AttributeError, ValueError, msgpack.UnpackException) as exc:
        raise ValueError(f"damaged snapshot: {type(exc).__name__}: {exc}") from None


def state_hash(state: ZoneState) -> str:
    """SHA-256 of the canonical snapshot: equal on replicas that applied the same log."""
    return hashlib.sha256(snapshot(state)).hexdigest()


def setpoint_dict(sp: Setpoint) -> dict[str, Any]:
    return {
        "device_id": sp.device_id,
        "kw": sp.kw,
        "term": sp.term,
        "index": sp.index,
        "rid": sp.rid,
        "source": sp.source,
    }
