"""The forecaster's design matrix: calendar columns, trailing level, day-type profile and
the lag rule (no peeking past the issue time) that `fit` trains on and `predict` applies.

Owns the feature rows of (issue, target) pairs. Pure: numpy only; no I/O, clocks or
randomness. The layout of the columns is `forecast_model.feature_names`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from meshems.core.forecast_model import (
    CALENDAR,
    DAY_S,
    DAY_TYPES,
    EPOCH_WEEKDAY,
    ForecastModel,
    feature_names,
    slots_per_day,
)

#: the level a window is divided by is never below this (kW), so an all-zero history works
_LEVEL_FLOOR_KW = 1e-6
#: profile values (multiples of the level) are never below this, so deviations stay bounded
_PROFILE_FLOOR = 0.05


# --- calendar, level, profile -----------------------------------------------------------


def _day_type_and_slot(t_s: np.ndarray, step_s: float) -> tuple[np.ndarray, np.ndarray]:
    """Day type (0 Mon-Fri, 1 Sat, 2 Sun; UTC) and slot of the day for times `t_s`."""
    weekday = (np.floor_divide(t_s, DAY_S).astype(np.int64) + EPOCH_WEEKDAY) % 7
    day_type = np.clip(weekday - 4, 0, 2)
    slot = np.minimum(np.floor(np.mod(t_s, DAY_S) / step_s).astype(np.int64), slots_per_day(step_s) - 1)
    return day_type, slot


def calendar(t_s: np.ndarray) -> np.ndarray:
    """Calendar columns for times `t_s` (UTC): tod harmonics, weekday one-hot, weekend flag."""
    angle = 2.0 * np.pi * np.mod(t_s, DAY_S) / DAY_S
    weekday = (np.floor_divide(t_s, DAY_S).astype(np.int64) + EPOCH_WEEKDAY) % 7
    out = np.empty((t_s.size, len(CALENDAR)))
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


def fit_profile(series: np.ndarray, t_s: np.ndarray, step_s: float, window: int) -> np.ndarray:
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


def day_lag_steps(step_s: float) -> int:
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


class Series(NamedTuple):
    """Per-sample arrays of a series, computed once and indexed by (issue, target) pairs."""

    series: np.ndarray  # kW (NaN where unknown, e.g. the future at predict time)
    shape_free: np.ndarray  # kW / profile value of the sample
    level: np.ndarray  # kW, trailing mean over max(lags), floored
    dev_day: np.ndarray  # trailing mean of shape_free over the last day
    profile: np.ndarray  # profile value of each sample
    day_type: np.ndarray  # 0 Mon-Fri, 1 Sat, 2 Sun
    calendar: np.ndarray  # calendar columns of each sample
    similar_within_day: np.ndarray  # _similar_days of each sample as a target 1..day_steps ahead


def prepare(
    series: np.ndarray, t0_s: float, step_s: float, lags: tuple[int, ...], profile: np.ndarray
) -> Series:
    """The per-sample arrays of `series` (load at t0_s + i*step_s) under `profile`, once."""
    times = t0_s + step_s * np.arange(series.size, dtype=np.float64)
    day_type, slot = _day_type_and_slot(times, step_s)
    prof = profile[day_type, slot]
    shape_free = series / prof
    day_steps = day_lag_steps(step_s)
    target = np.arange(series.size)
    # Whole days back from a target T are known and inside the lag window for every issue
    # time n with T - day_steps <= n < T, so for those the median depends on T alone.
    similar = _similar_days(shape_free, day_type, target - 1, target, day_steps, lags[-1])
    return Series(
        series=series,
        shape_free=shape_free,
        level=_levels(series, lags[-1]),
        dev_day=_trailing_mean(shape_free, min(day_steps, lags[-1])),
        profile=prof,
        day_type=day_type,
        calendar=calendar(times),
        similar_within_day=similar,
    )


def rows(
    prepared: Series,
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
    prepared = prepare(padded, t_now_s - n * step_s, step_s, lags, model.profile)
    target = n + np.arange(1, horizon + 1)
    x, _, scale_kw = rows(prepared, np.full(horizon, n), target, horizon, lags, day_lag_steps(step_s))
    return x, scale_kw
