"""A node's own load history in fixed steps (15 minutes), and the battery reserve its
forecast asks for. Pure: samples and times come in as arguments; numpy only.
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


def forecast_reserve_kwh(
    history: LoadHistory, now_s: float, limit_kw: float, model: ForecastModel | None = None
) -> tuple[float, str]:
    """Battery energy to hold for the coming day's load above `limit_kw`, and how it was
    forecast: the fitted model when there is enough history for it, else the same time
    yesterday (seasonal naive), else nothing."""
    series = history.series()
    day = int(86400 / history.step_s)
    if (
        model is not None
        and len(series) >= max(model.lags)
        and not np.isnan(series[-max(model.lags) :]).all()
    ):
        try:
            forecast = predict(model, series, now_s)
            return peak_energy_above(forecast, limit_kw, history.step_s), f"model v{model.version}"
        except ValueError:
            pass
    if len(series) >= day:
        forecast = np.nan_to_num(series[-day:], nan=0.0)
        return peak_energy_above(forecast, limit_kw, history.step_s), "same time yesterday"
    return 0.0, "no history yet"
