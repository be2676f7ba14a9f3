"""The fault run's import-limit invariant (lab.limits) and its rows in the run's summary:
pure, no processes. A stretch the batteries could have covered fails the gate past 2 s; an
excess they could not cover (empty, at full power) or only a stopped gateway's battery could
have covered does not count, and a zone without an import limit says so."""

from __future__ import annotations

from meshems.lab.checker import Verdict
from meshems.lab.faults import RunResult, limit_failures, summary_table
from meshems.lab.limits import LimitSample, battery_headroom_kw, over_limit, site_headroom_kw


def _series(import_kw: list[float], headroom_kw: float = 40.0, limit_kw: float = 60.0, step_s: float = 0.5):
    return [LimitSample(100.0 + i * step_s, kw, limit_kw, headroom_kw) for i, kw in enumerate(import_kw)]


def test_a_coverable_excess_longer_than_2_s_fails_the_gate() -> None:
    # over from t=101.0 (65 kW) to the first sample back under (59 kW), t=104.0: 3 s
    rep = over_limit(_series([55, 58, 65, 70, 64, 66, 63, 61.5, 59, 58]))
    assert not rep.ok
    assert len(rep.violations) == 1 and rep.stretches == 1
    v = rep.violations[0]
    assert v.start_s == 101.0 and v.duration_s == 3.0 and v.peak_excess_kw == 10.0
    assert rep.longest is v and rep.longest_s == 3.0
    assert rep.peak_import_kw == 70


def test_short_stretches_pass_and_the_longest_is_reported() -> None:
    rep = over_limit(_series([50, 65, 66, 55, 70, 71, 72, 50, 61, 50]))
    assert rep.ok and rep.stretches == 3
    assert rep.longest_s == 1.5 and rep.longest is not None and rep.longest.start_s == 102.0
    assert rep.longest.peak_excess_kw == 12.0


def test_an_excess_within_the_tolerance_does_not_count() -> None:
    rep = over_limit(_series([60.4] * 20))
    assert rep.ok and rep.stretches == 0 and rep.longest_s == 0.0


def test_an_excess_the_batteries_could_not_cover_does_not_count() -> None:
    # 10 s over the limit with empty batteries (or at full discharge): physics, not control
    empty = battery_headroom_kw(power_kw=0.0, max_discharge_kw=50.0, soc_pct=5.0, soc_min_pct=5.0)
    at_max = battery_headroom_kw(power_kw=50.0, max_discharge_kw=50.0, soc_pct=60.0, soc_min_pct=5.0)
    assert empty == 0.0 and at_max == 0.0
    rep = over_limit(_series([80.0] * 21, headroom_kw=empty + at_max))
    assert rep.ok and rep.stretches == 0 and rep.uncoverable_s == 10.0
    # 0.3 kW of headroom left is within the tolerance: no battery could have covered more
    assert over_limit(_series([80.0] * 21, headroom_kw=0.3)).ok


def test_headroom_is_what_is_left_between_the_power_now_and_the_inverter_limit() -> None:
    assert battery_headroom_kw(power_kw=20.0, max_discharge_kw=50.0, soc_pct=60.0, soc_min_pct=5.0) == 30.0
    assert battery_headroom_kw(power_kw=-30.0, max_discharge_kw=50.0, soc_pct=60.0, soc_min_pct=5.0) == 80.0


def test_a_stretch_only_a_stopped_gateways_battery_could_cover_is_excluded_not_passed_silently() -> None:
    # every gateway down (a blackout of all): the batteries have 40 kW but nobody controls them
    down = [LimitSample(100.0 + i * 0.5, 70.0, 60.0, 40.0, controllable_kw=0.0) for i in range(9)]
    rep = over_limit(down)
    assert rep.ok and rep.stretches == 0 and rep.excluded_s == 4.0
    # one gateway down, the running ones' batteries could still cover it: it counts
    some = [LimitSample(100.0 + i * 0.5, 70.0, 60.0, 40.0, controllable_kw=20.0) for i in range(9)]
    rep = over_limit(some)
    assert not rep.ok and rep.violations[0].duration_s == 4.0 and rep.excluded_s == 0.0


def test_a_stretch_still_open_at_the_end_of_the_series_counts() -> None:
    rep = over_limit(_series([50, 50, 70, 70, 70, 70, 70, 70]))
    assert not rep.ok and rep.violations[0].start_s == 101.0 and rep.violations[0].duration_s == 2.5


def _result(limit_kw: float | None, import_kw: list[float]) -> RunResult:
    res = RunResult(seed=1, duration_s=10.0, verdict=Verdict(), converged=True)
    res.import_limit_kw = limit_kw
    res.limits = over_limit(_series(import_kw, limit_kw=limit_kw or float("inf")))
    return res


def test_the_summary_reports_the_figures_and_the_gate_fails_the_run_naming_the_stretch() -> None:
    res = _result(60.0, [55, 65, 65, 65, 65, 65, 65, 55])
    d = res.to_dict()
    assert not d["ok"]
    assert d["limit_violations_over_2s"] == 1 and d["longest_over_limit_s"] == 3.0
    table = summary_table(res)
    assert "limit violations > 2 s" in table and "longest over-limit s" in table and "FAIL" in table
    assert "excluded: 0.0 s with the site's gateway down" in table
    (line,) = limit_failures(d)
    assert "for 3.0 s (> 2 s)" in line and "t=100.5" in line and "00:01:40.500 UTC" in line
    assert _result(60.0, [55, 65, 65, 55]).to_dict()["ok"]


def test_a_zone_without_an_import_limit_reports_not_applicable() -> None:
    res = _result(None, [500.0] * 10)
    d = res.to_dict()
    assert d["ok"] and d["limit_violations_over_2s"] is None and d["longest_over_limit_s"] is None
    assert "n/a (no import limit)" in summary_table(res)
    assert d["peak_zone_import_kw"] == 500.0 and not limit_failures(d)


def test_a_sites_headroom_comes_from_its_battery_status() -> None:
    battery = {"power_kw": 10.0, "max_discharge_kw": 50.0, "soc_pct": 60.0, "soc_min_pct": 10.0}
    assert site_headroom_kw({"site": {}, "battery": battery}) == 40.0
    assert site_headroom_kw({"site": {}, "battery": {**battery, "soc_pct": 10.0}}) == 0.0
    assert site_headroom_kw({"site": {}, "battery": None}) == 0.0
