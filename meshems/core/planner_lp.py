"""The zone planner's linear program: sparse arrays in, HiGHS solve, schedules out.

Pure computation: numpy and the HiGHS solver only, no I/O, clocks or threads (HiGHS runs
single-threaded inside the call, with a fixed seed and its own time limit). It knows
nothing of requests or plans; `meshems.core.planner` turns those into a `Problem`. How the
peak is made to come first is in `solve`'s docstring.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import highspy
import numpy as np

#: per solve, on HiGHS's own clock; a solve that hits it is reported, never raised
TIME_LIMIT_S = 5.0
#: the peak may exceed the fleet's lower bound by this much at no cost (kW, + relative)
PEAK_TOLERANCE_KW = 1e-4
PEAK_TOLERANCE_REL = 1e-7
# `highspy.Highs` (the Python wrapper) enables callbacks in its constructor, which prints the
# HiGHS banner to stdout before output_flag can be cleared (it would break `-o json`); its base
# class is the plain binding. Older highspy releases have no such name and a quiet `Highs`.
_SOLVER = getattr(highspy, "_Highs", None) or highspy.Highs
_INF = highspy.kHighsInf


@dataclass(frozen=True, slots=True)
class Problem:
    """One horizon of N steps and B batteries; weights are per kWh unless said otherwise."""

    base_kw: np.ndarray  # (N,) zone import with every battery at 0
    step_h: float
    e0_kwh: np.ndarray  # (B,) stored energy now
    e_min_kwh: np.ndarray  # (B,) the SoC window in energy (already widened to hold e0)
    e_max_kwh: np.ndarray
    max_charge_kw: np.ndarray
    max_discharge_kw: np.ndarray
    eta: np.ndarray  # (B,) one-way efficiency
    import_weight: np.ndarray  # (N,) cost of importing
    export_weight: np.ndarray  # (N,) reward for exporting (negative: a penalty)
    discharge_weight: float  # wear, per kWh out of the battery
    charge_weight: float  # per kWh into the battery (a tie-break)
    split_weight: float  # per kWh at more than half a battery's power (spreads work across batteries)
    keep_reward: float  # per kWh stored at the end of each step
    import_cap_kw: float  # a hard cap with a penalised slack (inf: none; unused in peak mode)
    export_cap_kw: float  # with a slack that stands for PV curtailment (the planner does not curtail)
    export_over_weight: float  # per kWh of that slack, on top of undoing its export reward
    target_step: np.ndarray  # (K,) step whose end the target is for
    target_kwh: np.ndarray  # (K, B) at least this energy stored then (soft)
    penalty: float  # per kWh of import over its cap or of target shortfall
    peak: bool  # peak mode: the peaks come first (see `solve`)
    peak_weight: float = 0.0  # per kW of the days' peaks above the fleet's lower bound
    #: (D,) peak mode: no value in shaving a day below this (its peak so far); one entry per
    #: billing day of the horizon, which `day_of_step` (N,) indexes (empty: one day)
    peak_floor_kw: np.ndarray = field(default_factory=lambda: np.zeros(1))
    day_of_step: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    #: (D,) what a kW of each day's peak counts for (empty: 1 each); see `day_weights`
    peak_day_weight: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dispose: bool = False  # energy may vanish from storage (the aggregated fleet's relaxation)

    def days(self) -> np.ndarray:
        """(N,) each step's billing day, 0-based."""
        if self.day_of_step.size == self.base_kw.size:
            return self.day_of_step.astype(np.int64)
        return np.zeros(self.base_kw.size, dtype=np.int64)

    def n_days(self) -> int:
        return int(self.days().max(initial=0)) + 1

    def day_weights(self) -> np.ndarray:
        """(D,) the weight of each billing day's peak in their sum (1 each unless given)."""
        d = self.n_days() if self.peak else 1
        w = np.asarray(self.peak_day_weight, dtype=np.float64).reshape(-1)
        return w[:d] if w.size >= d else np.ones(d)


@dataclass(frozen=True, slots=True)
class Solution:
    status: str  # "optimal" | "time_limit" | "failed"
    detail: str  # HiGHS's words when not optimal
    charge_kw: np.ndarray  # (B, N)
    discharge_kw: np.ndarray  # (B, N)
    energy_kwh: np.ndarray  # (B, N + 1): now, then the end of each step
    target_short_kwh: np.ndarray  # (K, B)


class _Layout:
    """Column offsets: c, d, e (B x N each, battery-major), g+, g-, export slack, import
    slack (N each), the peaks P (one per billing day, D) and the excess of their sum over
    the bound Q (1), target slacks
    (K x B), then the upper halves of charge and discharge (B x N each: c and d are each the
    sum of two halves, the upper one dearer, so the LP does not leave one battery idle while
    another runs flat out)."""

    def __init__(self, n: int, b: int, k: int, days: int = 1) -> None:
        self.n, self.b, self.k, self.days = n, b, k, days
        self.c, self.d, self.e = 0, b * n, 2 * b * n
        self.gp = 3 * b * n
        self.gm = self.gp + n
        self.sx = self.gm + n
        self.si = self.sx + n
        self.p = self.si + n
        self.q = self.p + days
        self.st = self.q + 1
        self.ch = self.st + k * b
        self.dh = self.ch + b * n
        self.cols = self.dh + b * n


def _rows(parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], n_rows: int) -> tuple[np.ndarray, ...]:
    """CSR arrays (start, index, value) from (row, col, value) triples."""
    rows = np.concatenate([p[0] for p in parts])
    cols = np.concatenate([p[1] for p in parts])
    vals = np.concatenate([p[2] for p in parts])
    order = np.lexsort((cols, rows))
    rows, cols, vals = rows[order], cols[order], vals[order]
    start = np.zeros(n_rows + 1, dtype=np.int32)
    np.cumsum(np.bincount(rows, minlength=n_rows), out=start[1:])
    return start, cols.astype(np.int32), vals.astype(np.float64)


def build(p: Problem, peak_cap_kw: float = _INF) -> tuple[highspy.HighsLp, _Layout]:
    """The LP as one HighsLp; in peak mode Q >= sum(P) - `peak_cap_kw`."""
    n, b = p.base_kw.size, p.e0_kwh.size
    k = p.target_step.size
    days = p.n_days() if p.peak else 1
    lay = _Layout(n, b, k, days)
    h = p.step_h
    t = np.arange(n)
    bt = np.arange(b * n)  # battery-major index b * n + t
    bat, step = bt // n, bt % n
    eta = p.eta[bat]
    parts = []
    # energy: e[b,t] - e[b,t-1] - eta h c[b,t] + h/eta d[b,t] = (e0 if t == 0 else 0)
    parts.append((bt, lay.e + bt, np.ones(b * n)))
    later = bt[step > 0]
    parts.append((later, lay.e + later - 1, -np.ones(later.size)))
    parts.append((bt, lay.c + bt, -eta * h))
    parts.append((bt, lay.d + bt, h / eta))
    # balance: g+ - g- + sum(d - c) = base
    r0 = b * n
    parts.append((r0 + t, lay.gp + t, np.ones(n)))
    parts.append((r0 + t, lay.gm + t, -np.ones(n)))
    parts.append((r0 + step, lay.d + bt, np.ones(b * n)))
    parts.append((r0 + step, lay.c + bt, -np.ones(b * n)))
    # caps: g- - sx <= export cap; g+ - si <= import cap (peak mode: g+ - P[its day] <= 0)
    r1, r2 = r0 + n, r0 + 2 * n
    parts.append((r1 + t, lay.gm + t, np.ones(n)))
    parts.append((r1 + t, lay.sx + t, -np.ones(n)))
    parts.append((r2 + t, lay.gp + t, np.ones(n)))
    parts.append((r2 + t, lay.p + p.days() if p.peak else lay.si + t, -np.ones(n)))
    # targets: e[b, step_k] + st[k, b] >= target
    r3 = r0 + 3 * n
    kb = np.arange(k * b)
    tk, tb = kb // b, kb % b
    parts.append((r3 + kb, lay.e + tb * n + p.target_step[tk], np.ones(k * b)))
    parts.append((r3 + kb, lay.st + kb, np.ones(k * b)))
    # the peaks' excess over the bound: sum(w P) - Q <= cap
    r4 = r3 + k * b
    parts.append((np.full(days + 1, r4), np.arange(lay.p, lay.q + 1), np.r_[p.day_weights(), -1.0]))
    for lo, hi in ((lay.c, lay.ch), (lay.d, lay.dh)):  # the upper halves: the same coefficients
        halves = [(r, c, v, (c >= lo) & (c < lo + b * n)) for r, c, v in parts]
        parts += [(r[m], c[m] - lo + hi, v[m]) for r, c, v, m in halves if m.any()]
    start, index, value = _rows(parts, r4 + 1)

    energy = np.where(step == 0, p.e0_kwh[bat], 0.0)
    row_lower = np.concatenate(
        [
            np.full(b * n, -_INF) if p.dispose else energy,
            p.base_kw,
            np.full(2 * n, -_INF),
            p.target_kwh.reshape(-1),
            [-_INF],
        ]
    )
    row_upper = np.concatenate(
        [
            energy,
            p.base_kw,
            np.full(n, p.export_cap_kw),
            np.full(n, 0.0 if p.peak else p.import_cap_kw),
            np.full(k * b, _INF),
            [peak_cap_kw if p.peak else _INF],
        ]
    )
    lower = np.zeros(lay.cols)
    upper = np.full(lay.cols, _INF)
    upper[lay.c : lay.d] = upper[lay.ch : lay.dh] = p.max_charge_kw[bat] / 2
    upper[lay.d : lay.e] = upper[lay.dh :] = p.max_discharge_kw[bat] / 2
    lower[lay.e : lay.gp] = p.e_min_kwh[bat]
    upper[lay.e : lay.gp] = p.e_max_kwh[bat]
    # |g| is bounded by the base and the batteries (keeps g+ and g- from growing together)
    upper[lay.gp : lay.gm] = np.maximum(p.base_kw, 0) + p.max_charge_kw.sum()
    upper[lay.gm : lay.sx] = np.maximum(-p.base_kw, 0) + p.max_discharge_kw.sum()
    upper[lay.sx : lay.si] = upper[lay.gm : lay.sx]
    floor = np.zeros(days)
    given = np.asarray(p.peak_floor_kw, dtype=np.float64).reshape(-1)[:days]
    floor[: given.size] = given
    lower[lay.p : lay.q] = floor if p.peak else 0.0
    upper[lay.p : lay.q + 1] = _INF if p.peak else 0.0
    if p.peak:
        upper[lay.si : lay.p] = 0.0

    lp = highspy.HighsLp()
    lp.num_col_, lp.num_row_ = lay.cols, row_lower.size
    lp.col_cost_ = weighted_costs(p, lay)
    lp.col_lower_, lp.col_upper_ = lower, upper
    lp.row_lower_, lp.row_upper_ = row_lower, row_upper
    lp.a_matrix_.format_ = highspy.MatrixFormat.kRowwise
    lp.a_matrix_.num_col_, lp.a_matrix_.num_row_ = lay.cols, row_lower.size
    lp.a_matrix_.start_, lp.a_matrix_.index_, lp.a_matrix_.value_ = start, index, value
    return lp, lay


def weighted_costs(p: Problem, lay: _Layout) -> np.ndarray:
    h = p.step_h
    cost = np.zeros(lay.cols)
    cost[lay.c : lay.d] = p.charge_weight * h
    cost[lay.d : lay.e] = p.discharge_weight * h
    cost[lay.e : lay.gp] = -p.keep_reward
    cost[lay.gp : lay.gm] = p.import_weight * h
    cost[lay.gm : lay.sx] = -p.export_weight * h
    # net of the export reward it undoes (when exporting earns; never negative: it is unbounded)
    cost[lay.sx : lay.si] = (np.maximum(p.export_weight, 0.0) + p.export_over_weight) * h
    cost[lay.si : lay.p] = p.penalty * h
    cost[lay.q] = p.peak_weight
    cost[lay.st : lay.ch] = p.penalty
    cost[lay.ch : lay.dh] = (p.charge_weight + p.split_weight) * h
    cost[lay.dh :] = (p.discharge_weight + p.split_weight) * h
    return cost


def _solver() -> Any:
    s = _SOLVER()
    s.setOptionValue("output_flag", False)
    s.setOptionValue("threads", 1)
    s.setOptionValue("random_seed", 0)
    s.setOptionValue("time_limit", TIME_LIMIT_S)
    s.setOptionValue("solver", "simplex")
    return s


def _run(s: Any, lp: highspy.HighsLp) -> str | None:
    """None when optimal, else HiGHS's words for what happened."""
    if s.passModel(lp) == highspy.HighsStatus.kError:
        return "HiGHS refused the model"
    status = s.run()
    model = s.getModelStatus()
    if status != highspy.HighsStatus.kError and model == highspy.HighsModelStatus.kOptimal:
        return None
    return s.modelStatusToString(model) or str(status)


def fleet_peak(p: Problem) -> float:
    """A lower bound on the lowest sum of the days' peaks: the batteries merged into one (energies, windows
    and powers added, the best efficiency, energy free to vanish, no SoC targets), which can
    do anything the fleet can; nan when its solve fails. When the fleet's SoC and powers are
    spread alike over its batteries, the bound is the lowest sum itself."""
    one = {
        "e0_kwh": p.e0_kwh.sum(keepdims=True),
        "e_min_kwh": p.e_min_kwh.sum(keepdims=True),
        "e_max_kwh": p.e_max_kwh.sum(keepdims=True),
        "max_charge_kw": p.max_charge_kw.sum(keepdims=True),
        "max_discharge_kw": p.max_discharge_kw.sum(keepdims=True),
        "eta": p.eta.max(keepdims=True) if p.eta.size else np.ones(1),
        "target_step": np.zeros(0, dtype=np.int64),
        "target_kwh": np.zeros((0, 1)),
        "dispose": True,
    }
    merged = Problem(**{**{f: getattr(p, f) for f in Problem.__dataclass_fields__}, **one})
    lp, lay = build(merged)
    cost = np.zeros(lay.cols)
    cost[lay.p : lay.q] = p.day_weights()  # the peaks only: the export cap's slack is free here
    lp.col_cost_ = cost
    s = _solver()
    if _run(s, lp) is not None:
        return math.nan
    return float(np.dot(p.day_weights(), np.asarray(s.getSolution().col_value)[lay.p : lay.q]))


def solve(p: Problem) -> Solution:
    """Peak mode puts the lowest peaks first, then the small terms. Each billing day of the
    horizon has its own peak, and their sum is minimised: one horizon-wide peak would let
    today import up to tomorrow's (higher) peak at no cost, charging for it. The lowest sum is
    bounded from below on the merged fleet (`fleet_peak`, one tiny LP), and one LP over the
    batteries then pays `peak_weight` per kW of the sum above that bound. When the bound is
    the lowest peak (the usual case), that LP is exactly the second stage of a two-stage
    lexicographic solve; when it is not, the weight (far above what the small terms can
    gain per kW of peak) still makes the peak come first. Minimising the peak over all the
    batteries directly is the slow part of a two-stage solve: 3-4x this on a 50-battery fleet.
    """
    cap = _INF
    if p.peak:
        given = np.asarray(p.peak_floor_kw, dtype=np.float64).reshape(-1)[: p.n_days()]
        floors = float(np.dot(p.day_weights()[: given.size], given))
        bound = fleet_peak(p)  # nan when its solve failed: then price all the peaks above the floors
        cap = max(bound, floors) if math.isfinite(bound) else floors
        cap += PEAK_TOLERANCE_KW + PEAK_TOLERANCE_REL * abs(cap)
    lp, lay = build(p, cap)
    s = _solver()
    problem = _run(s, lp)
    if problem is not None:
        kind = "time_limit" if s.getModelStatus() == highspy.HighsModelStatus.kTimeLimit else "failed"
        return _failed(p, kind, problem)
    return _solution(p, lay, np.asarray(s.getSolution().col_value))


def _solution(p: Problem, lay: _Layout, x: np.ndarray) -> Solution:
    n, b = lay.n, lay.b
    c = np.clip((x[lay.c : lay.d] + x[lay.ch : lay.dh]).reshape(b, n), 0.0, p.max_charge_kw[:, None])
    d = np.clip((x[lay.d : lay.e] + x[lay.dh :]).reshape(b, n), 0.0, p.max_discharge_kw[:, None])
    e = np.clip(x[lay.e : lay.gp].reshape(b, n), p.e_min_kwh[:, None], p.e_max_kwh[:, None])
    return Solution(
        status="optimal",
        detail="",
        charge_kw=c,
        discharge_kw=d,
        energy_kwh=np.concatenate([p.e0_kwh[:, None], e], axis=1),
        target_short_kwh=np.maximum(x[lay.st : lay.ch].reshape(lay.k, b), 0.0),
    )


def _failed(p: Problem, status: str, detail: str) -> Solution:
    n, b = p.base_kw.size, p.e0_kwh.size
    zeros = np.zeros((b, n))
    return Solution(
        status=status,
        detail=detail,
        charge_kw=zeros,
        discharge_kw=zeros,
        energy_kwh=np.repeat(p.e0_kwh[:, None], n + 1, axis=1),
        target_short_kwh=np.zeros((p.target_step.size, b)),
    )
