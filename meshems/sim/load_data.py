"""A year of synthetic 15-minute site data: load (kW) for the forecaster, PV (kW) for benchmarks.

Load in the spirit of the BDEW/demandlib standard load profiles G1 (office/commerce), H0
(household) and L0 (farm); these are not the official tables. PV: a clear-sky model at ~50 N
times seeded cloudiness. Pure: numpy only, no I/O or clocks; all randomness comes from
`numpy.random.default_rng`, so a seed gives the same year.
"""

from __future__ import annotations

import numpy as np

DAYS_PER_YEAR = 365
STEPS_PER_DAY = 96  # quarter-hours
STEP_S = 900.0
DAY_S = 86400.0
#: Unix time 0 (1970-01-01) was a Thursday; this is the first Monday, 1970-01-05 00:00 UTC.
FIRST_MONDAY_S = 4 * DAY_S
SHAPES = ("office", "household", "farm")
_ALIASES = {"residential": "household"}

# Weather-like day-to-day variation: AR(1) on a daily scale factor.
_DAILY_AR_PHI = 0.75
_DAILY_SIGMA = 0.07
# Quarter-hour noise: AR(1), multiplicative.
_QH_AR_PHI = 0.5
_QH_SIGMA = {"office": 0.035, "household": 0.06, "farm": 0.05}
# Fixed days off (day of year, 0 = 1 January) plus this many seeded random weekdays off.
_FIXED_HOLIDAYS = (0, 358, 359)
_RANDOM_HOLIDAYS = 8


def _bell(hour: np.ndarray, centre_h: float, sigma_h: float) -> np.ndarray:
    d = (hour - centre_h + 12.0) % 24.0 - 12.0
    return np.exp(-0.5 * (d / sigma_h) ** 2)


def _window(hour: np.ndarray, on_h: float, off_h: float, ramp_h: float) -> np.ndarray:
    """About 1 between `on_h` and `off_h`, with logistic ramps of width `ramp_h`."""
    rise = 1.0 / (1.0 + np.exp(-(hour - on_h) / ramp_h))
    fall = 1.0 / (1.0 + np.exp(-(off_h - hour) / ramp_h))
    return rise * fall


def day_shapes(shape: str) -> dict[str, np.ndarray]:
    """Normalised daily shapes (96 quarter-hours, roughly 0.2..1) for weekday, saturday, sunday.

    Sundays and days off share the "sunday" shape. Office (G1-like): low base, ramp 6-9 h,
    plateau with a lunch bump, ramp down 16-19 h; Saturday a short morning; Sunday base load.
    Household (H0-like): night base, morning peak, midday cooking peak (largest on Sunday),
    evening peak around 19-20 h. Farm (L0-like, a dairy): the same every day but for a lower
    midday at weekends; milking (pumps, cooling) peaks 05-07 h and 17-19 h, fieldwork and
    feeding between them, a night base of ventilation and cooling.
    """
    shape = _ALIASES.get(shape, shape)
    hour = (np.arange(STEPS_PER_DAY) + 0.5) / 4.0
    if shape == "office":
        weekday = 0.22 + 0.68 * _window(hour, 7.5, 17.5, 0.6) + 0.10 * _bell(hour, 12.5, 0.8)
        saturday = 0.22 + 0.30 * _window(hour, 8.5, 13.0, 0.5)
        sunday = 0.20 + 0.03 * _bell(hour, 12.0, 3.0)
    elif shape == "household":
        weekday = (
            0.24
            + 0.30 * _bell(hour, 7.0, 0.8)
            + 0.22 * _bell(hour, 12.5, 1.3)
            + 0.12 * _window(hour, 8.0, 17.0, 1.0)
            + 0.62 * _bell(hour, 19.3, 1.7)
        )
        saturday = (
            0.25
            + 0.32 * _bell(hour, 9.5, 1.3)
            + 0.34 * _bell(hour, 12.8, 1.5)
            + 0.20 * _window(hour, 9.0, 18.0, 1.0)
            + 0.55 * _bell(hour, 19.0, 1.8)
        )
        sunday = (
            0.25
            + 0.26 * _bell(hour, 10.0, 1.4)
            + 0.55 * _bell(hour, 12.5, 1.2)
            + 0.18 * _window(hour, 10.0, 18.0, 1.0)
            + 0.52 * _bell(hour, 18.8, 1.8)
        )
    elif shape == "farm":
        milking = 0.28 + 0.62 * _bell(hour, 6.0, 0.75) + 0.55 * _bell(hour, 18.0, 0.75)
        day_work = _window(hour, 8.0, 16.5, 0.8)
        weekday = milking + 0.18 * day_work + 0.05 * _bell(hour, 12.5, 1.0)
        saturday = milking + 0.14 * day_work
        sunday = milking + 0.09 * day_work
    else:
        raise ValueError(f"unknown load shape {shape!r}: use one of {', '.join(SHAPES)}")
    return {"weekday": weekday, "saturday": saturday, "sunday": sunday}


def _ar1(rng: np.random.Generator, n: int, phi: float, sigma: float) -> np.ndarray:
    """A stationary AR(1) series of length n with standard deviation `sigma`."""
    shocks = rng.normal(0.0, sigma * np.sqrt(1.0 - phi * phi), size=n)
    out = np.empty(n)
    out[0] = rng.normal(0.0, sigma)
    for i in range(1, n):
        out[i] = phi * out[i - 1] + shocks[i]
    return out


def _days_off(rng: np.random.Generator, start_weekday: int) -> np.ndarray:
    day = np.arange(DAYS_PER_YEAR)
    candidates = np.setdiff1d(day[(day + start_weekday) % 7 < 5], _FIXED_HOLIDAYS)
    return np.concatenate([_FIXED_HOLIDAYS, rng.choice(candidates, _RANDOM_HOLIDAYS, replace=False)])


def holidays(seed: int = 0, start_weekday: int = 0) -> tuple[int, ...]:
    """The days (0-based) that `synthetic_year` with this seed gives the Sunday shape to
    although they are working days: the site's holiday calendar."""
    return tuple(sorted(int(d) for d in _days_off(np.random.default_rng(seed), start_weekday)))


def synthetic_year(
    seed: int = 0, shape: str = "office", peak_kw: float = 60.0, start_weekday: int = 0
) -> np.ndarray:
    """365 days x 96 quarter-hours of load in kW (35040 values), never negative.

    Day 0 is 1 January and weekday `start_weekday` (0 = Monday; pair it with the timestamps
    you use: Unix time 0 is a Thursday, 3). Ingredients: the day's shape by type (weekday,
    Saturday, Sunday; public-holiday-like days off, three fixed and eight seeded, use the
    Sunday shape); a seasonal factor (household: about +-18 % with the winter high; office:
    +-6 % plus a summer cooling bump on the working hours; farm: +-12 %, winter high, stable
    lighting and heating); a weather-like AR(1) daily scale
    factor (phi 0.75, sd 7 %); and small AR(1) quarter-hour noise. Scaled so that the
    year's maximum is exactly `peak_kw`.
    """
    if not (np.isfinite(peak_kw) and peak_kw > 0.0):
        raise ValueError(f"peak_kw must be a finite number > 0, got {peak_kw}")
    if start_weekday not in range(7):
        raise ValueError(f"start_weekday must be 0 (Monday) .. 6 (Sunday), got {start_weekday}")
    canonical = _ALIASES.get(shape, shape)
    shapes = day_shapes(canonical)
    rng = np.random.default_rng(seed)

    day = np.arange(DAYS_PER_YEAR)
    weekday = (day + start_weekday) % 7
    day_type = np.where(weekday == 6, 2, np.where(weekday == 5, 1, 0))
    day_type[_days_off(rng, start_weekday)] = 2
    table = np.stack([shapes["weekday"], shapes["saturday"], shapes["sunday"]])
    base = table[day_type]  # (365, 96)

    winter = np.cos(2.0 * np.pi * (day - 15.0) / DAYS_PER_YEAR)[:, None]  # +1 mid-January
    weather = _ar1(rng, DAYS_PER_YEAR, _DAILY_AR_PHI, _DAILY_SIGMA)[:, None]
    hour = (np.arange(STEPS_PER_DAY) + 0.5) / 4.0
    if canonical == "office":
        cooling = 0.22 * np.exp(-0.5 * ((day - 200.0) / 28.0) ** 2)[:, None]
        working = (day_type < 2)[:, None] * _window(hour, 9.0, 18.0, 0.8)[None, :]
        load = base * (1.0 + 0.06 * winter) + cooling * working * (1.0 + 3.0 * weather)
    else:
        load = base * (1.0 + (0.12 if canonical == "farm" else 0.18) * winter)
    load = load * (1.0 + weather)

    flat = load.reshape(-1)
    flat = flat * (1.0 + _ar1(rng, flat.size, _QH_AR_PHI, _QH_SIGMA[canonical]))
    flat = np.clip(flat, 0.0, None)
    return flat * (peak_kw / flat.max())


def timestamps_s(n: int, start_s: float = 0.0, step_s: float = STEP_S) -> np.ndarray:
    """The times of n samples: `start_s + i * step_s` for i in 0..n-1 (seconds)."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if not (np.isfinite(step_s) and step_s > 0.0):
        raise ValueError(f"step_s must be a finite number > 0, got {step_s}")
    return start_s + step_s * np.arange(n, dtype=np.float64)


# PV cloudiness: a daily clearness index (AR(1) on its logit) and quarter-hour flicker (AR(1))
# whose size is largest on half-clear days (broken cloud) and small on clear or overcast ones.
_PV_DAILY_PHI = 0.6
_PV_QH_PHI = 0.85
_PV_FLICKER = 0.45
_PV_LOSSES = 0.86  # inverter, temperature, soiling: a clear summer noon gives ~85 % of peak_kw


def clear_sky_fraction(latitude_deg: float = 50.0, tilt_deg: float = 35.0) -> np.ndarray:
    """365 x 96 irradiance on a south-facing panel tilted `tilt_deg`, as a fraction of
    1000 W/m2, at local solar time (noon = 12:00; shifting it to a site's clock is the
    caller's business): Cooper's declination, Meinel's air-mass attenuation of 1353 W/m2
    beam, plus a diffuse tenth; zero while the sun is below the horizon."""
    day = np.arange(DAYS_PER_YEAR)[:, None] + 1.0
    hour = (np.arange(STEPS_PER_DAY)[None, :] + 0.5) / 4.0
    decl = np.radians(23.44) * np.sin(2.0 * np.pi * (284.0 + day) / DAYS_PER_YEAR)
    omega = np.radians(15.0 * (hour - 12.0))
    lat, tilt = np.radians(latitude_deg), np.radians(tilt_deg)
    sin_elev = np.sin(lat) * np.sin(decl) + np.cos(lat) * np.cos(decl) * np.cos(omega)
    cos_incidence = np.sin(lat - tilt) * np.sin(decl) + np.cos(lat - tilt) * np.cos(decl) * np.cos(omega)
    up = sin_elev > 0.01
    air_mass = 1.0 / np.where(up, sin_elev, 1.0)
    beam = 1.353 * 0.7 ** (air_mass**0.678)
    return np.where(up, beam * (np.maximum(cos_incidence, 0.0) + 0.1 * sin_elev), 0.0)


def pv_year(seed: int = 0, peak_kw: float = 10.0, latitude_deg: float = 50.0) -> np.ndarray:
    """365 days x 96 quarter-hours of PV output in kW (35040 values, 0 at night, at most
    `peak_kw`), day 0 = 1 January, solar time. The clear-sky bell of `clear_sky_fraction`
    times a seeded cloudiness: each day's clearness (mean ~0.4 in winter, ~0.7 in summer,
    day to day AR(1)) and, within a day, quarter-hour AR(1) flicker that is strongest on
    half-cloudy days. Roughly 900-1000 kWh per kW of `peak_kw` a year at 50 N, as in Germany."""
    if not (np.isfinite(peak_kw) and peak_kw > 0.0):
        raise ValueError(f"peak_kw must be a finite number > 0, got {peak_kw}")
    rng = np.random.default_rng([seed, 0x5057])  # not the load's stream for the same seed
    day = np.arange(DAYS_PER_YEAR)
    mean = 0.55 + 0.17 * np.cos(2.0 * np.pi * (day - 172.0) / DAYS_PER_YEAR)
    latent = np.log(mean / (1.0 - mean)) + 1.4 * _ar1(rng, DAYS_PER_YEAR, _PV_DAILY_PHI, 1.0)
    clearness = 1.0 / (1.0 + np.exp(-latent))
    broken = 4.0 * clearness * (1.0 - clearness)  # 1 at half-clear, 0 at clear or overcast
    flicker = _ar1(rng, DAYS_PER_YEAR * STEPS_PER_DAY, _PV_QH_PHI, 1.0).reshape(DAYS_PER_YEAR, -1)
    cloud = np.clip(clearness[:, None] * (1.0 + _PV_FLICKER * broken[:, None] * flicker), 0.03, 1.05)
    pv = _PV_LOSSES * clear_sky_fraction(latitude_deg) * cloud * peak_kw
    return np.minimum(pv, peak_kw).reshape(-1)
