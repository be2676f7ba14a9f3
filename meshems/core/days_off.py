"""Days off in a node's load forecast: a holiday or closure forecast like the last Sunday.

A load model learns working days from the weekday; told nothing, it forecasts a holiday as a
working day, and in peak mode the batteries would charge overnight for a peak that never
comes, making one. The zone policy lists the days off (`Policy.days_off`, UTC days); on
those steps the load forecast becomes the load of the most recent Sunday in the node's own
history at the same time of day. Pure: numpy only, time comes in.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from meshems.core.load_history import LoadForecast, LoadHistory
from meshems.core.policy import Policy

DAY_S = 86400.0
SUNDAY = 6  # Monday = 0; Unix day 0 (1970-01-01) was a Thursday (3)


def weekday(t_s: float) -> int:
    """Monday = 0 .. Sunday = 6 of the UTC day holding `t_s`."""
    return (int(t_s // DAY_S) + 3) % 7


def policy_days_off(policy: Policy | None) -> frozenset[int]:
    """The zone policy's days off as Unix day numbers (none without a policy)."""
    return policy.day_numbers_off() if policy is not None else frozenset()


def with_days_off(f: LoadForecast, history: LoadHistory, days_off: frozenset[int]) -> LoadForecast:
    """`f` with each step on a day off (Unix day numbers) replaced by the load of the most
    recent Sunday before the forecast at that time of day (the step unchanged when the
    history has no such value)."""
    if not days_off or history.t0_s is None or not len(f.kw):
        return f
    series = history.series()
    step, t0 = history.step_s, history.t0_s
    kw = np.array(f.kw, dtype=float)
    changed = 0
    for i in range(kw.size):
        t = f.start_s + i * f.step_s
        if int(t // DAY_S) not in days_off:
            continue
        back = ((weekday(t) - SUNDAY) % 7 or 7) * DAY_S  # to the Sunday before this day
        sunday = t - back
        while sunday >= f.start_s:  # the forecast's own days are not history yet
            sunday -= 7 * DAY_S
        k = round((sunday - t0) / step)
        if 0 <= k < series.size and np.isfinite(series[k]):
            kw[i] = series[k]
            changed += 1
    return f if not changed else replace(f, kw=kw, basis=f"{f.basis}, days off as the last Sunday")
