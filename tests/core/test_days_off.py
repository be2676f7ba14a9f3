"""Days off (the policy's holiday calendar) in a node's load forecast, and their validation."""

from __future__ import annotations

import numpy as np

from meshems.core.days_off import policy_days_off, weekday, with_days_off
from meshems.core.load_history import LoadForecast, LoadHistory
from meshems.core.policy import Policy, policy_problems, with_changes

DAY, QH = 86400.0, 96
MONDAY = 4 * DAY  # Unix day 4, 1970-01-05, was a Monday


def test_unix_day_zero_was_a_thursday_and_day_four_a_monday() -> None:
    assert weekday(0.0) == 3 and weekday(MONDAY) == 0 and weekday(MONDAY - 1) == 6


def history_of(days: int, end_s: float) -> LoadHistory:
    """Every step's value is its own day number * 100 + its quarter-hour: easy to trace."""
    h = LoadHistory()
    start = end_s - days * DAY
    h.values = [float((start + i * 900) // DAY * 100 + i % QH) for i in range(days * QH)]
    h.t0_s = start
    return h


def test_a_day_off_is_forecast_like_the_last_sunday_and_other_days_are_kept() -> None:
    now = MONDAY + 14 * DAY  # a Monday (Unix day 18); yesterday, day 17, was a Sunday
    h = history_of(14, now)
    f = LoadForecast(now, 900.0, np.full(2 * QH, 7.0), "model v1")
    out = with_days_off(f, h, frozenset({18}))
    assert np.all(out.kw[:QH] == 17 * 100 + np.arange(QH))  # today from Sunday day 17, same time
    assert np.all(out.kw[QH:] == 7.0)  # tomorrow is a working day: the model's forecast
    assert "last Sunday" in out.basis and out.basis.startswith("model v1")
    assert with_days_off(f, h, frozenset()) is f and with_days_off(f, h, frozenset({30})) is f
    # a day off on a Sunday itself: the Sunday a week before (never the forecast's own days)
    sunday = with_days_off(LoadForecast(now - DAY, 900.0, np.full(QH, 7.0), "m"), h, frozenset({17}))
    assert sunday.kw[0] == 10 * 100 + 0


def test_days_off_are_validated_and_kept_sorted_once() -> None:
    assert policy_problems({"days_off": ["2026-12-25", "2026-12-24"]}) == []
    for bad in (["2026-13-01"], ["25.12.2026"], "2026-12-25", ["2026-12-25"] * 401, [20261225]):
        (problem,) = policy_problems({"days_off": bad})
        assert problem.startswith("days_off")
    p = with_changes(Policy(), {"days_off": ["2026-12-25", "2026-12-24", "2026-12-25"]})
    assert p.days_off == ("2026-12-24", "2026-12-25") and p.to_dict()["days_off"] == [
        "2026-12-24",
        "2026-12-25",
    ]
    assert policy_days_off(p) == frozenset({20811, 20812}) and policy_days_off(None) == frozenset()
