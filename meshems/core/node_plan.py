"""The planner's duties on a node (called by `core.node.Node`): every node publishes its
forecast of its base load once per quarter-hour; the leader asks for a plan every
quarter-hour, at once after winning an election, when the policy changes, when the reporting
batteries differ from the plan's and when a battery leaves the plan's SoC band, then commits
the plan it gets back.

Pure: the forecast comes from the node's own history (`core.pv_forecast.base_forecast`: its
load forecast less its PV forecast, the path `meshems forecast show` prints); the solve is an
action (`Solve`), carried out off the control path by the services, its result an event
(`Solved`).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from meshems.core import commands
from meshems.core.days_off import policy_days_off
from meshems.core.load_history import NO_HISTORY, LoadForecast
from meshems.core.node_events import Action, Log, Solve, Solved
from meshems.core.plan_inputs import STEP_S, plan_request, soc_off_plan
from meshems.core.plan_records import MAX_STEPS, pack, pack16
from meshems.core.planner import ZonePlan
from meshems.core.process_image import build_image
from meshems.core.pv_forecast import base_forecast

if TYPE_CHECKING:
    from meshems.core.node import Node

#: at most one replan for a SoC excursion per this many seconds (a battery that cannot follow
#: must not make the leader solve every cycle)
REPLAN_MIN_S = 60.0


def publish_node_forecast(node: Node) -> list[Action]:
    """Once per quarter-hour: this node's forecast of its base load, replicated."""
    step = math.floor(node.wall_s / STEP_S) * STEP_S
    duty = node.duties["node_forecast"]
    if node.raft.leader is None or node.spec.node_id not in node.zone.members or duty.in_flight:
        return []
    if node.forecast_step >= step:
        return []
    model = node.spec.forecast.model if node.spec.forecast is not None else None
    f = base_forecast(node.history, node.pv_history, node.wall_s, model, policy_days_off(node.zone.policy))
    node.forecast_step = step
    rid = f"nf-{node.spec.node_id}-{int(f.start_s)}-{node.rid_salt}"
    data = forecast_command(node.spec.node_id, f, rid)
    return [] if data is None else [node.propose("node_forecast", data, str(int(f.start_s)))]


def forecast_command(node_id: str, f: LoadForecast, rid: str) -> bytes | None:
    """The `node_forecast` command of a forecast (its gaps filled with its mean); None when
    there is nothing to say (no history yet)."""
    finite = f.kw[np.isfinite(f.kw)]
    if f.basis == NO_HISTORY or finite.size == 0:
        return None
    kw = np.where(np.isfinite(f.kw), f.kw, float(np.mean(finite)))[:MAX_STEPS]
    return commands.encode("node_forecast", rid, node_id=node_id, start_s=f.start_s, step_s=f.step_s,
                           kw=pack([round(float(x), 3) for x in kw]), basis=f.basis)  # fmt: skip


def plan_command(p: ZonePlan, version: int, rid: str, basis: str, made_s: float) -> bytes:
    """The `plan` command that commits the planner's plan as `version`."""
    soc = dict(p.soc_pct)
    batteries = [{"id": b, "kw": pack(kw), "soc": pack16(soc[b])} for b, kw in p.battery_kw]
    return commands.encode(
        "plan", rid, version=version, start_s=p.start_s, step_s=p.step_s, mode=p.mode, status=p.status,
        import_kw=pack(p.import_kw), batteries=batteries, peak_kw=round(p.peak_kw, 3), cost=round(p.cost, 4),
        reason=p.reason[:300], basis=(basis or "-")[:300], made_s=made_s,
    )  # fmt: skip


def replan(node: Node) -> list[Action]:
    """The leader's plan duty: ask for a plan when one is due (see the module docstring)."""
    state, policy = node.zone, node.zone.policy
    if policy is None or policy.mode == "reactive" or node.solving is not None:
        return []
    if node.duties["plan"].in_flight or node.now_s - node.plan_asked_s < 1.0:
        return []  # the leader steps every tick: look at most once a second
    node.plan_asked_s = node.now_s
    image = build_image(state, stale_nodes=node.liveness.stale(state, node.now_s))
    plan, why = state.plan, ""
    if plan is None:
        why = "no plan yet"
    elif node.plan_term != node.raft.term:
        why = "new leader"
    elif node.plan_policy != policy:
        why = "policy changed"
    elif node.wall_s >= plan.start_s + plan.step_s:
        why = "next quarter-hour"
    elif node.now_s - node.duties["plan"].last_s >= REPLAN_MIN_S:
        planned = {b.id for b in plan.batteries}
        reporting = {b.id for b in image.batteries if b.ok and b.capacity_kwh > 0 and b.id in state.devices}
        if planned != reporting:
            why = "the batteries changed"  # e.g. a node's first report came after the plan
        elif soc_off_plan(plan, image, node.wall_s):
            why = "SoC left the plan's band"
    if not why:
        return []
    request, basis = plan_request(state, image, policy, node.wall_s, node.import_peak.value(node.wall_s))
    if request is None:
        if node.plan_note != basis:
            node.plan_note = basis
            return [Log("info", "I_PLAN_WAIT", f"no plan yet: {basis}; dispatch runs the reactive rules")]
        return []
    node.plan_note = ""
    node.solving = f"{node.raft.term}-{state.last_index}"
    node.plan_inputs = (policy, node.raft.term, basis, why)
    return [Solve(node.solving, request)]


def solved(node: Node, ev: Solved) -> list[Action]:
    """Commit the plan the planner returned, if this node still leads for the same term."""
    if ev.key != node.solving:
        return []
    node.solving = None
    policy, term, basis, why = node.plan_inputs
    if not node.leads or term != node.raft.term:
        return []
    p = ev.plan
    version = (node.zone.plan.version + 1) if node.zone.plan is not None else 1
    data = plan_command(p, version, f"plan-{term}-{version}", basis, node.wall_s)
    node.plan_term, node.plan_policy = term, policy
    out: list[Action] = [node.propose("plan", data, str(version))]
    if p.status not in ("optimal",):
        out.append(Log("warning", "W_PLAN", f"plan v{version} ({why}): {p.status}: {p.reason}"))
    return out
