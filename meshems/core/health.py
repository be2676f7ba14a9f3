"""Field-device health: the state a poller reports for a device and when it polls next.

Pure: time comes in as arguments. A device is `ok` while fresh readings arrive, `stale`
when its last good reading is older than its staleness bound, `defective` after repeated
failures (it is then polled at a backed-off, capped interval), `unknown` before any answer.
"""

from __future__ import annotations

from typing import Literal

DeviceState = Literal["unknown", "ok", "stale", "defective"]

#: consecutive failed polls after which a device is defective (and backed off)
DEFECTIVE_AFTER = 3
#: a reading is stale after this many poll intervals without a fresh one
STALE_AFTER_INTERVALS = 3.0
#: backed-off polls of a failing device are at most this far apart
BACKOFF_CAP_S = 30.0


def device_state(now: float, last_ok: float | None, interval_s: float, failures: int) -> DeviceState:
    """The health of a device from its last good reading and its run of failures."""
    if failures >= DEFECTIVE_AFTER:
        return "defective"
    if last_ok is None:
        return "unknown"
    if now - last_ok > stale_after_s(interval_s):
        return "stale"
    return "ok"


def stale_after_s(interval_s: float) -> float:
    return STALE_AFTER_INTERVALS * interval_s + 0.5


def next_poll_at(due: float, now: float, interval_s: float, failures: int) -> float:
    """When to poll next: on the device's cadence while it answers (skipping missed slots
    rather than bursting to catch up), exponentially backed off (capped) while it fails."""
    if failures == 0:
        nxt = due + interval_s
        if nxt <= now:  # we fell behind: skip to the next slot in the future
            nxt = due + interval_s * (int((now - due) / interval_s) + 1)
            while nxt <= now:  # float rounding can land exactly on `now`
                nxt += interval_s
        return nxt
    backoff = interval_s * (2 ** min(failures - 1, 16))
    return now + min(max(backoff, interval_s), max(BACKOFF_CAP_S, interval_s))
