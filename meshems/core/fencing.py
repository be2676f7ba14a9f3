"""Fencing of committed setpoints: which committed value a node may actuate.

Pure. A setpoint is identified by the (term, index) of the log entry that committed it;
a node actuates a device's setpoint only if that token is newer than the last one it
applied to the device, so a stale or replayed setpoint can never drive a device.
"""

from __future__ import annotations

Token = tuple[int, int]


def newer(candidate: Token, applied: Token | None) -> bool:
    """True if `candidate` may be actuated after `applied` (tokens order by term, then index)."""
    return applied is None or candidate > applied


def pv_limit_pct(kw: float, rated_kw: float) -> float:
    """A PV setpoint in kW as the inverter's active-power limit in % of its rating."""
    if rated_kw <= 0:
        return 100.0
    return max(0.0, min(100.0, kw / rated_kw * 100.0))
