"""The fault run's control invariant: the zone import stays above the import limit, beyond
what the batteries could still have covered, for no more than `GATE_S` at a time.

Owns the rule (`over_limit`) and one battery's headroom (`battery_headroom_kw`). Pure: no
clock, no I/O (`lab.meters` samples the simulated sites' meters and batteries).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

#: the longest a coverable excess may last (the issue's "under 2 s at a time")
GATE_S = 2.0
#: an excess (and the headroom that could cover it) counts above this, not the meters' jitter
TOLERANCE_KW = 0.5
#: Policy's "no limit" (core.policy: 1e9 means no limit)
NO_LIMIT_KW = 1e9


@dataclass(frozen=True)
class LimitSample:
    """One look at the zone: the grid meters' import summed, the limit, and how much more the
    batteries could have discharged (all of them; and only those whose gateway runs)."""

    t_s: float
    import_kw: float
    limit_kw: float
    headroom_kw: float
    controllable_kw: float | None = None  # None: every battery's gateway runs


@dataclass(frozen=True)
class Stretch:
    start_s: float
    duration_s: float
    peak_excess_kw: float


@dataclass
class LimitReport:
    """Over-limit stretches the batteries could have covered, and the time left out."""

    samples: int = 0
    violations: list[Stretch] = field(default_factory=list)  # the stretches longer than GATE_S
    stretches: int = 0  # every coverable over-limit stretch, short ones too
    longest: Stretch | None = None
    excluded_s: float = 0.0  # coverable only by batteries whose gateway was down
    uncoverable_s: float = 0.0  # over the limit with no battery headroom left
    peak_import_kw: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.violations

    @property
    def longest_s(self) -> float:
        return self.longest.duration_s if self.longest else 0.0


def battery_headroom_kw(
    power_kw: float, max_discharge_kw: float, soc_pct: float, soc_min_pct: float
) -> float:
    """How much more one battery could discharge now (`power_kw` + is discharge): none at
    its SoC floor, else up to its inverter's limit."""
    if soc_pct <= soc_min_pct:
        return 0.0
    return max(0.0, max_discharge_kw - power_kw)


def site_headroom_kw(status: Mapping[str, Any]) -> float:
    """A simulated site's battery headroom from its status (`GET /v1/site` of `meshems sim`;
    no battery: 0)."""
    b = status.get("battery")
    return (
        battery_headroom_kw(b["power_kw"], b["max_discharge_kw"], b["soc_pct"], b["soc_min_pct"])
        if b
        else 0.0
    )


def _coverable(s: LimitSample, tolerance_kw: float, headroom_kw: float) -> bool:
    return min(s.import_kw - s.limit_kw, headroom_kw) > tolerance_kw


def over_limit(
    samples: Sequence[LimitSample], gate_s: float = GATE_S, tolerance_kw: float = TOLERANCE_KW
) -> LimitReport:
    """The stretches (consecutive samples, in time order) where the import was above the
    limit by more than `tolerance_kw` while the batteries had more than that to give. A
    stretch runs from its first sample to the first sample after it that is not over (or
    its last sample, at the end of the series): the end is known only to that resolution,
    so a stretch is never reported shorter than it may have been. Time over the limit that
    only batteries behind a stopped gateway could have covered is `excluded_s`; time with no
    headroom at all is `uncoverable_s`; neither counts."""
    rep = LimitReport(samples=len(samples))
    start: LimitSample | None = None
    peak = 0.0
    for i, s in enumerate(samples):
        rep.peak_import_kw = max(rep.peak_import_kw, s.import_kw)
        nxt = samples[i + 1].t_s if i + 1 < len(samples) else s.t_s
        usable = s.headroom_kw if s.controllable_kw is None else s.controllable_kw
        over = _coverable(s, tolerance_kw, usable)
        if not over and s.import_kw - s.limit_kw > tolerance_kw:
            if _coverable(s, tolerance_kw, s.headroom_kw):
                rep.excluded_s += nxt - s.t_s
            else:
                rep.uncoverable_s += nxt - s.t_s
        if over:
            if start is None:
                start, peak = s, 0.0
            peak = max(peak, s.import_kw - s.limit_kw)
        if start is not None and (not over or i + 1 == len(samples)):
            _close(rep, Stretch(start.t_s, s.t_s - start.t_s, peak), gate_s)
            start = None
    rep.excluded_s, rep.uncoverable_s = round(rep.excluded_s, 3), round(rep.uncoverable_s, 3)
    return rep


def _close(rep: LimitReport, stretch: Stretch, gate_s: float) -> None:
    rep.stretches += 1
    if rep.longest is None or stretch.duration_s > rep.longest.duration_s:
        rep.longest = stretch
    if stretch.duration_s > gate_s:
        rep.violations.append(stretch)
