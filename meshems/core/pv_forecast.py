"""PV forecast from the PV's own history, and the node's base-load forecast built from it.

The PV forecast is a clear-sky shape fitted to recent days: at each quarter-hour of the day
the highest output of the last 14 days (the envelope), scaled by the clearness of the last 3
days (their energy over the envelope's), and in daylight by the clearness of the last 3 hours,
which weighs most for the hours just ahead (a cloudy morning is likely a cloudy noon). No
weather input: a sunny day after cloudy ones is underestimated until its sun is seen, and
the other way round. The base load a node plans with is its load
forecast (`core.load_history.load_forecast`, on the load with the PV added back) less this PV
forecast: load and PV follow different clocks (working days; the sun and the weather), and
one model of their difference forecasts both badly. Pure: numpy only, time comes in.
"""

from __future__ import annotations

import math

import numpy as np

from meshems.core.days_off import with_days_off
from meshems.core.forecast_model import ForecastModel
from meshems.core.load_history import NO_HISTORY, LoadForecast, LoadHistory, load_forecast, up_to

ENVELOPE_DAYS = 14
CLEARNESS_DAYS = 3
#: the last hours' own clearness (their PV over the envelope's) ...
TODAY_WINDOW_S = 3 * 3600.0
#: ... counts when the envelope's energy in them is at least this share of a whole day's
TODAY_MIN_SHARE = 0.05
#: and weighs exp(-ahead / TODAY_DECAY_S) against the days' clearness, `ahead` the time from
#: the issue to a step: a cloudy morning is likely a cloudy noon, says little of tomorrow
TODAY_DECAY_S = 4 * 3600.0


def pv_forecast(history: LoadHistory, start_s: float, steps: int) -> tuple[np.ndarray, str] | None:
    """PV output (kW) for `steps` quarter-hours from `start_s` (a step boundary) and its basis;
    None without a full day of PV history."""
    day = round(86400 / history.step_s)
    if history.t0_s is None:
        return None
    series, _ = up_to(history, start_s)
    days = min(ENVELOPE_DAYS, len(series) // day)
    if days < 1:
        return None
    past = series[len(series) - days * day :].reshape(days, day)
    if np.isnan(past).all():
        return None
    with np.errstate(all="ignore"):
        envelope = np.nan_to_num(np.nanmax(past, axis=0), nan=0.0)
    recent = past[-min(CLEARNESS_DAYS, days) :]
    possible = float((envelope * np.isfinite(recent)).sum())
    clearness = float(np.nansum(recent)) / possible if possible > 0 else 0.0
    clearness = min(max(clearness, 0.0), 1.0)
    # past[k] starts at the same time of day as start_s: the envelope is in the right phase,
    # and its last entries are the hours just before start_s
    shape = np.tile(envelope, math.ceil(steps / day))[:steps]
    window = max(1, round(TODAY_WINDOW_S / history.step_s))
    lit = float(envelope[-window:].sum())
    if lit < TODAY_MIN_SHARE * float(envelope.sum()) or not np.isfinite(past[-1, -window:]).all():
        return shape * clearness, f"PV clear-sky x {clearness:.2f}"
    today = min(max(float(past[-1, -window:].sum()) / lit, 0.0), 1.0)
    weight = np.exp(-np.arange(steps) * history.step_s / TODAY_DECAY_S)
    kw = shape * (weight * today + (1.0 - weight) * clearness)
    return kw, f"PV clear-sky x {clearness:.2f} (last {TODAY_WINDOW_S / 3600:g} h x {today:.2f})"


def base_forecast(
    load: LoadHistory,
    pv: LoadHistory | None,
    now_s: float,
    model: ForecastModel | None = None,
    days_off: frozenset[int] = frozenset(),
) -> LoadForecast:
    """The node's base load ahead (import with its batteries at 0): its load forecast (days
    off like the last Sunday, `core.days_off`) less its PV forecast, with both bases named.
    Without PV history, the load forecast alone."""
    f = with_days_off(load_forecast(load, now_s, model), load, days_off)
    if pv is None or f.basis == NO_HISTORY:
        return f
    solar = pv_forecast(pv, f.start_s, len(f.kw))
    if solar is None:
        return f
    kw, basis = solar
    return LoadForecast(f.start_s, f.step_s, f.kw - kw, f"{f.basis} - {basis}")
