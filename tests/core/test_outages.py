"""OutageLog: one event when a link has been down past the grace, one when it returns."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from meshems.core.outages import OutageLog


def test_a_blip_shorter_than_the_grace_is_not_an_outage() -> None:
    log = OutageLog(grace_s=3.0)
    assert log.observe("broker b:8883", False, 10.0) is None
    assert log.observe("broker b:8883", False, 12.9) is None
    assert log.observe("broker b:8883", True, 13.0) is None
    assert log.down() == {}


def test_an_outage_is_reported_once_and_its_end_names_the_duration() -> None:
    log = OutageLog(grace_s=3.0)
    assert log.observe("peer n2", False, 100.0) is None
    began = log.observe("peer n2", False, 103.5)
    assert began is not None and began.kind == "down" and began.since_s == 100.0
    assert "peer n2 unreachable for 4 s" in began.message()
    assert all(log.observe("peer n2", False, t) is None for t in (104.0, 150.0, 160.0))
    ended = log.observe("peer n2", True, 161.25)
    assert ended is not None and ended.kind == "up" and ended.duration_s == 61.25
    assert "after an outage of 61.2 s" in ended.message()
    assert log.observe("peer n2", True, 162.0) is None


def test_links_are_independent_and_forgetting_ends_a_reported_outage() -> None:
    log = OutageLog(grace_s=1.0)
    log.observe("peer n2", False, 0.0)
    log.observe("peer n3", False, 0.5)
    assert log.observe("peer n2", False, 1.0) is not None
    assert log.observe("peer n3", False, 1.0) is None
    assert set(log.down()) == {"peer n2", "peer n3"}
    end = log.forget("peer n2", 5.0)
    assert end is not None and end.kind == "end" and end.duration_s == 5.0
    assert log.forget("peer n3", 5.0) is None  # never reported: nothing to end
    assert log.down() == {}


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 10)), max_size=60))
def test_reports_alternate_down_then_up_and_last_past_the_grace(steps: list[tuple[bool, float]]) -> None:
    log, now, kinds = OutageLog(grace_s=3.0), 0.0, []
    for up, dt in steps:
        now += dt
        event = log.observe("l", up, now)
        if event is not None:
            kinds.append(event.kind)
            assert event.duration_s >= 3.0 and event.since_s <= now
    assert kinds == ["down", "up"] * (len(kinds) // 2) + ["down"] * (len(kinds) % 2)
