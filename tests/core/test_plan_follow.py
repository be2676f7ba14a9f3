"""Dispatch tracking the committed plan (`follow`): today's planned peak, the quarter-hour
mean held at it, and the day's import peak so far."""

from __future__ import annotations

from dataclasses import replace

import pytest

from meshems.core.day_peak import DayPeak, quarter_allowance_kw
from meshems.core.dispatch import dispatch
from meshems.core.plan_records import PlanBattery, PlanRecord, PlanStep, plan_step
from meshems.core.policy import Policy
from tests.core.test_dispatch import KW, battery, image, meter

T0 = 1_790_000_000.0 // 86400 * 86400  # a UTC midnight


def step(
    mode: str = "peak",
    peak: float = 20.0,
    kw: float = 0.0,
    track: float | None = None,
    target: float | None = None,
) -> PlanStep:
    return PlanStep(3, mode, "optimal", peak if target is None else target, peak, {"b1": kw}, track)


def battery_kw(result: object) -> tuple[float, str, str]:
    (row,) = [r for r in result.setpoints if r[0] == "b1"]  # type: ignore[attr-defined]
    return row[1], row[2], row[3]


def test_peak_mode_holds_the_planned_peak_without_a_margin_below_it() -> None:
    # the import limit (40, margin 2) would aim at 38; the plan's peak is 20: discharge 5
    result = dispatch(
        image(meter("m", 25.0), battery("b1", 60, 10)), Policy(import_limit_kw=40.0), follow=step()
    )
    kw, ctl, why = battery_kw(result)
    assert kw == pytest.approx(5.0, abs=KW) and ctl == "import_limit" and "over 20.0" in why
    assert result.inputs["plan_version"] == 3 and result.inputs["plan_ceiling_kw"] == 20.0


def test_peak_mode_charges_to_the_plans_import_but_never_above_the_peak_less_a_tracking_margin() -> None:
    img = image(meter("m", 10.0), battery("b1", 30, 10))
    # the plan: 6 kW of charging at a forecast 10 kW, an import of 16 kW
    kw, ctl, why = battery_kw(dispatch(img, Policy(), follow=step(kw=-6.0, target=16.0)))
    assert (kw, ctl) == (pytest.approx(-6.0, abs=KW), "plan") and "import at 16.0" in why
    # the load's minute noise: charging follows it both ways, so it averages the plan's power
    low = image(meter("m", 8.0), battery("b1", 30, 10))
    assert battery_kw(dispatch(low, Policy(), follow=step(kw=-6.0, target=16.0)))[0] == pytest.approx(
        -8.0, abs=KW
    )
    high = image(meter("m", 14.0), battery("b1", 30, 10))
    assert battery_kw(dispatch(high, Policy(), follow=step(kw=-6.0, target=16.0)))[0] == pytest.approx(
        -2.0, abs=KW
    )
    # a load already over the plan's import: hold, never discharge in a charging step
    over = image(meter("m", 17.0), battery("b1", 30, 10))
    kw, ctl, why = battery_kw(dispatch(over, Policy(), follow=step(kw=-6.0, target=16.0)))
    assert (kw, ctl) == (0.0, "plan") and "hold" in why
    # never above the peak less 1 % (< the 2 kW margin), whatever the plan's import
    kw, _, why = battery_kw(dispatch(img, Policy(), follow=step(kw=-15.0)))
    assert kw == pytest.approx(-9.8, abs=KW) and "import at 19.8" in why
    kw, _, why = battery_kw(dispatch(img, Policy(margin_kw=0.1), follow=step(kw=-15.0)))
    assert kw == pytest.approx(-9.9, abs=KW) and "import at 19.9" in why  # the margin, when smaller
    # a quarter-hour with room left (track above the peak) does not charge faster
    kw, _, _ = battery_kw(dispatch(img, Policy(), follow=step(kw=-15.0, track=30.0)))
    assert kw == pytest.approx(-9.8, abs=KW)
    # one whose minutes so far were over the peak charges less, so its mean ends at the peak
    kw, _, why = battery_kw(dispatch(img, Policy(), follow=step(kw=-15.0, track=18.0)))
    assert kw == pytest.approx(-7.8, abs=KW) and "import at 17.8" in why


def test_peak_mode_holds_the_quarter_hour_mean_not_every_instant() -> None:
    img = image(meter("m", 24.0), battery("b1", 60, 10))
    # quiet minutes left room: a short rise to 24 kW stays unshaved (the mean ends at 20)
    kw, _, _ = battery_kw(dispatch(img, Policy(), follow=step(track=24.5)))
    assert kw == 0.0
    # minutes over the peak: the battery makes up for them, below the peak
    kw, ctl, why = battery_kw(dispatch(img, Policy(), follow=step(track=18.0)))
    assert kw == pytest.approx(6.0, abs=KW) and ctl == "import_limit" and "over 18.0" in why
    # never above the import limit less the margin when the plan holds the limit (a fuse)
    limited = Policy(import_limit_kw=22.0)
    kw, _, _ = battery_kw(dispatch(img, limited, follow=step(track=30.0)))
    assert kw == pytest.approx(4.0, abs=KW)


def test_the_quarter_hour_allowance_ends_the_quarter_at_the_peak() -> None:
    assert quarter_allowance_kw(20.0, 12.0, 0.0, 900.0) == 20.0  # the quarter begins: the peak itself
    # 5 of 15 minutes at 17 kW: the other 10 may average 21.5 (mean 20)
    assert quarter_allowance_kw(20.0, 17.0, 300.0, 600.0) == pytest.approx(21.5)
    assert quarter_allowance_kw(20.0, 23.0, 300.0, 600.0) == pytest.approx(18.5)  # making up for an excess
    # a leader that took over 10 minutes in saw only 1 minute: the rest counts as at the peak
    assert quarter_allowance_kw(20.0, 17.0, 60.0, 240.0) == pytest.approx(20.75)
    # the last minute counts as a minute left (no swing to thousands of kW), never below 0
    assert quarter_allowance_kw(20.0, 19.9, 899.0, 1.0) == pytest.approx(20.0 + 0.1 * 899 / 60)
    assert quarter_allowance_kw(20.0, 100.0, 840.0, 60.0) == 0.0
    assert quarter_allowance_kw(20.0, float("nan"), 300.0, 600.0) == 20.0


def test_peak_mode_stores_pv_surplus_and_holds_otherwise() -> None:
    kw, _, _ = battery_kw(dispatch(image(meter("m", -4.0), battery("b1", 30, 10)), Policy(), follow=step()))
    assert kw == pytest.approx(-4.0, abs=KW)
    kw, ctl, why = battery_kw(
        dispatch(image(meter("m", 12.0), battery("b1", 30, 10)), Policy(), follow=step(kw=3.0))
    )
    assert (kw, ctl) == (0.0, "plan") and "hold" in why  # under the planned peak: keep the energy


def test_tariff_mode_follows_the_plan_inside_the_caps() -> None:
    img = image(meter("m", 10.0), battery("b1", 60, 10))
    tariff = Policy(mode="tariff", import_limit_kw=30.0, export_limit_kw=3.0, margin_kw=1.0)
    kw, ctl, _ = battery_kw(dispatch(img, tariff, follow=step("tariff", kw=4.0)))
    assert (kw, ctl) == (pytest.approx(4.0, abs=KW), "plan")
    kw, _, _ = battery_kw(dispatch(img, tariff, follow=step("tariff", kw=20.0)))
    assert kw == pytest.approx(12.0, abs=KW)  # 10 kW load + 2 kW export (3 less the margin)
    kw, _, _ = battery_kw(
        dispatch(image(meter("m", 33.0), battery("b1", 60, 10)), tariff, follow=step("tariff", kw=-5.0))
    )
    assert kw == pytest.approx(4.0, abs=KW)  # the import cap (29) wins over the planned charge


def test_a_stale_or_failed_plan_is_not_followed() -> None:
    bat = PlanBattery("b1", (1.0, 2.0), (50.0, 49.0, 47.0))
    plan = PlanRecord(1, T0, 900.0, "peak", "optimal", (5.0, 6.0), (bat,), 6.0, 0.0, "r", "b", T0, 1, 2)
    assert plan_step(plan, T0 + 100) == PlanStep(1, "peak", "optimal", 5.0, 6.0, {"b1": 1.0})
    assert plan_step(plan, T0 + 1800) is None  # past its horizon
    assert plan_step(plan, T0 + 1000, max_age_s=600) is None  # too old
    assert plan_step(replace(plan, status="infeasible"), T0 + 100) is None


def test_the_plan_step_s_peak_is_today_s_not_tomorrow_s() -> None:
    bat = PlanBattery("b1", (0.0,) * 4, (50.0,) * 5)
    # 23:30, 23:45 today at 8 and 9 kW; 00:00, 00:15 tomorrow at 30 kW
    plan = PlanRecord(1, T0 - 1800, 900.0, "peak", "optimal", (8.0, 9.0, 30.0, 30.0), (bat,), 30.0, 0.0,
                      "r", "b", T0 - 1000, 1, 2)  # fmt: skip
    assert plan_step(plan, T0 - 1700).peak_kw == 9.0  # type: ignore[union-attr]
    assert plan_step(plan, T0 + 100).peak_kw == 30.0  # type: ignore[union-attr]


def test_the_day_peak_counts_closed_quarter_hours_of_today() -> None:
    p = DayPeak()
    for minute in range(30):  # 00:00-00:15 at 5 kW, 00:15-00:30 at 9 kW
        p.add(T0 + minute * 60, 5.0 if minute < 15 else 9.0)
    assert p.value(T0 + 29 * 60) == 5.0  # the running quarter-hour does not count yet
    assert p.quarter(T0 + 29 * 60) == (9.0, 14 * 60.0, 60.0)  # its mean, the time seen, the time left
    assert p.quarter(T0 + 31 * 60) is None  # no sample of that quarter yet
    p.add(T0 + 30 * 60, 1.0)
    assert p.value(T0 + 30 * 60) == 9.0
    p.add(T0 + 86400 + 60, 2.0)  # the next day starts from nothing
    assert p.value(T0 + 86400 + 60) == 0.0
    p.add(T0 + 86400 + 120, float("nan"))  # ignored
    assert p.value(T0 + 86400 + 120) == 0.0


def test_in_peak_mode_the_survival_envelopes_share_today_s_planned_peak() -> None:
    img = image(meter("m", 25.0), battery("b1", 60, 10))
    (env,) = dispatch(img, Policy(), follow=step(peak=20.0)).envelopes
    assert env.import_limit_kw == pytest.approx(20.0, abs=KW)  # no limit: the plan's peak is the share
    (env,) = dispatch(img, Policy(import_limit_kw=15.0), follow=step(peak=20.0)).envelopes
    assert env.import_limit_kw == pytest.approx(15.0, abs=KW)  # the limit when it is lower
    (env,) = dispatch(img, Policy()).envelopes
    assert env.import_limit_kw == pytest.approx(1e9, rel=1e-6)  # no plan: the policy's (none)
    (env,) = dispatch(img, Policy(mode="tariff"), follow=step("tariff", peak=20.0)).envelopes
    assert env.import_limit_kw == pytest.approx(1e9, rel=1e-6)  # tariff mode has no peak to share
