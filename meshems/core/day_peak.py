"""The zone import's quarter-hour means today, as the leader's dispatch sees them (UTC days):
the billing peak the day has already reached (the planner's floor: shaving below it buys
nothing) and the quarter-hour under way, so dispatch can hold its mean at the planned peak
(`quarter_allowance_kw`: the billing peak is a quarter-hour mean, not an instant). Pure: time
comes in as an argument.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

STEP_S = 900.0
DAY_S = 86400.0


@dataclass
class DayPeak:
    step_s: float = STEP_S
    _day: int = -1
    _step: int = -1
    _sum: float = 0.0
    _n: int = 0
    _first_s: float = 0.0  # the current quarter-hour's first sample
    peak_kw: float = 0.0  # of the quarter-hours closed today

    def add(self, wall_s: float, base_kw: float) -> None:
        """One sample of the zone import (kW) at `wall_s`."""
        if not math.isfinite(base_kw):
            return
        day, step = int(wall_s // DAY_S), int(wall_s // self.step_s)
        if step != self._step:
            if self._n and self._day == day:
                self.peak_kw = max(self.peak_kw, self._sum / self._n)
            if day != self._day:
                self._day, self.peak_kw = day, 0.0
            self._step, self._sum, self._n, self._first_s = step, 0.0, 0, wall_s
        self._sum += base_kw
        self._n += 1

    def value(self, wall_s: float) -> float:
        """The day's peak so far at `wall_s`: of its closed quarter-hours (a running mean of a
        few noisy samples would overstate it); 0 on a new day."""
        return self.peak_kw if int(wall_s // DAY_S) == self._day else 0.0

    def quarter(self, wall_s: float) -> tuple[float, float, float] | None:
        """This quarter-hour so far: the mean of its samples, the seconds they cover (since the
        first: a leader that took over mid-quarter knows only its own part) and the seconds
        left; None before a sample of it."""
        if not self._n or int(wall_s // self.step_s) != self._step:
            return None
        return self._sum / self._n, wall_s - self._first_s, (self._step + 1) * self.step_s - wall_s


#: the quarter-hour's last minute is tracked as if a minute were left (no wild swings)
MIN_REMAINING_S = 60.0


def quarter_allowance_kw(
    peak_kw: float,
    mean_kw: float,
    covered_s: float,
    remaining_s: float,
    min_remaining_s: float = MIN_REMAINING_S,
) -> float:
    """The import for the rest of a quarter-hour that ends it with a mean of `peak_kw`, given
    the mean over the `covered_s` seen so far (the part before it counts as at the peak) and
    `remaining_s` to go: the billing peak is a quarter-hour mean, so a minute under the peak
    leaves room for a minute over it (clipping every instant at the peak spends battery
    energy on noise the mean never sees). Above `peak_kw` after quiet minutes, below it after
    minutes over it (the battery makes up for them while it can)."""
    if not all(math.isfinite(x) for x in (mean_kw, covered_s, remaining_s)):
        return peak_kw
    covered = min(max(0.0, covered_s), STEP_S)
    return max(0.0, peak_kw + (peak_kw - mean_kw) * covered / max(remaining_s, min_remaining_s))
