"""Unit tests for `meshems.core.health`: the state a poller reports and when it polls next.

Both functions are pure (time is an argument), so the tests are tables of (now, last good
reading, interval, failures) plus properties over random times. Properties that assert
exact slot alignment use dyadic times and intervals (exact in binary floating point), so
they test the rule rather than rounding; a separate property covers arbitrary floats.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshems.core.health import (
    BACKOFF_CAP_S,
    DEFECTIVE_AFTER,
    STALE_AFTER_INTERVALS,
    device_state,
    next_poll_at,
    stale_after_s,
)

PROPS = settings(max_examples=150, deadline=None)

# --- device_state --------------------------------------------------------------------------


def test_constants_are_the_documented_ones() -> None:
    assert DEFECTIVE_AFTER == 3
    assert STALE_AFTER_INTERVALS == 3.0
    assert BACKOFF_CAP_S == 30.0


@pytest.mark.parametrize(
    ("interval", "bound"),
    [(1.0, 3.5), (0.5, 2.0), (0.25, 1.25), (2.0, 6.5), (10.0, 30.5), (0.0, 0.5)],
)
def test_stale_bound_is_three_intervals_plus_half_a_second(interval: float, bound: float) -> None:
    assert stale_after_s(interval) == bound


STATES = [
    # (case, now, last_ok, interval, failures, expected)
    ("never answered", 100.0, None, 1.0, 0, "unknown"),
    ("never answered, some failures", 100.0, None, 1.0, DEFECTIVE_AFTER - 1, "unknown"),
    ("never answered, defective", 100.0, None, 1.0, DEFECTIVE_AFTER, "defective"),
    ("fresh reading", 100.0, 100.0, 1.0, 0, "ok"),
    ("one interval old", 101.0, 100.0, 1.0, 0, "ok"),
    ("exactly at the bound is still ok", 103.5, 100.0, 1.0, 0, "ok"),
    ("just past the bound", 103.5 + 2**-20, 100.0, 1.0, 0, "stale"),
    ("well past the bound", 200.0, 100.0, 1.0, 0, "stale"),
    ("slow device, 5 s old", 105.0, 100.0, 2.0, 0, "ok"),
    ("slow device, at its bound", 106.5, 100.0, 2.0, 0, "ok"),
    ("slow device, past its bound", 106.75, 100.0, 2.0, 0, "stale"),
    ("fast device, 1.25 s old", 101.25, 100.0, 0.25, 0, "ok"),
    ("fast device, 1.5 s old", 101.5, 100.0, 0.25, 0, "stale"),
    ("fresh with failures below the limit", 100.0, 100.0, 1.0, DEFECTIVE_AFTER - 1, "ok"),
    ("stale with failures below the limit", 110.0, 100.0, 1.0, DEFECTIVE_AFTER - 1, "stale"),
    ("fresh but defective", 100.0, 100.0, 1.0, DEFECTIVE_AFTER, "defective"),
    ("fresh but many failures", 100.0, 100.0, 1.0, 50, "defective"),
    ("stale and defective", 500.0, 100.0, 1.0, DEFECTIVE_AFTER, "defective"),
    ("reading from the future (clock step back)", 90.0, 100.0, 1.0, 0, "ok"),
]


@pytest.mark.parametrize(
    ("case", "now", "last_ok", "interval", "failures", "expected"), STATES, ids=[s[0] for s in STATES]
)
def test_device_state(
    case: str, now: float, last_ok: float | None, interval: float, failures: int, expected: str
) -> None:
    assert device_state(now, last_ok, interval, failures) == expected


times = st.floats(0, 1e6, allow_nan=False)
intervals = st.floats(0.01, 600, allow_nan=False)


@PROPS
@given(times, st.one_of(st.none(), times), intervals, st.integers(0, 100))
def test_device_state_follows_the_rules(now: float, last_ok: float | None, interval: float, n: int) -> None:
    state = device_state(now, last_ok, interval, n)
    if n >= DEFECTIVE_AFTER:
        assert state == "defective"
    elif last_ok is None:
        assert state == "unknown"
    elif now - last_ok > STALE_AFTER_INTERVALS * interval + 0.5:
        assert state == "stale"
    else:
        assert state == "ok"


@PROPS
@given(times, intervals, st.integers(0, DEFECTIVE_AFTER - 1))
def test_a_reading_goes_stale_once_and_stays_stale(last_ok: float, interval: float, n: int) -> None:
    bound = stale_after_s(interval)
    assert device_state(last_ok, last_ok, interval, n) == "ok"
    assert device_state(last_ok + bound * 0.999, last_ok, interval, n) == "ok"
    assert device_state(last_ok + bound * 1.001 + 1e-3, last_ok, interval, n) == "stale"
    assert device_state(last_ok + bound * 10, last_ok, interval, n) == "stale"


# --- next_poll_at: a device that answers ---------------------------------------------------

ON_CADENCE = [
    # (case, due, now, interval, expected)
    ("polled on time", 10.0, 10.0, 1.0, 11.0),
    ("polled a little late", 10.0, 10.25, 1.0, 11.0),
    ("poll took almost an interval", 10.0, 10.875, 1.0, 11.0),
    ("now before due (early wake)", 10.0, 9.5, 1.0, 11.0),
    ("finished exactly at the next slot: skip it", 10.0, 11.0, 1.0, 12.0),
    ("one slot missed", 10.0, 11.5, 1.0, 12.0),
    ("two slots missed", 10.0, 12.25, 1.0, 13.0),
    ("exactly two slots late", 10.0, 12.0, 1.0, 13.0),
    ("many slots missed", 10.0, 110.5, 1.0, 111.0),
    ("fast cadence, several missed", 0.0, 1.0625, 0.25, 1.25),
    ("slow cadence", 0.0, 3.0, 5.0, 5.0),
    ("slow cadence, one missed", 0.0, 7.5, 5.0, 10.0),
]


@pytest.mark.parametrize(
    ("case", "due", "now", "interval", "expected"), ON_CADENCE, ids=[c[0] for c in ON_CADENCE]
)
def test_next_poll_keeps_the_cadence_and_skips_missed_slots(
    case: str, due: float, now: float, interval: float, expected: float
) -> None:
    nxt = next_poll_at(due, now, interval, 0)
    assert nxt == expected
    assert nxt > now


# Dyadic values: every sum, difference and quotient below is exact in binary floating point.
dyadic_times = st.integers(0, 2**30).map(lambda n: n / 64)
dyadic_intervals = st.sampled_from([0.015625, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 60.0])


@PROPS
@given(dyadic_times, st.integers(-64, 2**16).map(lambda n: n / 16), dyadic_intervals)
def test_answering_device_gets_the_first_future_slot(due: float, lag: float, interval: float) -> None:
    now = due + lag
    nxt = next_poll_at(due, now, interval, 0)
    k = (nxt - due) / interval
    assert nxt > now  # never in the past, never "now" (no burst)
    assert k == int(k) and k >= 1  # on the device's grid: due + k x interval
    assert nxt - interval <= now or k == 1  # the first such slot: the one before is not in the future


@PROPS
@given(times, st.floats(0, 1e4, allow_nan=False), intervals)
def test_answering_device_with_arbitrary_floats_is_never_scheduled_in_the_past(
    due: float, lag: float, interval: float
) -> None:
    now = due + lag
    nxt = next_poll_at(due, now, interval, 0)
    k = (nxt - due) / interval
    assert nxt >= now
    assert nxt <= max(now, due) + interval * (1 + 1e-9) + 1e-6  # at most one interval ahead
    assert abs(k - round(k)) < 1e-6 and round(k) >= 1  # aligned to due + k x interval


# Found by this suite: `now` landing exactly on a missed slot with inexact floats used to make
# next_poll_at return `now` itself.
@pytest.mark.parametrize(("due", "now", "interval"), [(0.0, 2.0999999999999996, 0.7), (1.0, 2.01, 0.01)])
def test_a_missed_slot_equal_to_now_is_skipped_with_inexact_floats(
    due: float, now: float, interval: float
) -> None:
    assert next_poll_at(due, now, interval, 0) > now


# --- next_poll_at: a failing device --------------------------------------------------------

BACKOFF = [
    # (case, interval, failures, delay after now)
    ("first failure: one interval", 1.0, 1, 1.0),
    ("second failure: doubled", 1.0, 2, 2.0),
    ("third failure", 1.0, 3, 4.0),
    ("fourth failure", 1.0, 4, 8.0),
    ("fifth failure", 1.0, 5, 16.0),
    ("sixth failure: capped", 1.0, 6, BACKOFF_CAP_S),
    ("many failures: capped", 1.0, 40, BACKOFF_CAP_S),
    ("huge failure count: capped, no overflow", 1.0, 10**6, BACKOFF_CAP_S),
    ("fast device", 0.25, 1, 0.25),
    ("fast device, doubled", 0.25, 3, 1.0),
    ("fast device, capped", 0.25, 20, BACKOFF_CAP_S),
    ("slow device, first failure", 20.0, 1, 20.0),
    ("slow device, second failure hits the cap", 20.0, 2, BACKOFF_CAP_S),
    ("interval above the cap: first failure", 60.0, 1, 60.0),
    ("interval above the cap: cap is the interval", 60.0, 5, 60.0),
    ("interval equal to the cap", 30.0, 3, 30.0),
]


@pytest.mark.parametrize(("case", "interval", "failures", "delay"), BACKOFF, ids=[b[0] for b in BACKOFF])
def test_failing_device_backs_off_from_now(case: str, interval: float, failures: int, delay: float) -> None:
    now = 1000.0
    for due in (now, now - 500.0, now + 3.0):  # the missed due time does not matter
        assert next_poll_at(due, now, interval, failures) == now + delay


@PROPS
@given(times, times, intervals, st.integers(1, 200))
def test_backoff_is_never_in_the_past_nor_beyond_the_cap(
    due: float, now: float, interval: float, failures: int
) -> None:
    nxt = next_poll_at(due, now, interval, failures)
    cap = max(BACKOFF_CAP_S, interval)
    assert now < nxt <= now + cap
    assert nxt - now >= min(interval, cap) - 1e-6  # at least one interval


@PROPS
@given(dyadic_times, dyadic_intervals, st.integers(1, 30))
def test_backoff_doubles_per_failure_until_the_cap(now: float, interval: float, failures: int) -> None:
    cap = max(BACKOFF_CAP_S, interval)
    delay = next_poll_at(now, now, interval, failures) - now
    more = next_poll_at(now, now, interval, failures + 1) - now
    assert delay == min(interval * 2 ** (failures - 1), cap)
    assert more == min(2 * delay, cap)
