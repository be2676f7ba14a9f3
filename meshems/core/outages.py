"""Outages of the links a node depends on (the cloud broker, each Raft peer), as log events.

`meshems status` shows a link that is down right now; a log must also say, afterwards, when
it went down and for how long. `OutageLog` turns periodic up/down observations into two
events per outage: `down` once the link has been down for `grace_s` (a blip shorter than
that is not an outage), and `up` with the outage's duration when it returns. Pure: the
caller passes the time and writes the log lines.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GRACE_S = 3.0  # a peer or broker gone for less than this is a blip, not an outage


@dataclass(frozen=True, slots=True)
class OutageEvent:
    """`kind` "down" (reported `grace_s` after it began), "up" (with `duration_s`) or "end"
    (no longer watched while down: `duration_s` so far)."""

    kind: str
    link: str
    since_s: float
    duration_s: float

    def message(self) -> str:
        if self.kind == "down":
            return f"{self.link} unreachable for {self.duration_s:.0f} s"
        if self.kind == "end":
            return f"{self.link} no longer watched, after {self.duration_s:.1f} s unreachable"
        return f"{self.link} reachable again after an outage of {self.duration_s:.1f} s"


@dataclass(slots=True)
class OutageLog:
    """Per link: since when it is down (monotonic seconds) and whether that was reported."""

    grace_s: float = GRACE_S
    _down_since_s: dict[str, float] = field(default_factory=dict)
    _reported: set[str] = field(default_factory=set)

    def observe(self, link: str, up: bool, now_s: float) -> OutageEvent | None:
        """One observation of `link`; the event to log, if any."""
        since = self._down_since_s.get(link)
        if not up:
            if since is None:
                self._down_since_s[link] = now_s
                return None
            if link not in self._reported and now_s - since >= self.grace_s:
                self._reported.add(link)
                return OutageEvent("down", link, since, now_s - since)
            return None
        if since is None:
            return None
        del self._down_since_s[link]
        if link in self._reported:
            self._reported.discard(link)
            return OutageEvent("up", link, since, now_s - since)
        return None

    def forget(self, link: str, now_s: float) -> OutageEvent | None:
        """Stop watching `link` (e.g. no longer leader, so no longer connected to the broker);
        an outage already reported ends with an "end" event naming its duration so far."""
        since = self._down_since_s.pop(link, None)
        if since is not None and link in self._reported:
            self._reported.discard(link)
            return OutageEvent("end", link, since, now_s - since)
        return None

    def down(self) -> dict[str, float]:
        """The links down right now and since when."""
        return dict(self._down_since_s)
