"""A node's own load history in fixed steps (15 minutes), its forecast of the coming day
from it, and the battery reserve that forecast asks for. Pure: samples and times come in as
arguments; numpy only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from meshems.core.forecast import peak_energy_above, predict
from meshems.core.forecast_model import ForecastModel

STEP_S = 900.0
KEEP_STEPS = 4 * 672  # four weeks


@dataclass
class LoadHistory:
    """Step averages of a node's base load (its import with its batteries at 0)."""

    step_s: float = STEP_S
    keep_steps: int = KEEP_STEPS
    t0_s: float | None = None  # start of values[0]
    values: list[float] = field(default_factory=list)
    _sum: float = 0.0
    _n: int = 0
    _bin: int | None = None

    def add(self, t_s: float, base_kw: float) -> None:
        if not math.isfinite(base_kw):
            return
        b = int(t_s // self.step_s)
        if self._bin is None:
            self._bin, self.t0_s = b, b * self.step_s
        if b != self._bin:
            self._close(b)
        self._sum += base_kw
        self._n += 1

    def _close(self, new_bin: int) -> None:
        assert self._bin is not None and self.t0_s is not None
        self.values.append(self._sum / self._n if self._n else math.nan)
        gap = max(0, min(new_bin - self._bin - 1, self.keep_steps))
        self.values.extend([math.nan] * gap)  # missed steps are gaps, not zeros
        self._bin, self._sum, self._n = new_bin, 0.0, 0
        overflow = len(self.values) - self.keep_steps
        if overflow > 0:
            del self.values[:overflow]
        self.t0_s = (new_bin - len(self.values)) * self.step_s

    def series(self) -> np.ndarray:
        """Completed steps, oldest first; NaN where nothing was recorded."""
        return np.array(self.values, dtype=float)


NO_HISTORY = "no history yet"
SAME_TIME_YESTERDAY = "same time yesterday"


@dataclass(frozen=True)
class LoadForecast:
    """The coming day's load in steps from `start_s` (the step being recorded now), NaN
    where unknown, and its basis: `model vN`, `same time yesterday` or `no history yet`."""

    start_s: float
    step_s: float
    kw: np.ndarray
    basis: str


def up_to(history: LoadHistory, start_s: float) -> tuple[np.ndarray, float]:
    """The history's completed steps with the ones not closed before the step at `start_s`
    as gaps (NaN), and the time its series then ends (that step, or the history's end)."""
    assert history.t0_s is not None
    series, step = history.series(), history.step_s
    end_s = history.t0_s + len(series) * step
    missed = min(max(0, round((start_s - end_s) / step)), history.keep_steps)
    if missed:
        series = np.concatenate([series, np.full(missed, np.nan)])
    return series, end_s + missed * step


def load_forecast(history: LoadHistory, now_s: float, model: ForecastModel | None = None) -> LoadForecast:
    """The node's forecast from its own history: the fitted model when there is enough
    history for it, else the same time yesterday (seasonal naive), else nothing (NaN).

    Steps the history has not closed yet before `now_s`'s step (a node that has just
    started) count as gaps, so the forecast always starts at the current step. The model is
    issued at the start of the last completed step, the time of `series[-1]` as in training.
    """
    step, day = history.step_s, int(86400 / history.step_s)
    current_s = math.floor(now_s / step) * step
    if history.t0_s is None:
        return LoadForecast(current_s, step, np.full(day, np.nan), NO_HISTORY)
    series, end_s = up_to(history, current_s)
    if (
        model is not None
        and len(series) >= max(model.lags)
        and not np.isnan(series[-max(model.lags) :]).all()
    ):
        try:
            kw = predict(model, series, end_s - step)
            return LoadForecast(end_s, step, kw, f"model v{model.version}")
        except ValueError:
            pass
    if len(series) >= day:
        return LoadForecast(end_s, step, series[-day:].copy(), SAME_TIME_YESTERDAY)
    return LoadForecast(end_s, step, np.full(day, np.nan), NO_HISTORY)


def forecast_reserve_kwh(
    history: LoadHistory, now_s: float, limit_kw: float, model: ForecastModel | None = None
) -> tuple[float, str]:
    """Battery energy to hold for the coming day's load above `limit_kw`, and how it was
    forecast (`load_forecast`: the same forecast `meshems forecast show` prints); a gap in
    the same time yesterday counts as 0 kW."""
    f = load_forecast(history, now_s, model)
    return reserve_of(f, limit_kw), f.basis


def reserve_of(f: LoadForecast, limit_kw: float) -> float:
    """Battery energy a forecast's load above `limit_kw` needs (a gap in the same time
    yesterday counts as 0 kW)."""
    if f.basis == NO_HISTORY:
        return 0.0
    kw = np.nan_to_num(f.kw, nan=0.0) if f.basis.startswith(SAME_TIME_YESTERDAY) else f.kw
    return peak_energy_above(kw, limit_kw, f.step_s)
