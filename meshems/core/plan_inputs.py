"""What the leader plans from: the planner's request built from the zone state (the nodes'
replicated forecasts, each battery's reported SoC and limits, the policy's prices and SoC
targets), and whether the batteries still follow the committed plan.

Pure: the zone state and the time come in as arguments. The leader and the control
benchmark both build requests here, so the benchmark measures what nodes run.
"""

from __future__ import annotations

import math

from meshems.core.cluster import ZoneState
from meshems.core.plan_records import PlanRecord
from meshems.core.planner import BatteryModel, PlanRequest, SocTarget
from meshems.core.policy import Policy, soc_target_minute
from meshems.core.price_series import price_at
from meshems.core.process_image import ProcessImage

STEP_S = 900.0
DAY_S = 86400.0
#: a battery this far (SoC percentage points) from its planned SoC asks for a new plan
SOC_BAND_PCT = 8.0
#: the share of the step under way's base load taken from the meters now (the rest: the forecast)
STEP0_READING_WEIGHT = 0.5


def _forecast_at(values: tuple[float, ...], start_s: float, t_s: float) -> float | None:
    """A node's forecast value at `t_s`; past its end, the value a day earlier (the
    forecast is a day long, the horizon may be longer)."""
    if not values:
        return None
    i = math.floor((t_s - start_s) / STEP_S)
    day = round(DAY_S / STEP_S)
    while i >= len(values) and i >= day:
        i -= day
    return values[i] if 0 <= i < len(values) else None


def plan_request(
    state: ZoneState, image: ProcessImage, policy: Policy, wall_s: float, peak_so_far_kw: float = 0.0
) -> tuple[PlanRequest | None, str]:
    """The request for a plan from now (the current quarter-hour), and which forecasts it
    used; None (with the reason) when no node has a forecast yet or no battery reports.
    `peak_so_far_kw`: today's highest quarter-hour import so far (peak mode: shaving below
    it buys nothing)."""
    start = math.floor(wall_s / STEP_S) * STEP_S
    n = max(1, round(policy.plan_horizon_h * 3600 / STEP_S))
    forecasts = [f for k, f in sorted(state.node_forecasts.items()) if k in state.members]
    batteries = []
    for b in image.batteries:
        dev = state.devices.get(b.id)
        if not b.ok or b.capacity_kwh <= 0 or dev is None:
            continue
        # within what the zone committed for the device, as every dispatch is
        charge, discharge = (
            min(b.max_charge_kw, max(0.0, -dev.min_kw)),
            min(b.max_discharge_kw, max(0.0, dev.max_kw)),
        )
        batteries.append(BatteryModel(b.id, b.node, b.capacity_kwh, b.soc_pct, charge, discharge,
                                      policy.soc_floor_pct, policy.soc_ceiling_pct))  # fmt: skip
    if not forecasts:
        return None, "no node has published a forecast yet"
    if not batteries:
        return None, "no battery reports"
    covered = {f.node_id for f in forecasts}
    # a node without a forecast counts with its base load now, held flat
    flat = sum(n_.grid_kw + n_.battery_kw for n_ in image.nodes if n_.node_id not in covered)
    base = []
    for i in range(n):
        t = start + i * STEP_S
        base.append(flat + sum(_forecast_at(f.kw, f.start_s, t) or 0.0 for f in forecasts))
    # the step under way: the meters now and its forecast weigh equally. A reading is one
    # sample of a load with minute-scale noise, and peak mode bills the quarter's mean: from the
    # reading alone, a high sample at a step the batteries can only just cover raised the
    # plan's (and so the day's) peak; from the forecast alone, a load that just changed is missed
    now = [_forecast_at(f.kw, f.start_s, start) for f in forecasts]
    if all(v is not None for v in now):
        base[0] = STEP0_READING_WEIGHT * image.base_kw + (1.0 - STEP0_READING_WEIGHT) * base[0]
    else:
        base[0] = image.base_kw
    targets = []
    for at, pct in policy.soc_targets:
        minute = soc_target_minute(at)
        if minute is None:
            continue
        t = math.floor(start / DAY_S) * DAY_S + minute * 60
        while t <= start:
            t += DAY_S
        step = round((t - start) / STEP_S) - 1
        if step < n:
            targets.append(SocTarget(step, pct))
    steps = [start + i * STEP_S for i in range(n)]
    imp = _prices(policy.import_price_series, policy.price_series_start_s, policy.import_price, steps)
    exp = _prices(policy.export_price_series, policy.price_series_start_s, policy.export_price, steps)
    basis = "; ".join(f"{f.node_id}: {f.basis}" for f in forecasts)
    request = PlanRequest(
        start, tuple(round(x, 3) for x in base), tuple(batteries), policy.mode, STEP_S,
        policy.import_limit_kw, policy.export_limit_kw, imp, exp, tuple(targets), policy.cycle_cost_per_kwh,
        max(0.0, peak_so_far_kw) if math.isfinite(peak_so_far_kw) else 0.0,
    )  # fmt: skip
    return request, basis


def _prices(
    series: tuple[float, ...], start_s: float, daily: tuple[float, ...], steps: list[float]
) -> tuple[float, ...]:
    """Each step's price: the dated series where it covers the step, else the daily profile
    (`core.price_series.price_at`); () when the policy has no prices."""
    if not series and not daily:
        return ()
    return tuple(price_at(series, start_s, daily, t) or 0.0 for t in steps)


def soc_off_plan(
    plan: PlanRecord, image: ProcessImage, wall_s: float, band_pct: float = SOC_BAND_PCT
) -> bool:
    """Whether a battery's SoC left the plan's band (its planned SoC, linearly between steps)."""
    i = plan.step_at(wall_s)
    if i is None:
        return True
    share = (wall_s - plan.start_s - i * plan.step_s) / plan.step_s
    for b in image.batteries:
        pb = plan.battery(b.id)
        if pb is None or not b.ok:
            continue
        expected = pb.soc_pct[i] + share * (pb.soc_pct[i + 1] - pb.soc_pct[i])
        if abs(b.soc_pct - expected) > band_pct:
            return True
    return False
