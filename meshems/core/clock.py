"""Peer clock offsets, NTP-style: four timestamps of one request to a peer (t1 sent, t2 the
peer received, t3 the peer answered, t4 received back) give the peer's offset from our clock
and the round trip without it; `ClockWatch` keeps the latest per peer and says when the zone
has a skew (any |offset| over SKEW_S: TLS and certificate validity break beyond it, as the
manual warns). Pure: times come in.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: an offset beyond this raises A_CLOCK_SKEW (the manual: drift over 500 ms breaks TLS)
SKEW_S = 0.5
#: a measurement older than this is not used (the peer stopped answering)
MAX_AGE_S = 60.0


def offset_and_rtt(t1: float, t2: float, t3: float, t4: float) -> tuple[float, float]:
    """(the peer's clock minus ours, the round trip without the peer's own time), seconds."""
    return ((t2 - t1) + (t3 - t4)) / 2, (t4 - t1) - (t3 - t2)


@dataclass
class ClockWatch:
    """The latest offset per peer, and whether the alarm is up."""

    skew_s: float = SKEW_S
    offsets: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # peer -> (offset, rtt, at)
    alarm: bool = False

    def measured(self, peer: str, t1: float, t2: float, t3: float, t4: float, now_s: float) -> None:
        offset, rtt = offset_and_rtt(t1, t2, t3, t4)
        self.offsets[peer] = (offset, rtt, now_s)

    def current(self, now_s: float) -> dict[str, float]:
        """Peer -> offset (s) of the measurements younger than MAX_AGE_S."""
        return {p: o for p, (o, _, at) in sorted(self.offsets.items()) if now_s - at <= MAX_AGE_S}

    def update_alarm(self, now_s: float) -> bool | None:
        """Re-evaluate the alarm: True when it was raised now, False when cleared now, None
        when unchanged."""
        skewed = any(abs(o) > self.skew_s for o in self.current(now_s).values())
        if skewed == self.alarm:
            return None
        self.alarm = skewed
        return skewed
