"""A fixed-bucket histogram cheap enough for hot paths (one bisect and two additions).

Owns counting observations into Prometheus-style `le` buckets; `node.metrics` turns it into
a metric family at scrape time. Pure: no I/O, no clock, no locks (one asyncio loop writes it).
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Sequence

#: seconds, for commits and dispatch cycles (etcd's disk/commit buckets, 1 ms .. 8 s)
COMMIT_BUCKETS_S = (
    0.001,
    0.002,
    0.004,
    0.008,
    0.016,
    0.032,
    0.064,
    0.128,
    0.256,
    0.512,
    1.024,
    2.048,
    4.096,
    8.192,
)
#: seconds, for a device poll (all its blocks): 1 ms .. 5 s
POLL_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # value == bound counts in `le=bound`
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, float]]:
        """(`le`, observations at most `le`) for every bound and +Inf, as Prometheus wants."""
        out, total = [], 0
        for bound, n in zip((*map(repr, self.bounds), "+Inf"), self.counts, strict=True):
            total += n
            out.append((bound, float(total)))
        return out
