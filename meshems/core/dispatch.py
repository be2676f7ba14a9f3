"""Dispatch: one control cycle of the zone, run by the leader and committed as one command.

Pure and deterministic: (process image, policy, reserve, shed history) -> setpoints for
batteries and PV, relay states for shed loads, and per-node survival envelopes. The
controllers run in priority order (import limit, export limit, battery balancing, load
shedding, PV curtailment, restore); every result is within its device's limits.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass, replace
from typing import Any

from meshems.core import controllers as c
from meshems.core.plan_records import PlanStep
from meshems.core.policy import Envelope, Policy
from meshems.core.process_image import ProcessImage


@dataclass(frozen=True, slots=True)
class DispatchResult:
    setpoints: tuple[tuple[str, float, str, str], ...]  # device, kW, controller, reason
    relays: tuple[tuple[str, bool, str, str, float], ...]  # load id, closed, controller, reason, expected kW
    envelopes: tuple[Envelope, ...]
    inputs: Mapping[str, float]


def envelopes(
    image: ProcessImage, policy: Policy, soc_reserve_pct: float | None = None, follow: PlanStep | None = None
) -> tuple[Envelope, ...]:
    """Each node's share of the zone limits, in proportion to its own import with batteries
    at zero (its need), so the shares never add up to more than the zone limits. In peak mode
    with a fresh plan the zone's import is today's planned peak when that is lower than the
    limit (with no limit, the default, a node alone would otherwise shave nothing)."""
    nodes = image.nodes
    if not nodes:
        return ()
    if follow is not None and follow.mode == "peak" and follow.peak_kw < policy.import_limit_kw:
        policy = replace(policy, import_limit_kw=max(0.0, follow.peak_kw))
    needs = [max(n.grid_kw + n.battery_kw, 0.0) + 0.1 for n in nodes]
    total = sum(needs)
    load_node = {ld.id: ld.node for ld in image.loads}
    out = []
    for n, need in zip(nodes, needs, strict=True):
        imp = math.floor(policy.import_limit_kw * need / total * 1000) / 1000
        exp = math.floor(policy.export_limit_kw / len(nodes) * 1000) / 1000
        shed = tuple(x for x in policy.shed_order if load_node.get(x) == n.node_id)
        reserve = policy.soc_floor_pct if soc_reserve_pct is None else soc_reserve_pct
        out.append(Envelope(n.node_id, imp, exp, reserve, shed))
    return tuple(out)


def dispatch(
    image: ProcessImage,
    policy: Policy,
    reserve_kwh: float = 0.0,
    shed_kw: Mapping[str, float] | None = None,
    soc_reserve_pct: float | None = None,
    overridden: Collection[str] = (),
    follow: PlanStep | None = None,
) -> DispatchResult:
    """One cycle. `reserve_kwh`: battery energy the forecast says the coming peak needs;
    `shed_kw`: the power each currently shed load drew when it was shed; `overridden`: loads
    an operator holds on or off (no controller sheds or restores them); `follow`: the committed
    plan's step now (`core.plan_inputs.plan_step`; None: no fresh plan, the reactive rules)."""
    if overridden:
        policy = replace(policy, shed_order=tuple(x for x in policy.shed_order if x not in overridden))
    base = image.base_kw
    plan = c.Plan(base_kw=base)
    plan = c.import_limit(image, policy, plan, follow)
    plan = c.export_limit(image, policy, plan)
    plan = c.battery_balancing(
        image, policy, plan, reserve_kwh=reserve_kwh if policy.reserve_forecast else 0.0, follow=follow
    )
    plan = c.load_shedding(image, policy, plan)
    plan = c.pv_curtailment(image, policy, plan)
    plan = c.restore(image, policy, plan, dict(shed_kw or {}), follow)
    setpoints = tuple(
        [(k, d.kw, d.controller, d.reason) for k, d in sorted(plan.batteries.items())]
        + [(k, d.kw, d.controller, d.reason) for k, d in sorted(plan.pvs.items())]
    )
    relays = tuple(
        (k, r.closed, r.controller, r.reason, r.expected_kw) for k, r in sorted(plan.relays.items())
    )
    inputs = {
        "zone_import_kw": round(image.grid_kw, 3),
        "base_kw": round(base, 3),
        "import_limit_kw": policy.import_limit_kw,
        "export_limit_kw": policy.export_limit_kw,
        "battery_kw": round(plan.battery_kw, 3),
        "reserve_kwh": round(reserve_kwh, 3),
        "complete": 1.0 if image.complete else 0.0,
    }
    if follow is not None:
        inputs.update(
            plan_version=float(follow.version), plan_ceiling_kw=round(c.ceiling_kw(policy, follow), 3)
        )
    return DispatchResult(setpoints, relays, envelopes(image, policy, soc_reserve_pct, follow), inputs)


def command_fields(result: DispatchResult, cycle: int) -> dict[str, Any]:
    """The fields of the `dispatch` command that commits this result (msgpack-ready)."""
    return {
        "cycle": cycle,
        "setpoints": [{"device_id": d, "kw": kw, "controller": ctl, "reason": why[:200]}
                      for d, kw, ctl, why in result.setpoints],
        "relays": [{"load": ld, "closed": closed, "controller": ctl, "reason": why[:200], "expected_kw": exp}
                   for ld, closed, ctl, why, exp in result.relays],
        "envelopes": [{"node_id": e.node_id, "import_limit_kw": e.import_limit_kw,
                       "export_limit_kw": e.export_limit_kw, "soc_reserve_pct": e.soc_reserve_pct,
                       "shed": list(e.shed)} for e in result.envelopes],
        "inputs": dict(result.inputs),
    }  # fmt: skip
