"""Control quality on realistic days: the node's planning and dispatch path against the
perfect-foresight LP optimum, for three differently shaped sites over days across a year.

Sites: an office, a household and a farm (`meshems.sim.load_data`: BDEW G1/H0/L0-like years,
with PV from `pv_year`), each with its own battery. Each test day starts at 00:00 UTC with
the battery at 50 %. Every quarter-hour (and when the battery leaves the plan's SoC band) the
site's node forecasts its base load from its own history only (`base_forecast`: a load model
fitted on the 8 weeks before the day, less the PV's clear-sky forecast; no peeking), the
leader builds the request (`plan_request`), plans (`planner.plan`) and commits it (`apply` of
the `plan` command); every minute dispatch runs (`dispatch(..., follow=plan_step(...))`) on a base load with
minute-scale noise around the quarter-hour means, and a battery model follows the setpoint.
These are the functions the node runs (`core.node_plan`, `core.node_lead`); the loop around
them (the clock, a one-node zone state, the battery) is the benchmark's.

Peaks are billing peaks: the highest quarter-hour mean import of the day. The optimum is
the same planner LP given the day's real quarter-hour base load (the planner's peak matches
an independent scipy LP in tests/core/test_planner.py); it must also end the day with at
least the controlled run's SoC, so neither spends energy the other keeps (a node plans a day
ahead from every moment, so in the evening it charges for tomorrow's peak; each UTC day is
billed on its own). The table's `free` column is the day alone with the battery free to end
at its floor: the limit that cannot be met is set from it.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, replace
from datetime import date, timedelta
from typing import Any

import numpy as np

from meshems.core.cluster import ZoneState, apply
from meshems.core.commands import encode
from meshems.core.day_peak import DayPeak
from meshems.core.dispatch import dispatch
from meshems.core.forecast import fit
from meshems.core.load_history import LoadHistory
from meshems.core.node_lead import track_kw
from meshems.core.node_plan import forecast_command, plan_command
from meshems.core.plan_inputs import plan_request, soc_off_plan
from meshems.core.plan_records import plan_step
from meshems.core.planner import BatteryModel, PlanRequest, SocTarget, plan
from meshems.core.policy import Policy
from meshems.core.process_image import DeviceInfo, image_from_readings
from meshems.core.pv_forecast import base_forecast
from meshems.sim.device_physics import Battery
from meshems.sim.load_data import holidays, pv_year, synthetic_year

STEP_S = 900.0
DAY_S = 86400.0
QH = 96
MIN_PER_QH = 15
TRAIN_DAYS = 56


@dataclass(frozen=True)
class SiteSpec:
    name: str
    shape: str
    seed: int
    peak_kw: float  # the year's highest load
    pv_kwp: float
    capacity_kwh: float
    power_kw: float
    holiday: int  # a working day off in its year (`load_data.holidays`): the holiday row's day

    def days_off(self) -> tuple[str, ...]:
        """Its holiday calendar as the policy's `days_off` (the operator lists the site's)."""
        return tuple(str(date(1970, 1, 1) + timedelta(days=d)) for d in holidays(self.seed, START_WEEKDAY))


START_WEEKDAY = 3  # day 0 is Unix day 0, a Thursday
SITES = (
    SiteSpec("office", "office", 11, 60.0, 30.0, 60.0, 25.0, 285),
    SiteSpec("household", "household", 12, 9.0, 6.0, 10.0, 5.0, 90),
    SiteSpec("farm", "farm", 13, 40.0, 25.0, 40.0, 15.0, 293),
)
#: a time-of-use tariff (UTC): night 0.18, day 0.30, evening peak 17-21 h 0.42 per kWh
TOU = tuple(0.18 if h < 6 else 0.42 if 17 <= h < 21 else 0.30 for h in range(24))
EXPORT_PRICE = (0.08,) * 24
DEVICES = [DeviceInfo("m", "meter", "n1", 0, 0), DeviceInfo("b", "battery", "n1", -1e3, 1e3)]


def site_load_pv(spec: SiteSpec) -> tuple[np.ndarray, np.ndarray]:
    """The site's load and PV (kW) per quarter-hour for a year; day 0 at t = 0."""
    load = synthetic_year(seed=spec.seed, shape=spec.shape, peak_kw=spec.peak_kw, start_weekday=START_WEEKDAY)
    return load, pv_year(seed=spec.seed, peak_kw=spec.pv_kwp)


def site_year(spec: SiteSpec) -> np.ndarray:
    """The site's base load (load - PV, kW) per quarter-hour for a year."""
    load, pv = site_load_pv(spec)
    return load - pv


def histories(load: np.ndarray, pv: np.ndarray, end: int) -> tuple[LoadHistory, LoadHistory]:
    """A node's load and PV histories as it would have recorded them up to step `end`."""
    out = []
    for series in (load, pv):
        h = LoadHistory()
        h.values = [float(v) for v in series[max(0, end - h.keep_steps) : end]]
        h.t0_s = (end - len(h.values)) * STEP_S
        out.append(h)
    return out[0], out[1]


def forecast_mae(spec: SiteSpec, first_day: int, days: int) -> float:
    """MAE of the node's base-load forecast (`base_forecast`: its load model refitted weekly on
    the trailing 8 weeks, less its PV forecast) over same time last week's, forecasts issued
    every 6 h for a day ahead."""
    load, pv = site_load_pv(spec)
    net = load - pv
    days_off = Policy(days_off=spec.days_off()).day_numbers_off()
    err_model = err_naive = 0.0
    model, fitted = None, -(10**9)
    for n in range(first_day * QH, (first_day + days) * QH, 24):
        if n - fitted >= 7 * QH:
            model = fit(load[n - TRAIN_DAYS * QH : n], (n - TRAIN_DAYS * QH) * STEP_S, step_s=STEP_S)
            fitted = n
        h_load, h_pv = histories(load, pv, n)
        f = base_forecast(h_load, h_pv, n * STEP_S, model, days_off)
        actual = net[n : n + QH]
        err_model += float(np.abs(f.kw - actual).sum())
        err_naive += float(np.abs(net[n - 7 * QH : n - 6 * QH] - actual).sum())
    return err_model / err_naive


def minute_noise(seed: int, n_qh: int) -> np.ndarray:
    """Multiplicative minute noise (AR(1), sd ~8 %) with a zero mean in every quarter-hour,
    so the quarter-hour means stay the data's."""
    rng = np.random.default_rng(seed)
    x = np.empty(n_qh * MIN_PER_QH)
    x[0] = 0.0
    e = rng.normal(0, 0.08 * math.sqrt(1 - 0.8**2), x.size)
    for i in range(1, x.size):
        x[i] = 0.8 * x[i - 1] + e[i]
    x = x.reshape(n_qh, MIN_PER_QH)
    return (x - x.mean(axis=1, keepdims=True)).ravel()


def _zone(spec: SiteSpec) -> ZoneState:
    devs = [{"id": "m", "kind": "meter", "min_kw": 0.0, "max_kw": 0.0},
            {"id": "b", "kind": "battery", "min_kw": -spec.power_kw, "max_kw": spec.power_kw}]  # fmt: skip
    data = encode("declare_node", "d", node_id="n1", raft="n1:1", api="n1:2", devices=devs)
    state, res = apply(ZoneState(), data, 1, 1)
    assert res.ok, res
    return state


def _commit(state: ZoneState, data: bytes) -> ZoneState:
    state, res = apply(state, data, 1, state.last_index + 1)
    if not res.ok:
        raise RuntimeError(f"{res.code}: {res.message}")
    return state


def run_day(
    spec: SiteSpec, year: np.ndarray, day: int, policy: Policy, model: Any, oracle: bool = False
) -> dict[str, Any]:
    """One day under the node's planning and dispatch path; per-minute imports, the plans made."""
    first = day * QH
    noise = minute_noise(spec.seed * 1000 + day, QH)
    base_min = np.repeat(year[first : first + QH], MIN_PER_QH) * (1 + noise)
    bat = Battery(spec.capacity_kwh, 50.0, spec.power_kw, spec.power_kw, efficiency=0.92,
                  soc_min_pct=policy.soc_floor_pct, soc_max_pct=policy.soc_ceiling_pct)  # fmt: skip
    state = _zone(spec)
    load, pv = site_load_pv(spec)
    history, pv_history = histories(load, pv, first)
    imports, plans, last_replan_min = [], 0, -999
    import_peak = DayPeak()  # the leader's view of the import's quarter-hour means
    for minute in range(QH * MIN_PER_QH):
        wall = day * DAY_S + minute * 60.0
        qh = minute // MIN_PER_QH
        readings = {
            "m": ("ok", {"power_kw": float(base_min[minute] - bat.power_kw)}),
            "b": ("ok", {"power_kw": bat.power_kw, "soc_pct": bat.soc_pct, "capacity_kwh": bat.capacity_kwh,
                         "max_charge_kw": bat.max_charge_kw, "max_discharge_kw": bat.max_discharge_kw}),
        }  # fmt: skip
        image = image_from_readings(DEVICES, readings)
        if policy.mode != "reactive":
            new_qh = minute % MIN_PER_QH == 0
            if new_qh:  # the node's quarter-hour duty: its history closes a step, it forecasts
                if qh > 0:
                    history, pv_history = histories(load, pv, first + qh)
                f = base_forecast(history, pv_history, wall, model, policy.day_numbers_off())
                if oracle:  # diagnosis only: the real coming day instead of the forecast
                    f = replace(f, kw=year[first + qh : first + qh + QH])
                data = forecast_command("n1", f, f"nf-{day}-{qh}")
                if data is not None:
                    state = _commit(state, data)
            off = (
                state.plan is not None
                and minute - last_replan_min >= 1
                and soc_off_plan(state.plan, image, wall)
            )
            if new_qh or state.plan is None or off:
                request, basis = plan_request(state, image, policy, wall, import_peak.value(wall))
                if request is not None:
                    p = plan(request)
                    plans += 1
                    last_replan_min = minute
                    version = (state.plan.version + 1) if state.plan is not None else 1
                    state = _commit(state, plan_command(p, version, f"plan-{version}", basis, wall))
        follow = plan_step(state.plan, wall) if policy.mode != "reactive" else None
        if follow is not None:  # as the leader does (core.node_lead.dispatch_once)
            follow = replace(follow, track_kw=track_kw(follow, import_peak.quarter(wall)))
        result = dispatch(image, policy, follow=follow)
        sp = {d: kw for d, kw, _, _ in result.setpoints}
        bat = bat.write_setpoint(sp.get("b", 0.0)).step(60.0)
        imports.append(float(base_min[minute] - bat.power_kw))
        # what the meter's 1 s samples of this minute average to (the node samples every cycle)
        import_peak.add(wall, imports[-1])
    imp = np.array(imports)
    return {
        "imports": imp,
        "qh": imp.reshape(QH, MIN_PER_QH).mean(axis=1),
        "plans": plans,
        "end_soc": bat.soc_pct,
    }


def optimum(spec: SiteSpec, year: np.ndarray, day: int, policy: Policy, end_soc: float | None = None) -> Any:
    """Perfect foresight: the planner LP on the day's real quarter-hour base load."""
    first = day * QH
    bm = BatteryModel("b", "n1", spec.capacity_kwh, 50.0, spec.power_kw, spec.power_kw,
                      policy.soc_floor_pct, policy.soc_ceiling_pct)  # fmt: skip
    steps = [day * DAY_S + i * STEP_S for i in range(QH)]
    hour = [int((t % DAY_S) // 3600) for t in steps]
    targets = (SocTarget(QH - 1, end_soc),) if end_soc is not None else ()
    base = tuple(float(x) for x in year[first : first + QH])
    req = PlanRequest(day * DAY_S, base, (bm,), policy.mode, STEP_S, policy.import_limit_kw,
                      policy.export_limit_kw,
                      tuple(TOU[h] for h in hour) if policy.mode == "tariff" else (),
                      tuple(EXPORT_PRICE[h] for h in hour) if policy.mode == "tariff" else (),
                      targets, policy.cycle_cost_per_kwh)  # fmt: skip
    return plan(req)


def cost(qh: np.ndarray, day: int) -> float:
    """The day's energy cost of quarter-hour mean imports under the TOU tariff."""
    out = 0.0
    for i, g in enumerate(qh):
        h = int(((day * DAY_S + i * STEP_S) % DAY_S) // 3600)
        out += (g * TOU[h] if g > 0 else g * EXPORT_PRICE[h]) * STEP_S / 3600
    return out


def bench_days(
    days: tuple[int, ...], sites: tuple[SiteSpec, ...] = SITES, holiday: bool = False
) -> list[dict[str, Any]]:
    """The table's rows: each site on each of `days`, and on its holiday too when `holiday`."""
    rows = []
    for spec in sites:
        year = site_year(spec)
        for day in (*days, spec.holiday) if holiday else days:
            first = day * QH
            load, _ = site_load_pv(spec)  # the node fits its model on its recorded load
            model = fit(
                load[first - TRAIN_DAYS * QH : first], (day - TRAIN_DAYS) * DAY_S, step_s=STEP_S, version=day
            )
            none_peak = float(year[first : first + QH].max())
            # the default (mode peak, no limit, no margin tuning) and the site's holidays
            peak_pol = Policy(days_off=spec.days_off())
            free = optimum(spec, year, day, peak_pol)  # the day alone, the battery free to end empty
            ctrl = run_day(spec, year, day, peak_pol, model)
            oracle = run_day(spec, year, day, peak_pol, model, oracle=True)
            # a node keeps energy for tomorrow's peak (its horizon is a day from now): the optimum
            # ends the day with at least as much stored, as in tariff mode
            opt = optimum(spec, year, day, peak_pol, end_soc=ctrl["end_soc"])
            opt_oracle = optimum(spec, year, day, peak_pol, end_soc=oracle["end_soc"])
            # a fixed limit the battery cannot hold all day: 30 % of the way below the optimum
            limit = round(free.peak_kw - 0.3 * (none_peak - free.peak_kw), 1)
            fixed = replace(peak_pol, import_limit_kw=limit)
            ctrl_fixed = run_day(spec, year, day, fixed, model)
            opt_fixed = optimum(spec, year, day, fixed, end_soc=ctrl_fixed["end_soc"])
            reactive = run_day(spec, year, day, replace(fixed, mode="reactive"), model)
            tariff = Policy(
                mode="tariff", import_price=TOU, export_price=EXPORT_PRICE, days_off=spec.days_off()
            )
            ctrl_tariff = run_day(spec, year, day, tariff, model)
            opt_tariff = optimum(spec, year, day, tariff, end_soc=ctrl_tariff["end_soc"])
            oracle_tariff = run_day(spec, year, day, tariff, model, oracle=True)
            opt_oracle_tariff = optimum(spec, year, day, tariff, end_soc=oracle_tariff["end_soc"])
            idle_cost = cost(year[first : first + QH], day)

            def reduction(peak: float, best: float, none_peak: float = none_peak) -> float:
                return (none_peak - peak) / max(1e-6, none_peak - best)

            rows.append({
                "site": spec.name, "day": day, "holiday": day == spec.holiday, "none_peak_kw": none_peak,
                "opt_peak_kw": opt.peak_kw, "peak_kw": float(ctrl["qh"].max()),
                "peak_reduction": reduction(float(ctrl["qh"].max()), opt.peak_kw),
                "oracle_reduction": reduction(float(oracle["qh"].max()), opt_oracle.peak_kw),
                "free_opt_peak_kw": free.peak_kw, "end_soc": ctrl["end_soc"],
                "charging_peak_over_none_kw": max(0.0, float(ctrl["qh"].max()) - none_peak),
                "limit_kw": limit, "fixed_peak_kw": float(ctrl_fixed["qh"].max()),
                "fixed_reduction": reduction(float(ctrl_fixed["qh"].max()), opt_fixed.peak_kw),
                "reactive_fixed_reduction": reduction(float(reactive["qh"].max()), opt_fixed.peak_kw),
                "idle_cost": idle_cost, "tariff_cost": cost(ctrl_tariff["qh"], day),
                "opt_cost": cost(np.array(opt_tariff.import_kw), day),
                "oracle_tariff_vs_optimum": cost(oracle_tariff["qh"], day)
                / cost(np.array(opt_oracle_tariff.import_kw), day),
                "plans": ctrl["plans"],
            })  # fmt: skip
    for r in rows:
        r.pop("imports", None)
        r["tariff_cost_vs_optimum"] = r["tariff_cost"] / r["opt_cost"] if r["opt_cost"] > 0 else math.nan
    return rows


def summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    med = statistics.median
    return {
        "peak_reduction_vs_optimum": round(med(r["peak_reduction"] for r in rows), 3),
        "peak_reduction_min": round(min(r["peak_reduction"] for r in rows), 3),
        "peak_reduction_oracle": round(med(r["oracle_reduction"] for r in rows), 3),
        "peak_reduction_unreachable_limit": round(med(r["fixed_reduction"] for r in rows), 3),
        "peak_reduction_unreachable_limit_reactive": round(
            med(r["reactive_fixed_reduction"] for r in rows), 3
        ),
        "charging_peak_days": sum(r["charging_peak_over_none_kw"] > 0.05 for r in rows),
        "tariff_cost_vs_optimum": round(med(r["tariff_cost_vs_optimum"] for r in rows), 4),
        "tariff_cost_vs_optimum_max": round(max(r["tariff_cost_vs_optimum"] for r in rows), 4),
        "tariff_cost_vs_optimum_oracle_max": round(max(r["oracle_tariff_vs_optimum"] for r in rows), 4),
        "days": len(rows),
    }


def print_table(rows: list[dict[str, Any]]) -> None:
    print(f"{'site':<10}{'day':>5}{'none':>7}{'opt':>7}{'ctrl':>7}{'red':>6}{'limit':>7}{'fixed':>7}"
          f"{'red':>6}{'react':>6}{'idle €':>8}{'tariff':>8}{'opt €':>8}{'ratio':>7}{'perf':>7}")  # fmt: skip
    for r in rows:
        day = f"{r['day']}{'*' if r.get('holiday') else ''}"
        print(f"{r['site']:<10}{day:>5}{r['none_peak_kw']:>7.1f}{r['opt_peak_kw']:>7.1f}{r['peak_kw']:>7.1f}"
              f"{r['peak_reduction']:>6.2f}{r['limit_kw']:>7.1f}{r['fixed_peak_kw']:>7.1f}{r['fixed_reduction']:>6.2f}"
              f"{r['reactive_fixed_reduction']:>6.2f}{r['idle_cost']:>8.2f}{r['tariff_cost']:>8.2f}"
              f"{r['opt_cost']:>8.2f}{r['tariff_cost_vs_optimum']:>7.3f}"
              f"{r['oracle_tariff_vs_optimum']:>7.3f}")  # fmt: skip
