"""Scoring the forecaster: a rolling-origin backtest against the seasonal-naive baseline.

Owns `evaluate` (used by `meshems forecast fit` and the benchmarks) and `seasonal_naive`.
Pure: numpy only; no I/O, clocks or randomness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from meshems.core.forecast import fit, predict
from meshems.core.forecast_model import DAY_S, DEFAULT_LAGS, check_lags


def seasonal_naive(recent_kw: np.ndarray, horizon_steps: int, season_steps: int = 672) -> np.ndarray:
    """The value one season before each target (same time last week by default).

    `recent_kw[-1]` is the load at issue time; targets beyond one season repeat the season.
    """
    recent = np.asarray(recent_kw, dtype=np.float64).reshape(-1)
    if season_steps < 1 or recent.size < season_steps:
        raise ValueError(
            f"need season_steps >= 1 and at least season_steps = {season_steps} recent values, "
            f"got {recent.size}"
        )
    h = np.arange(1, int(horizon_steps) + 1)
    back = season_steps * ((h + season_steps - 1) // season_steps)
    return recent[recent.size - 1 + h - back].copy()


def evaluate(
    series_kw: np.ndarray,
    t0_s: float,
    step_s: float,
    train_days: float,
    test_days: float,
    horizon_steps: int = 96,
    issue_every_steps: int = 24,
    lags: Sequence[int] = DEFAULT_LAGS,
    ridge_lambda: float = 1.0,
    season_steps: int = 672,
    refit_every_days: float | None = None,
) -> dict[str, float]:
    """Rolling-origin score of the model against seasonal naive on one series.

    Fits on the first `train_days`, then issues a forecast every `issue_every_steps`
    (default 6 h) whose whole horizon lies within the following `test_days`; both
    forecasters see the same recent values. With `refit_every_days` the model is refitted
    that often on the last `train_days` before the issue time (as a node would do);
    without, it is fitted once. MAE is over every (issue, step) with a known actual and a
    naive forecast. Returns mae_model_kw, mae_naive_kw, ratio (model / naive), n_forecasts
    and n_fits.
    """
    series = np.asarray(series_kw, dtype=np.float64).reshape(-1)
    steps_per_day = DAY_S / step_s
    train_steps = round(train_days * steps_per_day)
    test_end = min(series.size, train_steps + round(test_days * steps_per_day))
    lags = check_lags(lags)
    need = max(lags[-1], season_steps)
    issues = np.arange(max(train_steps, need) - 1, test_end - horizon_steps, int(issue_every_steps))
    if issues.size == 0:
        raise ValueError(
            f"test window too short: {test_days} days after {train_days} training days leaves no "
            f"room for one {horizon_steps}-step forecast"
        )
    refit_steps = None if refit_every_days is None else max(1, round(refit_every_days * steps_per_day))
    model, fitted_at, n_fits = None, 0, 0
    err_model, err_naive, count = 0.0, 0.0, 0
    for n in issues:
        if model is None or (refit_steps is not None and n - fitted_at >= refit_steps):
            start = n + 1 - train_steps
            model = fit(
                series[start : n + 1], t0_s + start * step_s, step_s, horizon_steps, lags, ridge_lambda
            )
            fitted_at, n_fits = n, n_fits + 1
        recent = series[n + 1 - need : n + 1]
        actual = series[n + 1 : n + 1 + horizon_steps]
        f_model = predict(model, recent, t0_s + n * step_s)
        f_naive = seasonal_naive(recent, horizon_steps, season_steps)
        scored = np.isfinite(actual) & np.isfinite(f_naive)
        err_model += float(np.abs(f_model - actual)[scored].sum())
        err_naive += float(np.abs(f_naive - actual)[scored].sum())
        count += int(scored.sum())
    mae_model = err_model / max(count, 1)
    mae_naive = err_naive / max(count, 1)
    return {
        "mae_model_kw": mae_model,
        "mae_naive_kw": mae_naive,
        "ratio": mae_model / mae_naive if mae_naive > 0.0 else math.inf,
        "n_forecasts": float(issues.size),
        "n_fits": float(n_fits),
    }
