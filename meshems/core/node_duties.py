"""A node's own duties towards the zone, one function each (called by `core.node.Node`):
declare its devices (and, as leader, those of configured nodes the zone lacks), report its
measurement summary about once per `report_s`, record its base load and the battery reserve
its forecast asks for, and replicate its fitted forecaster once.

Pure: time, readings and the zone state come from the Node; results are actions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from meshems.core import commands
from meshems.core.days_off import policy_days_off
from meshems.core.load_history import reserve_of
from meshems.core.node_events import Action, Propose, SaveHistory
from meshems.core.pv_forecast import base_forecast

if TYPE_CHECKING:
    from meshems.core.node import Node

NEVER = -1e18


def declare(node: Node) -> list[Action]:
    t, duty = node.spec.timing, node.duties["declare"]
    if node.raft.leader is None or not duty.due(node.now_s, 0.0 if not node.declared else t.declare_retry_s):
        return []
    todo = [] if node.declared else [node.spec.node_id]
    if node.raft.role == "leader":
        todo += [n for n in node.spec.declarations if n not in node.zone.members and n != node.spec.node_id]
    if not todo:
        return []
    duty.start(node.now_s)
    return [Propose(node.spec.declarations[n], "declare", n) for n in todo]


def report(node: Node) -> list[Action]:
    duty = node.duties["report"]
    if node.raft.leader is None or node.spec.node_id not in node.zone.members:
        return []
    if not node.polled() or not duty.due(node.now_s, node.spec.timing.report_s):
        return []
    previous = node.zone.reports.get(node.spec.node_id)
    seq = previous.seq + 1 if previous is not None else 0
    readings = [{"id": k, "state": h, "values": dict(v)} for k, (h, v) in sorted(node.polled().items())]
    out: list[Action] = forecast(node, readings)
    fields = {"reserve_kwh": round(node.reserve_kwh, 3)} if node.reserve_kwh > 0 else {}
    node.rids += 1
    data = commands.encode(
        "report",
        f"report-{node.spec.node_id}-{seq}-{node.rid_salt}{node.rids}",
        node_id=node.spec.node_id,
        seq=seq,
        devices=readings,
        **fields,
    )
    return [*out, node.propose("report", data, str(seq), node.spec.timing.report_timeout_s)]


def forecast(node: Node, readings: list[dict[str, Any]]) -> list[Action]:
    """Record the base load (import with the batteries at 0) and forecast the battery
    reserve the coming day needs above this node's envelope (it goes into the report)."""
    kinds = {d.id: d.kind for d in node.spec.devices.values()}
    meter = next(
        (
            r
            for r in readings
            if r["state"] == "ok" and "power_kw" in r["values"] and kinds.get(r["id"]) == "meter"
        ),
        None,
    )
    if meter is None:
        return []
    batteries = sum(r["values"].get("power_kw", 0.0) for r in readings if kinds.get(r["id"]) == "battery")
    pvs = [
        r for r in readings if kinds.get(r["id"]) == "pv" and r["state"] == "ok" and "power_kw" in r["values"]
    ]
    pv = sum(r["values"]["power_kw"] for r in pvs)
    # the load (PV added back) and the PV apart: they are forecast apart (core.pv_forecast)
    node.history.add(node.wall_s, meter["values"]["power_kw"] + batteries + pv)
    if pvs:
        node.pv_history.add(node.wall_s, pv)
    out: list[Action] = []
    if node.duties["history"].due(node.now_s, node.spec.timing.history_save_s):
        if node.duties["history"].last_s != NEVER:
            out.append(SaveHistory())
        node.duties["history"].last_s = node.now_s
    envelope = node.zone.envelopes.get(node.spec.node_id)
    if envelope is None:
        return out
    model = node.spec.forecast.model if node.spec.forecast is not None else None
    f = base_forecast(node.history, node.pv_history, node.wall_s, model, policy_days_off(node.zone.policy))
    node.reserve_kwh, node.forecast_basis = reserve_of(f, envelope.import_limit_kw), f.basis
    return out


def publish_forecast(node: Node) -> list[Action]:
    """Replicate this node's fitted forecaster (its .npz, version and digest) once."""
    f = node.spec.forecast
    if f is None or node.forecast_done or node.raft.leader is None:
        return []
    known = node.zone.forecasts.get(node.spec.node_id)
    if known is not None and known.version >= f.model.version:
        node.forecast_done = True
        return []
    duty = node.duties["forecast"]
    if node.spec.node_id not in node.zone.members or not duty.due(
        node.now_s, node.spec.timing.forecast_retry_s
    ):
        return []
    node.forecast_tries += 1
    if node.forecast_tries > node.spec.timing.forecast_attempts:
        node.forecast_done = True
        return []
    v = f.model.version
    data = commands.encode(
        "forecast_model",
        f"model-{node.spec.node_id}-{v}-{f.digest[:12]}",
        node_id=node.spec.node_id,
        version=v,
        digest=f.digest,
        data=f.npz,
    )
    return [node.propose("forecast", data)]
