"""The zone planner: a receding-horizon battery schedule for the zone, one LP per call.

Pure and deterministic: (net load forecast, batteries, mode, limits, prices, SoC targets) ->
a `ZonePlan` of the zone's import target and each battery's power and SoC per step. No I/O,
clocks or threads; a bad request or a failed solve comes back as a status, never raised.
The LP itself (built as sparse arrays, solved by HiGHS) lives in `planner_lp`.

Peak mode is lexicographic: first the lowest peaks, one per UTC day of the horizon (the
billing peak of each day; only SoC targets outrank them), then the
small terms: wear per kWh discharged, a tiny cost per kWh imported (nothing is charged from
the grid that the peak does not need), a tiny reward per kWh held at the end of every step
(batteries discharge as late as they can). A plain two-stage solve (min P, then the small
terms with P <= P* + 1e-4 kW) was 3-4x slower on 50 batteries, nearly all in stage 1;
instead a tiny LP on the merged fleet bounds P* from below and one LP prices only the peak
above that bound, at a weight far above what the small terms could buy (`planner_lp.solve`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from meshems.core import planner_lp as lp

MODES = ("peak", "tariff", "self_consumption")
NO_LIMIT_KW = 1e9  # a limit at or above this is none
MAX_STEPS = 2016  # three weeks of quarter-hours
MAX_BATTERIES = 256
MAX_CELLS = 100_000  # batteries x steps
DAY_S = 86400.0  # the billing period of peak mode: each UTC day has its own peak
MAX_KW = 1e7  # any power or energy beyond this is a unit error, not a site
LIMIT_TOLERANCE_KW = 1e-3
PEAK_IMPORT_WEIGHT = 1e-2  # peak mode's tie-break cost per kWh imported
SELF_EXPORT_PENALTY = 0.01  # self-consumption: per kWh exported, so PV surplus goes to storage
TIE_WEIGHT = 1e-5  # per kWh of import and export, and of charge (times the price scale)
PENALTY = 1e4  # per kWh over the import cap or short of a target, times the price scale
PEAK_WEIGHT = 1e3  # peak mode: per kW of peak above the fleet's bound, times the price scale


@dataclass(frozen=True, slots=True)
class BatteryModel:
    id: str
    node_id: str
    capacity_kwh: float
    soc_pct: float  # now
    max_charge_kw: float
    max_discharge_kw: float
    soc_min_pct: float = 10.0
    soc_max_pct: float = 95.0
    efficiency: float = 0.92  # round trip; one way = sqrt


@dataclass(frozen=True, slots=True)
class SocTarget:
    step: int  # index into the horizon: SoC at the END of this step
    pct: float  # at least this SoC (capped at each battery's soc_max_pct)


@dataclass(frozen=True, slots=True)
class PlanRequest:
    start_s: float  # unix time of step 0's start
    base_kw: tuple[float, ...]  # zone net load forecast per step (loads - PV), kW; may be negative
    batteries: tuple[BatteryModel, ...]
    mode: str = "peak"  # "peak" | "tariff" | "self_consumption"
    step_s: float = 900.0
    import_limit_kw: float = NO_LIMIT_KW  # a hard ceiling (1e9 = none)
    export_limit_kw: float = NO_LIMIT_KW
    import_price: tuple[float, ...] = ()  # per step, per kWh (tariff mode; empty -> flat 1.0)
    export_price: tuple[float, ...] = ()  # per step, per kWh paid for export (empty -> 0)
    soc_targets: tuple[SocTarget, ...] = ()
    cycle_cost_per_kwh: float = 0.005  # battery wear per kWh discharged
    peak_floor_kw: float = 0.0  # peak mode: no value in shaving today below this (already reached)


@dataclass(frozen=True, slots=True)
class ZonePlan:
    start_s: float
    step_s: float
    mode: str
    status: str  # "optimal" | "limit_unreachable" | "infeasible" | "solver_failed"
    import_kw: tuple[float, ...]  # target zone grid import per step (negative = export)
    battery_kw: tuple[tuple[str, tuple[float, ...]], ...]  # per battery id, + discharge / - charge
    soc_pct: tuple[tuple[str, tuple[float, ...]], ...]  # per battery id, N+1 values
    peak_kw: float  # max planned import
    cost: float  # planned energy cost (tariff prices; other modes: import at a flat 1.0)
    reason: str  # one sentence for `meshems explain` / `plan show`

    def _step(self, t_s: float) -> int | None:
        if not self.import_kw:
            return None
        k = (t_s - self.start_s) / self.step_s
        return int(k) if math.isfinite(k) and 0 <= k < len(self.import_kw) else None

    def target_at(self, t_s: float) -> float | None:
        """The planned import for the step containing t_s (None outside the horizon)."""
        k = self._step(t_s)
        return None if k is None else self.import_kw[k]

    def battery_at(self, battery_id: str, t_s: float) -> float | None:
        k = self._step(t_s)
        powers = dict(self.battery_kw).get(battery_id)
        return None if k is None or powers is None else powers[k]


def _finite(x: Any, bound: float = MAX_KW) -> bool:
    ok = isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)
    return ok and math.isfinite(x) and abs(x) <= bound


def _series_problems(name: str, values: Any, n: int, allow_empty: bool) -> list[str]:
    if not isinstance(values, tuple | list):
        return [f"{name}: a sequence of numbers"]
    if not (allow_empty and len(values) == 0) and len(values) != n:
        return [f"{name}: {len(values)} values for {n} steps" + (" (or none)" if allow_empty else "")]
    bad = [i for i, x in enumerate(values) if not _finite(x)]
    return [f"{name}[{bad[0]}]: a finite number (at most {MAX_KW:g} in size)"] if bad else []


def _battery_problems(i: int, b: Any, seen: set[str]) -> list[str]:
    where = f"batteries[{i}]"
    if not isinstance(b, BatteryModel):
        return [f"{where}: a BatteryModel"]
    out = []
    if not isinstance(b.id, str) or not b.id or b.id in seen:
        out.append(f"{where}.id: a non-empty id, unique in the request")
    seen.add(str(b.id))
    for name in ("capacity_kwh", "soc_pct", "max_charge_kw", "max_discharge_kw", "soc_min_pct",
                 "soc_max_pct", "efficiency"):  # fmt: skip
        if not _finite(getattr(b, name)):
            out.append(f"{where}.{name}: a finite number")
    if out:
        return out
    if b.capacity_kwh <= 0:
        out.append(f"{where}.capacity_kwh: must be > 0")
    if not 0 <= b.soc_pct <= 100:
        out.append(f"{where}.soc_pct: 0 to 100")
    if b.max_charge_kw < 0 or b.max_discharge_kw < 0:
        out.append(f"{where}.max_charge_kw, max_discharge_kw: must not be negative")
    if not 0 <= b.soc_min_pct < b.soc_max_pct <= 100:
        out.append(f"{where}.soc_min_pct, soc_max_pct: 0 <= soc_min_pct < soc_max_pct <= 100")
    if not 0.5 <= b.efficiency <= 1:
        out.append(f"{where}.efficiency: 0.5 to 1 (round trip)")
    return out


def plan_problems(req: PlanRequest) -> list[str]:
    """Why this request cannot be planned (empty when it can), each naming its field."""
    out: list[str] = []
    if req.mode not in MODES:
        out.append(f"mode: one of {', '.join(MODES)}")
    if not _finite(req.start_s, 1e12):
        out.append("start_s: a finite unix time")
    if not _finite(req.step_s, 86400.0) or req.step_s < 1.0:
        out.append("step_s: 1 to 86400 seconds")
    n = len(req.base_kw) if isinstance(req.base_kw, tuple | list) else 0
    if not 1 <= n <= MAX_STEPS:
        out.append(f"base_kw: 1 to {MAX_STEPS} steps")
    out += _series_problems("base_kw", req.base_kw, n, allow_empty=False)
    out += _series_problems("import_price", req.import_price, n, allow_empty=True)
    out += _series_problems("export_price", req.export_price, n, allow_empty=True)
    for name in ("import_limit_kw", "export_limit_kw", "cycle_cost_per_kwh", "peak_floor_kw"):
        value = getattr(req, name)
        if not _finite(value, 1e12) or value < 0:
            out.append(f"{name}: a finite number, not negative")
    if not isinstance(req.batteries, tuple | list) or len(req.batteries) > MAX_BATTERIES:
        out.append(f"batteries: at most {MAX_BATTERIES}")
    else:
        seen: set[str] = set()
        for i, b in enumerate(req.batteries):
            out += _battery_problems(i, b, seen)
        if len(req.batteries) * n > MAX_CELLS:
            out.append(f"batteries x base_kw steps: at most {MAX_CELLS}")
    for i, t in enumerate(req.soc_targets if isinstance(req.soc_targets, tuple | list) else [None]):
        if not isinstance(t, SocTarget):
            out.append(f"soc_targets[{i}]: a SocTarget")
        elif isinstance(t.step, bool) or not isinstance(t.step, int) or not 0 <= t.step < max(n, 1):
            out.append(f"soc_targets[{i}].step: a step of the horizon, 0 to {n - 1}")
        elif not _finite(t.pct) or not 0 <= t.pct <= 100:
            out.append(f"soc_targets[{i}].pct: 0 to 100")
    return out


def _problem(req: PlanRequest) -> lp.Problem:
    n = len(req.base_kw)
    base = np.asarray(req.base_kw, dtype=np.float64)
    bats = req.batteries
    cap = np.array([b.capacity_kwh for b in bats], dtype=np.float64)
    e0 = np.array([b.soc_pct for b in bats], dtype=np.float64) / 100 * cap
    lo = np.array([b.soc_min_pct for b in bats], dtype=np.float64) / 100 * cap
    hi = np.array([b.soc_max_pct for b in bats], dtype=np.float64) / 100 * cap
    price = np.asarray(req.import_price or [1.0] * n, dtype=np.float64)
    paid = np.asarray(req.export_price or [0.0] * n, dtype=np.float64)
    scale = max(1.0, float(np.abs(price).max()), float(np.abs(paid).max()), req.cycle_cost_per_kwh)
    wear = req.cycle_cost_per_kwh
    if req.mode == "peak":
        imp, exp_ = np.full(n, PEAK_IMPORT_WEIGHT), np.zeros(n)
        wear += 2 * PEAK_IMPORT_WEIGHT  # discharging never pays for itself through the import term
        keep = PEAK_IMPORT_WEIGHT / (2 * n)  # below the import cost: holding never buys grid charge
        split = 0.1 * PEAK_IMPORT_WEIGHT
    elif req.mode == "tariff":  # export valued at most at the import price: no flow both ways
        imp, exp_ = price + TIE_WEIGHT * scale, np.minimum(paid, price) - TIE_WEIGHT * scale
        keep, split = 0.5 * TIE_WEIGHT * scale / n, TIE_WEIGHT * scale
    else:
        imp, exp_ = np.ones(n), np.full(n, -SELF_EXPORT_PENALTY)
        keep, split = 0.5 * TIE_WEIGHT / n, TIE_WEIGHT
    steps = np.array([t.step for t in req.soc_targets], dtype=np.int64)
    target = np.array(
        [[min(t.pct, b.soc_max_pct) / 100 * b.capacity_kwh for b in bats] for t in req.soc_targets],
        dtype=np.float64,
    ).reshape(len(steps), len(bats))

    # The export cap's slack is the PV curtailment dispatch will do. It costs only a little
    # (on top of undoing its export reward), less than a battery's losses would if it charged
    # and discharged in one step to burn surplus, which the LP could otherwise choose.
    eff = np.array([b.efficiency for b in bats], dtype=np.float64)
    charge = TIE_WEIGHT * scale
    burn = (wear * eff + charge) / np.maximum(1.0 - eff, 1e-12)
    over = 0.5 * float(burn.min()) if eff.size and eff.min() < 1.0 else scale

    def cap_kw(limit: float) -> float:
        return math.inf if limit >= NO_LIMIT_KW else float(limit)

    return lp.Problem(
        base_kw=base,
        step_h=req.step_s / 3600,
        e0_kwh=e0,
        e_min_kwh=np.minimum(lo, e0),  # outside the window: only moving towards it
        e_max_kwh=np.maximum(hi, e0),
        max_charge_kw=np.array([b.max_charge_kw for b in bats], dtype=np.float64),
        max_discharge_kw=np.array([b.max_discharge_kw for b in bats], dtype=np.float64),
        eta=np.sqrt(eff),
        import_weight=imp,
        export_weight=exp_,
        discharge_weight=wear,
        charge_weight=charge,
        split_weight=split,
        keep_reward=keep,
        import_cap_kw=cap_kw(req.import_limit_kw),
        export_cap_kw=cap_kw(req.export_limit_kw),
        export_over_weight=over,
        target_step=steps,
        target_kwh=target,
        penalty=PENALTY * scale * max(1.0, 3600 / req.step_s),  # a target outranks its peak
        peak=req.mode == "peak",
        peak_weight=PEAK_WEIGHT * scale,
        peak_floor_kw=np.array([float(req.peak_floor_kw)]),
        day_of_step=billing_days(req.start_s, req.step_s, n),
        peak_day_weight=day_weights(req.start_s, req.step_s, n),
    )


def billing_days(start_s: float, step_s: float, n: int) -> np.ndarray:
    """(n,) each step's billing day (a UTC day), 0 for the day of `start_s`."""
    t = start_s + np.arange(n) * step_s
    return (np.floor(t / DAY_S) - math.floor(start_s / DAY_S)).astype(np.int64)


def day_weights(start_s: float, step_s: float, n: int) -> np.ndarray:
    """(D,) what a kW of each billing day's peak is worth in the plan: today's 1; a later day
    the share of it the horizon covers. A day seen only in part has its peak still ahead
    unseen: its few hours of night would otherwise weigh as much as today's whole peak, and
    the plan would spend today's energy shaving them (its peak crept up at every replan)."""
    days = billing_days(start_s, step_s, n)
    per_day = round(DAY_S / step_s)
    w = np.bincount(days).astype(np.float64) / per_day  # at most a day of steps each
    w[0] = 1.0
    return w


def energy_cost(req: PlanRequest, import_kw: np.ndarray) -> float:
    """Import at the tariff's prices (flat 1.0 outside tariff mode) less export at its price."""
    n = len(import_kw)
    price = np.asarray(req.import_price if req.mode == "tariff" and req.import_price else [1.0] * n)
    paid = np.asarray(req.export_price or [0.0] * n, dtype=np.float64)
    h = req.step_s / 3600
    return float((price * np.maximum(import_kw, 0) - paid * np.maximum(-import_kw, 0)).sum() * h)


def _clock(t_s: float) -> str:
    minutes = int(t_s // 60) % 1440
    return f"{minutes // 60:02d}:{minutes % 60:02d} UTC"


def reason_for(req: PlanRequest, p: lp.Problem, sol: lp.Solution, imports: np.ndarray) -> str:
    """One sentence: what the plan does and, when it falls short, where."""
    if sol.status != "optimal":
        return f"solver failed ({sol.status}: {sol.detail}): the plan holds every battery at 0 kW"
    h, base = p.step_h, p.base_kw
    out_kwh = float(sol.discharge_kw.sum() * h)
    in_kwh = float(sol.charge_kw.sum() * h)
    moves = f"batteries charge {in_kwh:.1f} kWh and discharge {out_kwh:.1f} kWh"
    active = np.flatnonzero((sol.discharge_kw - sol.charge_kw).sum(axis=0) > 0.01)
    if active.size:
        first, last = req.start_s + active[0] * req.step_s, req.start_s + (active[-1] + 1) * req.step_s
        days = int(last // 86400) - int(first // 86400)
        until = _clock(last) if days == 0 else f"{_clock(last)[:5]} +{days} d UTC"
        moves += f" (discharging {_clock(first)[:5]}-{until})"
    if req.mode == "peak":
        text = f"peak mode: planned peak {imports.max():.1f} kW against {base.max():.1f} kW without batteries"
        if math.isfinite(p.import_cap_kw):
            met = imports.max() <= p.import_cap_kw + LIMIT_TOLERANCE_KW
            text += f", the import limit {p.import_cap_kw:.1f} kW " + ("met" if met else "out of reach")
    elif req.mode == "tariff":
        text = f"tariff mode: planned cost {energy_cost(req, imports):.2f} against "
        text += f"{energy_cost(req, base):.2f} without batteries"
    else:
        own = float(np.maximum(imports, 0).sum() * h)
        text = f"self-consumption mode: planned import {own:.1f} kWh against "
        text += f"{float(np.maximum(base, 0).sum() * h):.1f} kWh without batteries"
    notes = [moves]
    over = imports - p.import_cap_kw
    if req.mode != "peak" and over.max() > LIMIT_TOLERANCE_KW:
        notes.append(f"import over the limit by up to {over.max():.1f} kW from {_clock(_first(req, over))}")
    export_over = -imports - p.export_cap_kw
    if export_over.max() > LIMIT_TOLERANCE_KW:
        notes.append(
            f"export over the limit by up to {export_over.max():.1f} kW from "
            f"{_clock(_first(req, export_over))} (for PV curtailment to take)"
        )
    short = sol.target_short_kwh
    for k in np.flatnonzero(short.max(axis=1, initial=0.0) > 1e-3) if short.size else ():
        who = ", ".join(b.id for b, s in zip(req.batteries, short[k], strict=True) if s > 1e-3)
        t = req.soc_targets[k]
        notes.append(f"SoC target {t.pct:g} % at step {t.step} missed by {short[k].sum():.1f} kWh ({who})")
    return f"{text}; {'; '.join(notes)}"


def _first(req: PlanRequest, over: np.ndarray) -> float:
    return req.start_s + int(np.flatnonzero(over > LIMIT_TOLERANCE_KW)[0]) * req.step_s


def plan(req: PlanRequest) -> ZonePlan:
    """The plan for this request; bad requests and failed solves come back as a status."""
    problems = plan_problems(req)
    if problems:
        reason = "bad plan request: " + "; ".join(problems[:5])
        return ZonePlan(req.start_s, req.step_s, req.mode, "infeasible", (), (), (), 0.0, 0.0, reason)
    problem = _problem(req)
    sol = lp.solve(problem)
    net = sol.discharge_kw - sol.charge_kw  # (B, N)
    base = problem.base_kw
    imports = base - net.sum(axis=0)
    ids = [b.id for b in req.batteries]
    soc = sol.energy_kwh / np.array([b.capacity_kwh for b in req.batteries]).reshape(-1, 1) * 100
    over = float(imports.max()) - problem.import_cap_kw
    if sol.status != "optimal":
        status = "solver_failed"
    elif over > LIMIT_TOLERANCE_KW:
        status = "limit_unreachable"
    else:
        status = "optimal"
    return ZonePlan(
        start_s=req.start_s,
        step_s=req.step_s,
        mode=req.mode,
        status=status,
        import_kw=tuple(imports.tolist()),
        battery_kw=tuple((i, tuple(row.tolist())) for i, row in zip(ids, net, strict=True)),
        soc_pct=tuple((i, tuple(row.tolist())) for i, row in zip(ids, soc, strict=True)),
        peak_kw=float(imports.max()),
        cost=energy_cost(req, imports),
        reason=reason_for(req, problem, sol, imports),
    )
