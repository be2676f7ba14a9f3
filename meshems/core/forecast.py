"""Load forecaster a node fits on its own history: direct multi-horizon ridge regression.

Owns fit and predict (and the peak energy a forecast asks a battery to hold). Pure: numpy
only; no files, clocks or randomness. The model, features, array form and scoring are the
other `core.forecast_*` modules, the files `adapters.forecast_store`. Times: Unix s, UTC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

# model_digest and to_arrays live in core.forecast_arrays; core/node_spec.py (not ours to change
# now) imports them, and ForecastModel, from here
from meshems.core.forecast_arrays import model_digest as model_digest
from meshems.core.forecast_arrays import to_arrays as to_arrays
from meshems.core.forecast_features import day_lag_steps, features_at, fit_profile, prepare, rows
from meshems.core.forecast_model import DAY_S, DEFAULT_LAGS, ForecastModel, check_lags, feature_names

#: fewest training rows (issue times) per horizon step that `fit` accepts
MIN_TRAIN_ROWS = 96


# --- fit and predict --------------------------------------------------------------------


def _weighted_ridge(
    x: np.ndarray, y: np.ndarray, row_w: np.ndarray, penalty: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Ridge weights on standardised features, and the (weighted) mean and scale used.

    One weighted Gram matrix of [x | y] gives everything: with the last column of x the
    bias (mean 0, scale 1), xs = (x - mean) / scale, and
    xs' W xs = S^-1 (x'Wx - a m' - m a' + (1'W1) m m') S^-1 with a = x'W1 (likewise xs' W y),
    so the standardised matrix is never built (few large array passes per horizon step).
    """
    n_features = x.shape[1]
    root_w = np.sqrt(row_w)[:, None]
    aug = np.empty((x.shape[0], n_features + 1))
    np.multiply(x, root_w, out=aug[:, :n_features])
    aug[:, n_features] = y * root_w[:, 0]
    gram = aug.T @ aug  # numpy uses a symmetric rank-k update for A'A
    total_w = gram[-2, -2]  # bias x bias = sum of row weights
    sums = gram[:-1, -2]  # x' W 1
    mean = sums / total_w
    mean[-1] = 0.0
    var = np.diag(gram)[:-1] / total_w - mean * mean
    scale = np.sqrt(np.maximum(var, 0.0))
    scale = np.where(scale > 1e-12 * np.maximum(1.0, np.abs(mean)), scale, 1.0)
    scale[-1] = 1.0
    xx = gram[:-1, :-1] - np.outer(sums, mean) - np.outer(mean, sums) + total_w * np.outer(mean, mean)
    xy = gram[:-1, -1] - mean * gram[-2, -1]
    w = np.linalg.solve(xx / np.outer(scale, scale) + np.diag(penalty), xy / scale)
    return w, mean, scale


def fit(
    history_kw: np.ndarray,
    t0_s: float,
    step_s: float = 900.0,
    horizon_steps: int = 96,
    lags: Sequence[int] = DEFAULT_LAGS,
    ridge_lambda: float = 1.0,
    version: int = 1,
) -> ForecastModel:
    """Fit one ridge model per horizon step on `history_kw[i]` = load at t0_s + i*step_s.

    Closed form per step: (Xs' W Xs + lambda I') w = Xs' W y, with Xs the standardised
    features, W the row weights (level x profile)^2 scaled to mean 1, and the bias not
    penalised. Rows whose features or target are NaN (gaps) are skipped. Raises
    ValueError when the history is too short or too gappy to fit.
    """
    lags = check_lags(lags)
    horizon_steps = int(horizon_steps)
    if horizon_steps < 1:
        raise ValueError(f"horizon_steps must be >= 1, got {horizon_steps}")
    if not (math.isfinite(step_s) and step_s > 0.0):
        raise ValueError(f"step_s must be a finite number > 0, got {step_s}")
    if not (math.isfinite(ridge_lambda) and ridge_lambda > 0.0):
        raise ValueError(f"ridge_lambda must be a finite number > 0, got {ridge_lambda}")
    series = np.asarray(history_kw, dtype=np.float64).reshape(-1)
    needed = lags[-1] + horizon_steps + MIN_TRAIN_ROWS
    if series.size < needed:
        raise ValueError(
            f"history too short to fit: {series.size} samples, need at least {needed} "
            f"(max lag {lags[-1]} + horizon {horizon_steps} + {MIN_TRAIN_ROWS} training rows; "
            f"{needed * step_s / DAY_S:.1f} days at step {step_s:g} s)"
        )
    times = t0_s + step_s * np.arange(series.size, dtype=np.float64)
    profile = fit_profile(series, times, step_s, lags[-1])
    n_features = len(feature_names(lags))
    penalty = np.full(n_features, float(ridge_lambda))
    penalty[-1] = 0.0  # the bias is not shrunk
    weights = np.empty((horizon_steps, n_features))
    means = np.zeros((horizon_steps, n_features))
    scales = np.ones((horizon_steps, n_features))
    abs_err_kw, n_err = 0.0, 0
    prepared = prepare(series, t0_s, step_s, lags, profile)
    day_steps = day_lag_steps(step_s)
    for h in range(1, horizon_steps + 1):
        issue = np.arange(lags[-1] - 1, series.size - h)
        x, y, scale_kw = rows(prepared, issue, issue + h, horizon_steps, lags, day_steps)
        ok = np.isfinite(x).all(axis=1) & np.isfinite(y)
        if not ok.all():
            x, y, scale_kw = x[ok], y[ok], scale_kw[ok]
        if y.size < max(MIN_TRAIN_ROWS, n_features):
            raise ValueError(
                f"history too gappy to fit horizon step {h}: {y.size} complete rows, "
                f"need {max(MIN_TRAIN_ROWS, n_features)}; fill gaps or supply more history"
            )
        row_w = scale_kw**2
        row_w = row_w / row_w.mean() if row_w.mean() > 0.0 else np.ones_like(row_w)
        w, mean, scale = _weighted_ridge(x, y, row_w, penalty)
        weights[h - 1], means[h - 1], scales[h - 1] = w, mean, scale
        fitted = x @ (w / scale) - float(mean @ (w / scale))
        abs_err_kw += float(np.abs(np.maximum(fitted, 0.0) - y) @ scale_kw)
        n_err += y.size
    return ForecastModel(
        version=version,
        step_s=step_s,
        horizon_steps=horizon_steps,
        lags=lags,
        weights=weights,
        mean=means,
        scale=scales,
        profile=profile,
        ridge_lambda=ridge_lambda,
        fitted_on=int(np.isfinite(series).sum()),
        mae_kw=abs_err_kw / n_err,
    )


def predict(model: ForecastModel, recent_kw: np.ndarray, t_now_s: float) -> np.ndarray:
    """Forecast (kW) for t_now + step .. t_now + horizon*step, clipped at 0.

    `recent_kw` holds at least max(lags) values ending at t_now (`recent_kw[-1]` is the
    load at `t_now_s`). A missing (NaN) lag value is replaced by its training mean, so a
    short gap degrades the forecast instead of breaking it.
    """
    x, scale_kw = features_at(model, recent_kw, t_now_s)
    xs = (x - model.mean) / model.scale
    xs = np.where(np.isfinite(xs), xs, 0.0)
    return np.maximum(np.einsum("hf,hf->h", xs, model.weights), 0.0) * scale_kw


def peak_energy_above(forecast_kw: np.ndarray, limit_kw: float, step_s: float) -> float:
    """kWh of forecast load above `limit_kw` (what a battery must hold to shave the peak).

    Each value counts as constant over its step; NaN values count as nothing.
    """
    if not math.isfinite(limit_kw):
        raise ValueError(f"limit_kw must be finite, got {limit_kw}")
    if not (math.isfinite(step_s) and step_s > 0.0):
        raise ValueError(f"step_s must be a finite number > 0, got {step_s}")
    excess_kw = np.clip(np.asarray(forecast_kw, dtype=np.float64) - limit_kw, 0.0, None)
    return float(np.nansum(excess_kw) * step_s / 3600.0)
