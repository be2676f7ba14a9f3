"""What each command does to the zone state: one handler per command type, returning the
changed fields and the `Result`, or a refusal that changes nothing; and the bounds on the
counters one entry may move. Pure: no I/O, clock or randomness (the rules of
`core.cluster`, which holds the dispatch table and `apply`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from meshems.core.commands import Command
from meshems.core.policy import Envelope, Policy, with_changes
from meshems.core.zone_records import (
    Device,
    DispatchRecord,
    ForecastRecord,
    Member,
    NodeReport,
    Reading,
    RelayOverride,
    RelayState,
    Result,
    Setpoint,
)

if TYPE_CHECKING:
    from meshems.core.cluster import ZoneState

#: How far one entry may move a counter past its current value: a node's report sequence,
#: the dispatch cycle (both taken from the zone state by the proposer, so a real step is 1,
#: a few after lost proposals) and a forecast model version (chosen by a user, e.g. a date).
#: A jump to 2**63-1 is refused on every replica instead of wedging the stream for good.
MAX_SEQ_STEP = 1000
MAX_VERSION_STEP = 10**9


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


def declare_node(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
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
    overrides = _live_overrides(state.overrides, devices)
    if len(overrides) != len(state.overrides):
        changes["overrides"] = overrides
    report = state.reports.get(node_id)
    if report is not None and any(r.device_id not in declared for r in report.readings):
        kept = tuple(r for r in report.readings if r.device_id in declared)
        changes["reports"] = {**state.reports, node_id: replace(report, readings=kept)}
    return changes, _ok(term, index, f"node {node_id} declared with {len(declared)} devices")


def _live_overrides(overrides: Mapping[str, RelayOverride], devices: Mapping[str, Device]) -> dict:
    """The overrides whose load is still behind a relay device of the zone."""
    out = {}
    for load, o in overrides.items():
        dev = devices.get(load.rpartition(":")[0])
        if dev is not None and dev.kind == "relay":
            out[load] = o
    return out


def remove_node(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
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
    overrides = _live_overrides(state.overrides, devices)
    changes = {
        "members": members,
        "devices": devices,
        "setpoints": setpoints,
        "reports": reports,
        "shared": shared,
        "overrides": overrides,
    }
    return changes, _ok(term, index, f"node {node_id} removed")


def set_setpoint(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
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


def barrier(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    return {}, _ok(term, index)


def cloud_ack(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    seq = cmd.fields["seq"]
    if seq > state.telemetry_seq:
        msg = f"cloud ack {seq} is ahead of the telemetry stream ({state.telemetry_seq})"
        return {}, _refuse("E_CLOUD_ACK_AHEAD", msg, term, index)
    if seq <= state.cloud_acked:
        return {}, _ok(term, index, f"already acknowledged through {state.cloud_acked}")
    return {"cloud_acked": seq}, _ok(term, index, f"cloud acknowledged through {seq}")


def report(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
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
    report = NodeReport(node_id, f["seq"], term, index, readings, f["reserve_kwh"])
    return {"reports": {**state.reports, node_id: report}}, _ok(term, index)


def set_policy(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
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


def dispatch(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
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
        if r["load"] in state.overrides:
            continue  # an operator's override holds the load until it is cleared or expires
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


def relay_override(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    """An operator's override of a load: committed as the load's relay state (so nodes
    actuate it, fenced like any committed value), kept in `overrides` until cleared."""
    f = cmd.fields
    load = f["load"]
    dev = state.devices.get(load.rpartition(":")[0])
    if dev is None or dev.kind != "relay":
        relays = ", ".join(sorted(d.id for d in state.devices.values() if d.kind == "relay")) or "none yet"
        msg = f"{load!r} is not a load of a relay device in the zone (relays: {relays})"
        return {}, _refuse("E_UNKNOWN_DEVICE", msg, term, index)
    if f["closed"] is None:
        if load not in state.overrides:
            return {}, _ok(term, index, f"{load} had no override")
        overrides = {k: v for k, v in state.overrides.items() if k != load}
        changes: dict[str, Any] = {"overrides": overrides}
        held = state.relays.get(load)
        if (
            held is not None
            and not held.closed
            and (state.policy is None or load not in state.policy.shed_order)
        ):
            # no controller switches a load outside the shed order: it goes back on at once
            changes["relays"] = {**state.relays, load: RelayState(load, True, term, index, "override", 0.0)}
            return changes, _ok(term, index, f"{load}: override cleared, back on (not in the shed order)")
        return changes, _ok(term, index, f"{load}: override cleared, control resumes")
    previous = state.relays.get(load)
    expected = previous.expected_kw if previous is not None else 0.0
    override = RelayOverride(load, f["closed"], f["until_s"], term, index, cmd.rid, f["source"])
    relays = {**state.relays, load: RelayState(load, f["closed"], term, index, "override", expected)}
    state_word = "on" if f["closed"] else "off"
    return {"overrides": {**state.overrides, load: override}, "relays": relays}, _ok(
        term, index, f"{load} held {state_word} by {f['source']}"
    )


def transfer_device(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
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


def forecast_model(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
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
