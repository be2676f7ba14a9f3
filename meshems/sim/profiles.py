"""Day-long shapes for the simulated site: PV irradiance and load fractions, each in [0, 1].

Pure: no I/O, clocks or random state. Time comes in as `t_s` (seconds since day 0, a Monday,
00:00); any variation comes from smooth sums of sines whose phases derive from `seed`.
Every function accepts a float or a numpy array of times and answers in kind.
"""

from __future__ import annotations

import math
from typing import overload

import numpy as np
import numpy.typing as npt

DAY_S = 86400.0
HOUR_S = 3600.0
WEEKEND_DAYS = (5, 6)  # day 0 is a Monday
LOAD_SHAPES = ("office", "residential", "flat")

# Cloud and noise periods (s): incommensurate, so the sum does not visibly repeat within a day.
_CLOUD_PERIODS_S = (2713.0, 1297.0, 611.0, 233.0)
_NOISE_PERIODS_S = (907.0, 373.0, 149.0)
_NOISE_AMPLITUDE = 0.03

FloatOrArray = float | npt.NDArray[np.float64]


def _unit(seed: int, k: int) -> float:
    """A deterministic number in [0, 1) from (seed, k): splitmix64, stable across platforms."""
    x = (seed * 0x9E3779B97F4A7C15 + (k + 1) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    x ^= x >> 31
    return (x >> 11) / float(1 << 53)


def _wiggle(t: npt.NDArray[np.float64], periods_s: tuple[float, ...], seed: int, salt: int) -> np.ndarray:
    """Mean of sines with seed-derived phases: smooth in t, in [-1, 1]."""
    total = np.zeros_like(t)
    for k, period in enumerate(periods_s):
        phase = 2.0 * math.pi * _unit(seed, salt * 100 + k)
        total = total + np.sin(2.0 * math.pi * t / period + phase)
    return total / len(periods_s)


def _answer(values: np.ndarray) -> FloatOrArray:
    out = np.clip(values, 0.0, 1.0)
    return float(out) if out.ndim == 0 else out


def _gauss_h(hour: np.ndarray, centre_h: float, sigma_h: float) -> np.ndarray:
    """A bell over the hour of day, wrapping at midnight."""
    d = (hour - centre_h + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (d / sigma_h) ** 2)


@overload
def pv_irradiance_fraction(
    t_s: float, sunrise_h: float = ..., sunset_h: float = ..., cloudiness: float = ..., seed: int = ...
) -> float: ...
@overload
def pv_irradiance_fraction(
    t_s: npt.NDArray[np.float64],
    sunrise_h: float = ...,
    sunset_h: float = ...,
    cloudiness: float = ...,
    seed: int = ...,
) -> npt.NDArray[np.float64]: ...
def pv_irradiance_fraction(
    t_s: FloatOrArray,
    sunrise_h: float = 6.0,
    sunset_h: float = 20.0,
    cloudiness: float = 0.0,
    seed: int = 0,
) -> FloatOrArray:
    """Irradiance as a fraction of the PV array's rating at time `t_s`, in [0, 1].

    Clear sky: 0 before `sunrise_h` and after `sunset_h` (hours of day), and between them
    `sin(pi * x) ** 1.5` with `x` the fraction of daylight gone, so 1.0 at solar noon (the
    midpoint). Clouds: with `cloudiness` c in [0, 1] the clear-sky value is multiplied by
    `1 - c * ((1 + w) / 2) ** 2`, where `w(t, seed)` in [-1, 1] is a sum of sines with periods
    of about 4 to 45 minutes and seed-derived phases: smooth dips that differ per day and per
    seed, none at c = 0, down to zero at c = 1.
    """
    if not 0.0 <= sunrise_h < sunset_h <= 24.0:
        raise ValueError(
            f"need 0 <= sunrise_h < sunset_h <= 24, got sunrise_h={sunrise_h}, sunset_h={sunset_h}"
        )
    if not 0.0 <= cloudiness <= 1.0:
        raise ValueError(f"cloudiness must be within [0, 1], got {cloudiness}")
    t = np.asarray(t_s, dtype=np.float64)
    hour = (t % DAY_S) / HOUR_S
    x = (hour - sunrise_h) / (sunset_h - sunrise_h)
    daylight = (x > 0.0) & (x < 1.0)
    clear = np.where(daylight, np.abs(np.sin(math.pi * np.clip(x, 0.0, 1.0))) ** 1.5, 0.0)
    if cloudiness > 0.0:
        w = _wiggle(t, _CLOUD_PERIODS_S, seed, salt=1)
        clear = clear * (1.0 - cloudiness * ((1.0 + w) / 2.0) ** 2)
    return _answer(clear)


def _office(hour: np.ndarray, weekend: np.ndarray) -> np.ndarray:
    weekday = np.interp(
        hour, [0.0, 6.0, 7.0, 9.0, 18.0, 20.0, 24.0], [0.15, 0.15, 0.25, 0.85, 0.85, 0.20, 0.15]
    )
    weekday = weekday + 0.10 * _gauss_h(hour, 12.5, 0.6)
    return np.where(weekend, 0.15 + 0.2 * (weekday - 0.15), weekday)


def _residential(hour: np.ndarray, weekend: np.ndarray) -> np.ndarray:
    morning = np.where(weekend, 0.40 * _gauss_h(hour, 9.0, 1.5), 0.35 * _gauss_h(hour, 7.5, 1.0))
    return 0.20 + morning + 0.55 * _gauss_h(hour, 19.5, 1.5)


@overload
def load_fraction(t_s: float, shape: str = ..., seed: int = ...) -> float: ...
@overload
def load_fraction(
    t_s: npt.NDArray[np.float64], shape: str = ..., seed: int = ...
) -> npt.NDArray[np.float64]: ...
def load_fraction(t_s: FloatOrArray, shape: str = "office", seed: int = 0) -> FloatOrArray:
    """A load's demand as a fraction of its nominal power at time `t_s`, in [0, 1].

    Shapes (hour of day h; day `t_s // 86400 % 7`, 0 = Monday, 5 and 6 = the weekend):
    - "office": 0.15 at night; ramp 6-7 h to 0.25 then 7-9 h to 0.85; plateau 0.85 with a
      lunch bump of +0.10 centred at 12:30; drop 18-20 h to 0.20 and back to 0.15 by midnight.
      Weekends keep a fifth of the weekday swing above the 0.15 base (about 0.27 at most).
    - "residential": base 0.20, a morning peak (+0.35 at 7:30 on weekdays, +0.40 at 9:00 and
      broader at weekends) and an evening peak (+0.55 at 19:30); about 0.76 at most.
    - "flat": 0.60 around the clock.
    Each adds deterministic noise of at most +/-0.03 (smooth sines, phases from `seed`).
    """
    t = np.asarray(t_s, dtype=np.float64)
    hour = (t % DAY_S) / HOUR_S
    weekend = np.isin(np.floor_divide(t, DAY_S) % 7, WEEKEND_DAYS)
    if shape == "office":
        base = _office(hour, weekend)
    elif shape == "residential":
        base = _residential(hour, weekend)
    elif shape == "flat":
        base = np.full_like(t, 0.60)
    else:
        raise ValueError(f"unknown load shape {shape!r}: use one of {', '.join(LOAD_SHAPES)}")
    noise = _NOISE_AMPLITUDE * _wiggle(t, _NOISE_PERIODS_S, seed, salt=2)
    return _answer(base + noise)
