"""The fitted load forecaster as data: `ForecastModel` (validated, immutable arrays), the
names and order of its features, and the calendar constants.

Pure: numpy only; no I/O, clocks or randomness; fitting is `core.forecast`. Times are Unix
seconds, calendar UTC.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DAY_S = 86400.0
#: Unix time 0 (1970-01-01) was a Thursday (Monday = 0).
EPOCH_WEEKDAY = 3
DEFAULT_LAGS = (1, 2, 3, 4, 96, 672)
DAY_TYPES = ("mon-fri", "sat", "sun")
CALENDAR = ("sin_tod", "cos_tod", "sin_2tod", "cos_2tod", *(f"dow{d}" for d in range(7)), "weekend")


def feature_names(lags: Sequence[int]) -> tuple[str, ...]:
    """Column names of the design matrix, in order: lags, day deviation, calendar, bias."""
    return (*(f"lag{lag}" for lag in lags), "dev_day", "similar_days", *CALENDAR, "bias")


def slots_per_day(step_s: float) -> int:
    """How many steps of `step_s` start within one day (the profile's second dimension)."""
    return math.ceil(DAY_S / step_s - 1e-9)


def check_lags(lags: Sequence[int]) -> tuple[int, ...]:
    """`lags` as a tuple of ints; ValueError unless distinct, increasing and >= 1."""
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
        lags = check_lags(self.lags)
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
