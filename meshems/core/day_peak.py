"""The day's highest quarter-hour mean of the zone's base load (import with every battery at
0) so far, as the leader's dispatch sees it (UTC days).

In peak mode, charging from the grid never lifts the import above it: below the load the day
has already drawn, charging cannot create a new billing peak, whatever the forecast said (a
forecast for a working day on a holiday asks for energy the day will not need; charging for
it would make the very peak it expects). Pure: time comes in as an argument.
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
    peak_kw: float = 0.0  # of the quarter-hours closed today

    def add(self, wall_s: float, base_kw: float) -> None:
        """One sample of the zone base load (kW) at `wall_s`."""
        if not math.isfinite(base_kw):
            return
        day, step = int(wall_s // DAY_S), int(wall_s // self.step_s)
        if step != self._step:
            if self._n and self._day == day:
                self.peak_kw = max(self.peak_kw, self._sum / self._n)
            if day != self._day:
                self._day, self.peak_kw = day, 0.0
            self._step, self._sum, self._n = step, 0.0, 0
        self._sum += base_kw
        self._n += 1

    def value(self, wall_s: float) -> float:
        """The day's peak so far at `wall_s`: of its closed quarter-hours (a running mean of a
        few noisy samples would overstate it); 0 on a new day."""
        return self.peak_kw if int(wall_s // DAY_S) == self._day else 0.0
