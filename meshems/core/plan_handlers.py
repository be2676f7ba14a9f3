"""`apply` handlers of the planner's commands: a node's forecast replaces its previous one
(never an older one), a plan replaces the zone plan (its version only rises, it names zone
batteries only, and no planned power is outside a battery's committed limits). Pure."""

from __future__ import annotations

from typing import TYPE_CHECKING

from meshems.core.commands import Command
from meshems.core.plan_records import NodeForecast, plan_from_fields
from meshems.core.zone_handlers import MAX_SEQ_STEP, _ok, _refuse, _step_refusal
from meshems.core.zone_records import Result

if TYPE_CHECKING:
    from meshems.core.cluster import ZoneState


def node_forecast(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    f = cmd.fields
    node_id = f["node_id"]
    if node_id not in state.members:
        return {}, _refuse("E_UNKNOWN_NODE", f"node {node_id!r} is not a member", term, index)
    previous = state.node_forecasts.get(node_id)
    if previous is not None and f["start_s"] < previous.start_s:
        msg = f"forecast of {node_id} from {f['start_s']:.0f} is older than {previous.start_s:.0f}'s"
        return {}, _refuse("E_STALE_FORECAST", msg, term, index)
    record = NodeForecast(node_id, f["start_s"], f["step_s"], tuple(f["kw"]), f["basis"], term, index)
    return {"node_forecasts": {**state.node_forecasts, node_id: record}}, _ok(term, index)


def plan(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    f = cmd.fields
    current = state.plan.version if state.plan is not None else 0
    refusal = _step_refusal("plan version", f["version"], current, MAX_SEQ_STEP, "E_STALE_PLAN", term, index)
    if refusal is not None:
        return {}, refusal
    for b in f["batteries"]:
        dev = state.devices.get(b["id"])
        if dev is None or dev.kind != "battery":
            return {}, _refuse("E_UNKNOWN_DEVICE", f"plan names {b['id']!r}, not a zone battery", term, index)
        if not all(dev.min_kw - 1e-3 <= kw <= dev.max_kw + 1e-3 for kw in b["kw"]):
            msg = f"plan moves {dev.id} outside [{dev.min_kw}, {dev.max_kw}] kW"
            return {}, _refuse("E_LIMIT", msg, term, index)
    record = plan_from_fields(dict(f), term, index)
    return {"plan": record}, _ok(term, index, f"plan v{f['version']} ({f['status']})")
