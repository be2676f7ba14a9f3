"""NTP-style peer clock offsets and the skew alarm."""

from __future__ import annotations

import pytest

from meshems.core.clock import MAX_AGE_S, ClockWatch, offset_and_rtt


def test_the_four_timestamps_give_offset_and_round_trip() -> None:
    # the peer is 2 s ahead; 10 ms each way; it took 1 ms to answer
    offset, rtt = offset_and_rtt(100.0, 102.010, 102.011, 100.021)
    assert offset == pytest.approx(2.0) and rtt == pytest.approx(0.020)
    offset, _ = offset_and_rtt(100.0, 99.6, 99.6, 100.2)  # 0.5 s behind, asymmetric paths cancel half
    assert offset == pytest.approx(-0.5)


def test_the_alarm_rises_on_a_skewed_peer_and_clears_when_it_is_back_or_gone() -> None:
    w = ClockWatch()
    w.measured("n2", 0.0, 0.1, 0.1, 0.2, now_s=0.0)  # in step
    assert w.update_alarm(0.0) is None and not w.alarm
    w.measured("n3", 0.0, 2.1, 2.1, 0.2, now_s=1.0)  # 2 s ahead
    assert w.update_alarm(1.0) is True and w.alarm and w.current(1.0)["n3"] == pytest.approx(2.0)
    assert w.update_alarm(2.0) is None
    w.measured("n3", 5.0, 5.1, 5.1, 5.2, now_s=5.0)  # back in step
    assert w.update_alarm(5.0) is False
    w.measured("n3", 6.0, 9.1, 9.1, 6.2, now_s=6.0)
    assert w.update_alarm(6.0) is True
    assert w.update_alarm(6.0 + MAX_AGE_S + 1) is False  # a peer that stopped answering: no stale alarm
