"""Load forecaster a node fits on its own history: direct multi-horizon ridge regression.

Owns fitting, predicting, scoring and the array form of a model (for .npz and digests).
Pure: numpy and hashlib only; no files, clocks or randomness (the adapter
`meshems.adapters.forecast_store` does the file I/O). Times are Unix seconds, calendar UTC.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

DAY_S = 86400.0
#: Unix time 0 (1970-01-01) was a Thursday (Monday = 0).
EPOCH_WEEKDAY = 3
DEFAULT_LAGS = (1, 2, 3, 4, 96, 672)
#: fewest training rows (issue times) per horizon step that `fit` accepts
MIN_TRAIN_ROWS = 96
#: the level a window is divided by is never below this (kW), so an all-zero history works
_LEVEL_FLOOR_KW = 1e-6
#: profile values (multiples of the level) are never below this, so deviations stay bounded
_PROFILE_FLOOR = 0.05
DAY_TYPES = ("mon-fri", "sat", "sun")
_CALENDAR = ("sin_tod", "cos_tod", "sin_2tod", "cos_2tod", *(f"dow{d}" for d in range(7)), "weekend")
_ARRAY_KEYS = (
    "schema",
    "version",
    "step_s",
    "horizon_steps",
    "lags",
    "weights",
    "mean",
    "scale",
    "profile",
    "ridge_lambda",
    "fitted_on",
    "mae_kw",
)
_SCHEMA = 1


def feature_names(lags: Sequence[int]) -> tuple[str, ...]:
    """Column names of the design matrix, in order: lags, day deviation, calendar, bias."""
    return (*(f"lag{lag}" for lag in lags), "dev_day", "similar_days", *_CALENDAR, "bias")


def slots_per_day(step_s: float) -> int:
    """How many steps of `step_s` start within one day (the profile's second dimension)."""
    return math.ceil(DAY_S / step_s - 1e-9)


def _check_lags(lags: Sequence[int]) -> tuple[int, ...]:
    out = tuple(int(lag) for lag in lags)
    if not out or any(lag < 1 for lag in out) or len(set(out)) != len(out) or list(out) != sorted(out):
        raise ValueError(f"lags must be distinct, increasing integers >= 1, got {tuple(lags)}")
    return out


@dataclass(frozen=True, eq=False)
class ForecastModel:
    """A fitted forecaster: one ridge weight vector per horizon step (a "direct" model).

    Why direct rather than recursive: a recursive one-step model feeds its own forecasts
    back as lags, so errors compound over 96 steps. A direct model per step h uses only
    values known at issue time, errors do not accumulate, and each closed-form ridge
    solve is tiny (about 20 features): a fit on 8 weeks of 15-minute data is ~0.2 s.

    How a forecast is made: load = level x profile x deviation. `level` is the mean of the
    last max(lags) values at issue time (scale-free: survives seasonal drift and another
    site's size); `profile` (3 day types: Mon-Fri, Sat, Sun x slots of the day) is the
    median shape seen in training; the ridge model predicts the deviation from lagged
    deviations, their mean over the last day ("dev_day"), their median at the same time
    on the recent days of the target's day type ("similar_days": follows a change of
    shape, shrugs off one holiday) and the target's calendar. Rows are weighted by
    (level x profile)^2, so the fit minimises squared error in kW.

    Lag semantics (no peeking): for target T = n + h issued at index n, a lag L shorter
    than horizon_steps is counted back from the issue time (value at n + 1 - L: lag 1 is
    the latest reading), a lag L >= horizon_steps back from the target (value at T - L:
    same time yesterday, same time last week); both are at or before n.

    Arrays (H = horizon_steps, F = len(feature_names(lags))): `weights`, `mean`, `scale`
    are (H, F), features standardised as (x - mean) / scale; `profile` is
    (3, slots_per_day(step_s)). `mae_kw` is the in-sample MAE over all horizon steps.
    Immutable (arrays read-only); compare two models with `model_digest`.
    """

    version: int
    step_s: float
    horizon_steps: int
    lags: tuple[int, ...]
    weights: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    profile: np.ndarray
    ridge_lambda: float
    fitted_on: int
    mae_kw: float

    def __post_init__(self) -> None:
        lags = _check_lags(self.lags)
        if not (math.isfinite(self.step_s) and self.step_s > 0.0):
            raise ValueError(f"step_s must be a finite number > 0, got {self.step_s}")
        if int(self.horizon_steps) < 1:
            raise ValueError(f"horizon_steps must be >= 1, got {self.horizon_steps}")
        if int(self.version) < 0 or int(self.fitted_on) < 0:
            raise ValueError(f"version and fitted_on must be >= 0, got {self.version}, {self.fitted_on}")
        if not (math.isfinite(self.ridge_lambda) and self.ridge_lambda > 0.0):
            raise ValueError(f"ridge_lambda must be a finite number > 0, got {self.ridge_lambda}")
        expected = {
            "weights": (int(self.horizon_steps), len(feature_names(lags))),
            "mean": (int(self.horizon_steps), len(feature_names(lags))),
            "scale": (int(self.horizon_steps), len(feature_names(lags))),
            "profile": (len(DAY_TYPES), slots_per_day(self.step_s)),
        }
        for name, shape in expected.items():
            arr = np.array(getattr(self, name), dtype=np.float64)
            if arr.shape != shape:
                raise ValueError(
                    f"{name} has shape {arr.shape}, expected {shape} "
                    f"(horizon_steps {self.horizon_steps}, lags {lags}, step_s {self.step_s:g})"
                )
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{name} has non-finite values")
            arr.setflags(write=False)
            object.__setattr__(self, name, arr)
        if np.any(self.scale <= 0.0) or np.any(self.profile <= 0.0):
            raise ValueError("scale and profile must be > 0 everywhere")
        object.__setattr__(self, "lags", lags)
        object.__setattr__(self, "version", int(self.version))
        object.__setattr__(self, "horizon_steps", int(self.horizon_steps))
        object.__setattr__(self, "fitted_on", int(self.fitted_on))
        object.__setattr__(self, "step_s", float(self.step_s))
        object.__setattr__(self, "ridge_lambda", float(self.ridge_lambda))
        object.__setattr__(self, "mae_kw", float(self.mae_kw))


# --- calendar, level, profile -----------------------------------------------------------


def _day_type_and_slot(t_s: np.ndarray, step_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Day type (0 Mon-Fri, 1 Sat, 2 Sun; UTC) and slot of the day for times `t_s`."""
    weekday = (np.floor_divide(t_s, DAY_S).astype(np.int64) + EPOCH_WEEKDAY) % 7
    day_type = np.clip(weekday - 4, 0, 2)
    slot = np.minimum(np.floor(np.mod(t_s, DAY_S) / step_s).astype(np.int64), slots_per_day(step_s) - 1)
    return day_type, slot


def _calendar(t_s: np.ndarray) -> np.ndarray:
    """Calendar columns for times `t_s` (UTC): tod harmonics, weekday one-hot, weekend flag."""
    angle = 2.0 * np.pi * np.mod(t_s, DAY_S) / DAY_S
    weekday = (np.floor_divide(t_s, DAY_S).astype(np.int64) + EPOCH_WEEKDAY) % 7
    out = np.empty((t_s.size, len(_CALENDAR)))
    out[:, 0] = np.sin(angle)
    out[:, 1] = np.cos(angle)
    out[:, 2] = np.sin(2.0 * angle)
    out[:, 3] = np.cos(2.0 * angle)
    out[:, 4:11] = weekday[:, None] == np.arange(7)[None, :]
    out[:, 11] = weekday >= 5
    return out


def _trailing_mean(series: np.ndarray, window: int) -> np.ndarray:
    """out[n] = nanmean(series[n+1-window : n+1]); NaN for n < window - 1 or an empty window."""
    finite = np.isfinite(series)
    csum = np.concatenate([[0.0], np.cumsum(np.where(finite, series, 0.0))])
    ccount = np.concatenate([[0], np.cumsum(finite)])
    out = np.full(series.size, np.nan)
    if series.size >= window:
        total = csum[window:] - csum[:-window]
        count = ccount[window:] - ccount[:-window]
        out[window - 1 :] = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    return out


def _levels(series: np.ndarray, window: int) -> np.ndarray:
    """The level each forecast is scaled by: trailing mean over `window`, floored."""
    return np.maximum(_trailing_mean(series, window), _LEVEL_FLOOR_KW)


def _fit_profile(series: np.ndarray, t_s: np.ndarray, step_s: float, window: int) -> np.ndarray:
    """Median of load / trailing level per (day type, slot), floored at _PROFILE_FLOOR.

    A day type absent from the history takes the mean shape of the others (else 1.0).
    """
    ratio = series / _levels(series, window)
    day_type, slot = _day_type_and_slot(t_s, step_s)
    n_slots = slots_per_day(step_s)
    key = day_type * n_slots + slot
    ok = np.isfinite(ratio)
    key, ratio = key[ok], ratio[ok]
    order = np.lexsort((ratio, key))
    key, ratio = key[order], ratio[order]
    profile = np.full(len(DAY_TYPES) * n_slots, np.nan)
    groups, starts, counts = np.unique(key, return_index=True, return_counts=True)
    lower = ratio[starts + (counts - 1) // 2]
    upper = ratio[starts + counts // 2]
    profile[groups] = 0.5 * (lower + upper)
    profile = profile.reshape(len(DAY_TYPES), n_slots)
    with np.errstate(all="ignore"):
        fill = np.nanmean(profile, axis=0) if np.any(np.isfinite(profile)) else np.ones(n_slots)
    profile = np.where(np.isfinite(profile), profile, fill[None, :])
    profile = np.where(np.isfinite(profile), profile, 1.0)
    return np.maximum(profile, _PROFILE_FLOOR)


# --- features ---------------------------------------------------------------------------


def _day_steps(step_s: float) -> int:
    """Steps in a day (rounded): how far "the same time on another day" is."""
    return max(1, round(DAY_S / step_s))


def _similar_days(
    shape_free: np.ndarray,
    day_type: np.ndarray,
    issue: np.ndarray,
    target: np.ndarray,
    day_steps: int,
    window: int,
) -> np.ndarray:
    """Median of shape_free at the same time of day on the recent days of the target's type.

    Looks back whole days from each target, keeps the values inside the lag window that
    are already known at issue time (index <= issue), and takes their median: robust to
    one odd day (a holiday) and quick to follow a change of shape (a cooling season).
    NaN where there is no such value.
    """
    cols = []
    for k in range(1, window // day_steps + 1):
        idx = target - k * day_steps
        known = (idx <= issue) & (idx >= issue + 1 - window) & (idx >= 0)
        idx = np.clip(idx, 0, shape_free.size - 1)
        cols.append(np.where(known & (day_type[idx] == day_type[target]), shape_free[idx], np.nan))
    if not cols:
        return np.full(target.size, np.nan)
    stack = np.stack(cols, axis=1)
    count = np.isfinite(stack).sum(axis=1)
    ordered = np.sort(np.where(np.isfinite(stack), stack, np.inf), axis=1)  # known values first
    rows = np.arange(target.size)
    low = ordered[rows, np.maximum(count - 1, 0) // 2]
    high = ordered[rows, np.maximum(count, 1) // 2 * (count > 0)]
    with np.errstate(invalid="ignore"):
        return np.where(count > 0, 0.5 * (low + high), np.nan)


class _Series(NamedTuple):
    """Per-sample arrays of a series, computed once and indexed by (issue, target) pairs."""

    series: np.ndarray  # kW (NaN where unknown, e.g. the future at predict time)
    shape_free: np.ndarray  # kW / profile value of the sample
    level: np.ndarray  # kW, trailing mean over max(lags), floored
    dev_day: np.ndarray  # trailing mean of shape_free over the last day
    profile: np.ndarray  # profile value of each sample
    day_type: np.ndarray  # 0 Mon-Fri, 1 Sat, 2 Sun
    calendar: np.ndarray  # calendar columns of each sample
    similar_within_day: np.ndarray  # _similar_days of each sample as a target 1..day_steps ahead


def _prepare(
    series: np.ndarray, t0_s: float, step_s: float, lags: tuple[int, ...], profile: np.ndarray
) -> _Series:
    times = t0_s + step_s * np.arange(series.size, dtype=np.float64)
    day_type, slot = _day_type_and_slot(times, step_s)
    prof = profile[day_type, slot]
    shape_free = series / prof
    day_steps = _day_steps(step_s)
    target = np.arange(series.size)
    # Whole days back from a target T are known and inside the lag window for every issue
    # time n with T - day_steps <= n < T, so for those the median depends on T alone.
    similar = _similar_days(shape_free, day_type, target - 1, target, day_steps, lags[-1])
    return _Series(
        series=series,
        shape_free=shape_free,
        level=_levels(series, lags[-1]),
        dev_day=_trailing_mean(shape_free, min(day_steps, lags[-1])),
        profile=prof,
        day_type=day_type,
        calendar=_calendar(times),
        similar_within_day=similar,
    )


def _rows(
    prepared: _Series,
    issue: np.ndarray,
    target: np.ndarray,
    horizon_steps: int,
    lags: tuple[int, ...],
    day_steps: int,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Design matrix X, target deviation y and kW scale for (issue, target) index pairs.

    Row i uses only samples at or before issue[i] (the target's own value is y, not X);
    lag features follow the rule in `ForecastModel`. Rows may contain NaN.
    """
    n_lags = len(lags)
    level = prepared.level[issue]
    x = np.empty((issue.size, len(feature_names(lags))))
    for j, lag in enumerate(lags):
        x[:, j] = prepared.shape_free[issue + 1 - lag if lag < horizon_steps else target - lag]
    x[:, n_lags] = prepared.dev_day[issue]
    if np.all(target - issue <= day_steps):  # the common case: precomputed per target
        similar = prepared.similar_within_day[target]
    else:
        similar = _similar_days(prepared.shape_free, prepared.day_type, issue, target, day_steps, lags[-1])
    x[:, n_lags + 1] = np.where(np.isfinite(similar), similar, level)  # none: the profile itself
    x[:, : n_lags + 2] /= level[:, None]
    x[:, n_lags + 2 : -1] = prepared.calendar[target]
    x[:, -1] = 1.0
    scale_kw = level * prepared.profile[target]
    return x, prepared.series[target] / scale_kw, scale_kw


def features_at(model: ForecastModel, recent_kw: np.ndarray, t_now_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Raw (unstandardised) features of one forecast issued at `t_now_s`, and the kW scale.

    `recent_kw[-1]` is the load at `t_now_s`; at least max(lags) values are needed. Row
    h-1 of the (horizon_steps, F) answer is for the target t_now + h*step; the scale
    (level x profile of each target, kW) turns a predicted deviation into kW.
    """
    lags, step_s, horizon = model.lags, model.step_s, model.horizon_steps
    window = lags[-1]
    recent = np.asarray(recent_kw, dtype=np.float64).reshape(-1)
    if recent.size < window:
        raise ValueError(f"need at least max(lags) = {window} recent values, got {recent.size}")
    if not np.any(np.isfinite(recent[-window:])):
        raise ValueError(f"the last {window} recent values are all missing (NaN)")
    padded = np.concatenate([recent[-window:], np.full(horizon, np.nan)])
    n = window - 1  # index of t_now within `padded`
    prepared = _prepare(padded, t_now_s - n * step_s, step_s, lags, model.profile)
    target = n + np.arange(1, horizon + 1)
    x, _, scale_kw = _rows(prepared, np.full(horizon, n), target, horizon, lags, _day_steps(step_s))
    return x, scale_kw


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
    lags = _check_lags(lags)
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
    profile = _fit_profile(series, times, step_s, lags[-1])
    n_features = len(feature_names(lags))
    penalty = np.full(n_features, float(ridge_lambda))
    penalty[-1] = 0.0  # the bias is not shrunk
    weights = np.empty((horizon_steps, n_features))
    means = np.zeros((horizon_steps, n_features))
    scales = np.ones((horizon_steps, n_features))
    abs_err_kw, n_err = 0.0, 0
    prepared = _prepare(series, t0_s, step_s, lags, profile)
    day_steps = _day_steps(step_s)
    for h in range(1, horizon_steps + 1):
        issue = np.arange(lags[-1] - 1, series.size - h)
        x, y, scale_kw = _rows(prepared, issue, issue + h, horizon_steps, lags, day_steps)
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


# --- array form and digest --------------------------------------------------------------


def to_arrays(model: ForecastModel) -> dict[str, np.ndarray]:
    """The model as named numpy arrays (for `numpy.savez`); `from_arrays` reverses it."""
    return {
        "schema": np.array(_SCHEMA, dtype=np.int64),
        "version": np.array(model.version, dtype=np.int64),
        "step_s": np.array(model.step_s, dtype=np.float64),
        "horizon_steps": np.array(model.horizon_steps, dtype=np.int64),
        "lags": np.array(model.lags, dtype=np.int64),
        "weights": np.array(model.weights, dtype=np.float64),
        "mean": np.array(model.mean, dtype=np.float64),
        "scale": np.array(model.scale, dtype=np.float64),
        "profile": np.array(model.profile, dtype=np.float64),
        "ridge_lambda": np.array(model.ridge_lambda, dtype=np.float64),
        "fitted_on": np.array(model.fitted_on, dtype=np.int64),
        "mae_kw": np.array(model.mae_kw, dtype=np.float64),
    }


def _scalar(d: dict[str, np.ndarray], key: str, kind: type) -> float | int:
    arr = np.asarray(d[key])
    if arr.shape != () or arr.dtype.kind not in ("i", "u", "f"):
        raise ValueError(f"array {key!r} must be a numeric scalar, got shape {arr.shape} dtype {arr.dtype}")
    value = arr.item()
    if kind is int:
        if float(value) != int(value):
            raise ValueError(f"array {key!r} must hold an integer, got {value}")
        return int(value)
    return float(value)


def from_arrays(d: dict[str, np.ndarray]) -> ForecastModel:
    """Rebuild a model from `to_arrays` output; ValueError on missing keys or bad shapes."""
    missing = [key for key in _ARRAY_KEYS if key not in d]
    if missing:
        raise ValueError(f"missing arrays: {', '.join(missing)}")
    schema = _scalar(d, "schema", int)
    if schema != _SCHEMA:
        raise ValueError(f"unsupported forecast model schema {schema}, this build reads {_SCHEMA}")
    lags = np.asarray(d["lags"])
    if lags.ndim != 1 or lags.dtype.kind not in ("i", "u"):
        raise ValueError(
            f"array 'lags' must be a 1-D integer array, got shape {lags.shape} dtype {lags.dtype}"
        )
    for key in ("weights", "mean", "scale", "profile"):
        arr = np.asarray(d[key])
        if arr.ndim != 2 or arr.dtype.kind != "f":
            raise ValueError(
                f"array {key!r} must be a 2-D float array, got shape {arr.shape} dtype {arr.dtype}"
            )
    return ForecastModel(
        version=int(_scalar(d, "version", int)),
        step_s=float(_scalar(d, "step_s", float)),
        horizon_steps=int(_scalar(d, "horizon_steps", int)),
        lags=tuple(int(lag) for lag in lags),
        weights=np.asarray(d["weights"]),
        mean=np.asarray(d["mean"]),
        scale=np.asarray(d["scale"]),
        profile=np.asarray(d["profile"]),
        ridge_lambda=float(_scalar(d, "ridge_lambda", float)),
        fitted_on=int(_scalar(d, "fitted_on", int)),
        mae_kw=float(_scalar(d, "mae_kw", float)),
    )


def model_digest(model: ForecastModel) -> str:
    """SHA-256 (hex) of the canonical array form: keys sorted, each as name, dtype, shape,
    then little-endian C-order bytes. Equal digests mean equal forecasts everywhere."""
    digest = hashlib.sha256()
    arrays = to_arrays(model)
    for key in sorted(arrays):
        arr = arrays[key]
        canon = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        digest.update(f"{key}|{canon.dtype.str}|{canon.shape}|".encode())
        digest.update(canon.tobytes())
    return digest.hexdigest()


# --- scoring ----------------------------------------------------------------------------


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
    lags = _check_lags(lags)
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
