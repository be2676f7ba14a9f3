"""Unit tests for `meshems.core.planner`: the zone's receding-horizon battery plan (an LP).

Table tests check the plans against peaks worked out by hand (saving energy for an evening
peak, a limit out of reach, a tariff, a SoC target, two batteries sharing, bad requests);
properties check the physics on random zones: SoC window, energy balance, power limits, no
peak made by charging, the import cap whenever it can be held, and the lowest peak against
an independent LP (scipy's); and that plans are repeatable.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshems.core import planner_lp
from meshems.core.planner import (
    BatteryModel,
    PlanRequest,
    SocTarget,
    ZonePlan,
    day_weights,
    plan,
    plan_problems,
)

ETA2 = 0.92  # round trip
ETA = math.sqrt(ETA2)
STEP_H = 0.25
HOUR = (np.arange(96) + 0.5) / 4  # the middle of each quarter-hour of a day
EVENING = (HOUR >= 17) & (HOUR < 20)  # steps 68..79
FIRST, END = 68, 80  # the evening peak's first step, and the step after it


def evening_peak(flat_kw: float = 20.0, peak_kw: float = 50.0) -> tuple[float, ...]:
    return tuple(np.where(EVENING, peak_kw, flat_kw).tolist())


def battery(bid: str = "b1", node: str = "n1", **kw: float) -> BatteryModel:
    values = {"capacity_kwh": 40.0, "soc_pct": 50.0, "max_charge_kw": 0.0, "max_discharge_kw": 50.0}
    values.update(kw)
    return BatteryModel(bid, node, **values)


def series(p: ZonePlan, field: str, bid: str = "b1") -> np.ndarray:
    return np.array(dict(getattr(p, field))[bid])


# --- table tests ------------------------------------------------------------------------------


def test_the_battery_saves_its_energy_for_the_evening_peak() -> None:
    """No charging: usable energy (50 % - 10 % of 40 kWh) times eta spread over 3 h."""
    p = plan(PlanRequest(0.0, evening_peak(), (battery(),)))
    lowest = 50.0 - ETA * 16.0 / 3.0
    assert p.status == "optimal"
    assert p.peak_kw == pytest.approx(lowest, abs=0.1)
    kw = series(p, "battery_kw")
    assert np.all(kw[~EVENING] < 0.01)  # nothing spent before (or after) the peak
    assert kw[EVENING] == pytest.approx(np.full(12, 50.0 - lowest), abs=0.1)
    soc = series(p, "soc_pct")
    assert soc[FIRST] == pytest.approx(50.0, abs=1e-6)  # all of it still there when the peak starts
    assert soc[END] == pytest.approx(10.0, abs=1e-3)
    assert "peak mode" in p.reason


def test_charging_for_the_peak_lifts_the_day_to_the_lowest_peak_and_no_higher() -> None:
    """With charging from a floor start: eta^2 (P - 20) 17 h = (50 - P) 3 h."""
    b = battery(capacity_kwh=200.0, soc_pct=10.0, max_charge_kw=30.0)
    p = plan(PlanRequest(0.0, evening_peak(), (b,)))
    lowest = (150.0 + 20.0 * ETA2 * 17.0) / (3.0 + ETA2 * 17.0)
    assert p.status == "optimal"
    assert p.peak_kw == pytest.approx(lowest, abs=0.1)
    assert max(p.import_kw) <= lowest + 0.1  # the charging made no peak of its own
    kw = series(p, "battery_kw")
    assert np.all(kw[END:] > -0.01)  # nothing charged after the peak: it would serve nothing
    assert series(p, "soc_pct")[END] == pytest.approx(10.0, abs=1e-3)


def test_a_limit_out_of_reach_still_gets_the_lowest_peak_and_spends_the_battery_late() -> None:
    p = plan(PlanRequest(0.0, evening_peak(), (battery(),), import_limit_kw=30.0))
    lowest = 50.0 - ETA * 16.0 / 3.0
    assert p.status == "limit_unreachable"
    assert p.peak_kw == pytest.approx(lowest, abs=0.1)
    assert np.array(p.import_kw)[EVENING] == pytest.approx(np.full(12, lowest), abs=0.1)
    soc = series(p, "soc_pct")
    assert soc[FIRST] > 10.0 + 30.0  # not spent before the peak
    assert soc[END] == pytest.approx(10.0, abs=1e-3)  # at its floor when the peak ends
    assert "out of reach" in p.reason


def test_a_reachable_limit_is_a_ceiling_not_the_target() -> None:
    p = plan(PlanRequest(0.0, evening_peak(), (battery(),), import_limit_kw=48.0))
    assert p.status == "optimal"
    assert p.peak_kw == pytest.approx(50.0 - ETA * 16.0 / 3.0, abs=0.1)  # below 48: the lowest


def test_each_day_has_its_own_peak_today_is_not_charged_up_to_tomorrow_s() -> None:
    """From noon: today's afternoon is flat at 20 kW, tomorrow morning peaks at 50 kW. One peak
    for the whole horizon would let today import up to tomorrow's shaved peak for free (and
    charge at it); each day billed on its own, the charging waits for midnight."""
    start = 86400.0 * 100 + 43200.0  # a noon (UTC)
    hours = (np.arange(96) + 0.5) / 4 + 12  # hours since the day's midnight
    base = np.where((hours >= 31) & (hours < 34), 50.0, 20.0)  # 07:00-10:00 tomorrow
    b = battery(soc_pct=10.0, max_charge_kw=20.0)
    p = plan(PlanRequest(start, tuple(base.tolist()), (b,)))
    imports = np.array(p.import_kw)
    today = hours < 24
    assert imports[today].max() == pytest.approx(20.0, abs=1e-3)  # today's peak is its own load's
    assert imports[~today].max() < 40.0  # and tomorrow's is shaved, from a charge after midnight
    assert np.all(series(p, "battery_kw")[today] > -1e-6)


def test_a_day_the_horizon_sees_only_in_part_does_not_draw_today_s_energy() -> None:
    """From 02:00, a battery that cannot charge: today peaks at 30 kW in the evening; the
    horizon's last 2 hours are tomorrow's night at 10 kW. Weighed as much as today's whole
    peak, shaving those 2 hours (2 kWh a kW) would beat shaving today's evening (3 kWh a
    kW): today would stay at 30 kW, and its plan would rise at every replan as more of
    tomorrow's night came in. At 2/24 of a day they weigh 2/24."""
    start = 86400.0 * 100 + 7200.0
    hours = (np.arange(96) + 0.5) / 4 + 2
    base = np.where((hours >= 18) & (hours < 21), 30.0, 10.0)
    b = battery(soc_pct=50.0, capacity_kwh=20.0, max_charge_kw=0.0, max_discharge_kw=10.0)  # no charging
    p = plan(PlanRequest(start, tuple(base.tolist()), (b,)))
    imports = np.array(p.import_kw)
    today = hours < 24
    alone = plan(PlanRequest(start, tuple(base[today].tolist()), (b,)))  # today without tomorrow
    assert imports[today].max() == pytest.approx(max(alone.import_kw), abs=0.05)
    assert day_weights(start, 900.0, 96).tolist() == pytest.approx([1.0, 8 / 96])


def test_peak_floor_stops_shaving_below_a_peak_already_reached() -> None:
    p = plan(PlanRequest(0.0, evening_peak(), (battery(),), peak_floor_kw=47.0))
    assert p.peak_kw == pytest.approx(47.0, abs=0.01)
    assert series(p, "soc_pct")[END] == pytest.approx(50.0 - 3.0 * 3.0 / ETA / 40.0 * 100, abs=0.01)


def test_tariff_charges_cheap_discharges_dear_and_keeps_under_the_cap() -> None:
    price = np.where(HOUR < 6, 0.10, np.where(EVENING, 0.40, 0.25))
    b = battery(capacity_kwh=60.0, soc_pct=20.0, max_charge_kw=30.0, max_discharge_kw=30.0)
    base = evening_peak(20.0, 35.0)
    req = PlanRequest(0.0, base, (b,), mode="tariff", import_limit_kw=40.0, import_price=tuple(price))
    p = plan(req)
    assert p.status == "optimal"
    kw = series(p, "battery_kw")
    assert np.all(kw[price != 0.10] > -0.01)  # charges only at night
    assert np.all(kw[price != 0.40] < 0.01)  # discharges only in the evening
    assert kw[price == 0.40].sum() * STEP_H > 40.0  # and uses most of its window for it
    assert max(p.import_kw) <= 40.0 + 1e-6  # the cap holds while charging at 30 kW would break it
    no_battery = float((price * np.array(base)).sum() * STEP_H)
    assert p.cost < no_battery - 5.0
    assert "tariff mode" in p.reason


def test_tariff_limit_out_of_reach_is_reported() -> None:
    b = battery(capacity_kwh=10.0)
    p = plan(PlanRequest(0.0, evening_peak(), (b,), mode="tariff", import_limit_kw=30.0))
    assert p.status == "limit_unreachable"
    assert "import over the limit" in p.reason


def test_self_consumption_stores_the_pv_surplus_for_the_evening() -> None:
    base = np.where((HOUR > 10) & (HOUR < 15), -20.0, 10.0)
    b = battery(capacity_kwh=50.0, soc_pct=10.0, max_charge_kw=25.0, max_discharge_kw=25.0)
    p = plan(PlanRequest(0.0, tuple(base), (b,), mode="self_consumption"))
    kw = series(p, "battery_kw")
    assert np.all(kw[base > 0] > -0.01)  # never charged from the grid
    assert kw[base < 0].sum() * STEP_H < -40.0  # most of the surplus stored
    imported = float(np.maximum(np.array(p.import_kw), 0).sum() * STEP_H)
    assert imported < float(np.maximum(base, 0).sum() * STEP_H) - 30.0


@pytest.mark.parametrize("mode", ["peak", "tariff", "self_consumption"])
def test_a_soc_target_at_seven_is_met(mode: str) -> None:
    b = battery(capacity_kwh=40.0, soc_pct=20.0, max_charge_kw=20.0)
    target = SocTarget(step=27, pct=80.0)  # the end of step 27: 07:00 on a plan from 00:00
    p = plan(PlanRequest(0.0, evening_peak(), (b,), mode=mode, soc_targets=(target,)))
    assert p.status == "optimal"
    assert series(p, "soc_pct")[28] >= 80.0 - 1e-6
    assert "missed" not in p.reason


def test_an_unreachable_soc_target_is_approached_and_named() -> None:
    b = battery(capacity_kwh=40.0, soc_pct=20.0, max_charge_kw=2.0)
    p = plan(PlanRequest(0.0, evening_peak(), (b,), soc_targets=(SocTarget(step=7, pct=100.0),)))
    soc = series(p, "soc_pct")
    assert soc[8] == pytest.approx(20.0 + 2.0 * ETA * 2.0 / 40.0 * 100, abs=1e-3)  # flat out for 2 h
    assert "SoC target 100 % at step 7 missed" in p.reason
    assert "(b1)" in p.reason


def test_two_batteries_on_two_nodes_share_the_peak_within_their_limits() -> None:
    a = battery("a", "n1", capacity_kwh=100.0, max_discharge_kw=40.0)
    b = battery("b", "n2", capacity_kwh=100.0, max_discharge_kw=30.0)
    base = evening_peak(20.0, 90.0)
    p = plan(PlanRequest(0.0, base, (a, b)))
    assert p.status == "optimal"
    # 70 kW of discharge at most, 2 x 40 kWh x eta of energy over 3 h: power binds
    lowest = max(90.0 - 70.0, 90.0 - 2 * 40.0 * ETA / 3.0)
    assert p.peak_kw == pytest.approx(lowest, abs=0.1)
    ka, kb = series(p, "battery_kw", "a"), series(p, "battery_kw", "b")
    assert ka.max() <= 40.0 + 1e-9
    assert kb.max() <= 30.0 + 1e-9
    assert ka[EVENING].min() > 1.0
    assert kb[EVENING].min() > 1.0
    assert (ka + kb)[EVENING] == pytest.approx(np.full(12, 90.0 - lowest), abs=0.1)


def test_the_peak_still_comes_first_when_the_merged_fleet_promises_too_much() -> None:
    """The merged fleet would spend a's energy at b's power; in fact only a's 5 kW can work."""
    a = battery("a", capacity_kwh=40.0, soc_pct=50.0, max_discharge_kw=5.0)
    b = battery("b", capacity_kwh=40.0, soc_pct=10.0, max_discharge_kw=50.0)
    p = plan(PlanRequest(0.0, evening_peak(), (a, b)))
    assert p.status == "optimal"
    assert p.peak_kw == pytest.approx(45.0, abs=1e-3)
    ka = series(p, "battery_kw", "a")
    assert ka[EVENING] == pytest.approx(np.full(12, 5.0), abs=1e-3)
    assert np.all(ka[~EVENING] < 0.01)
    assert np.all(np.abs(series(p, "battery_kw", "b")) < 0.01)


def test_a_peak_floor_above_the_day_buys_nothing_from_the_grid() -> None:
    b = battery(soc_pct=20.0, max_charge_kw=30.0)
    p = plan(PlanRequest(0.0, evening_peak(), (b,), peak_floor_kw=60.0))
    assert p.status == "optimal"
    assert np.all(np.abs(series(p, "battery_kw")) < 0.01)
    assert p.import_kw == pytest.approx(evening_peak())


def test_a_failed_solve_is_a_status_and_a_plan_that_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(planner_lp, "TIME_LIMIT_S", 1e-9)
    p = plan(PlanRequest(0.0, evening_peak(), (battery(),)))
    assert p.status == "solver_failed"
    assert "solver failed" in p.reason
    assert p.import_kw == pytest.approx(evening_peak())
    assert np.all(series(p, "battery_kw") == 0.0)
    assert np.all(series(p, "soc_pct") == pytest.approx(50.0))


def test_a_battery_below_its_window_only_moves_towards_it() -> None:
    b = battery(soc_pct=5.0, max_charge_kw=10.0)
    p = plan(PlanRequest(0.0, evening_peak(), (b,)))
    assert p.status == "optimal"
    assert series(p, "soc_pct").min() >= 5.0 - 1e-6


def test_target_at_and_battery_at_read_the_step_containing_the_time() -> None:
    p = plan(PlanRequest(1000.0, (10.0, 20.0, 30.0), (battery(),), step_s=60.0))
    assert p.target_at(1000.0) == p.import_kw[0]
    assert p.target_at(1119.9) == p.import_kw[1]
    assert p.target_at(1180.0) is None
    assert p.target_at(999.0) is None
    assert p.target_at(float("nan")) is None
    assert p.battery_at("b1", 1130.0) == series(p, "battery_kw")[2]
    assert p.battery_at("nope", 1130.0) is None


BAD = [
    ("nan", {"base_kw": (1.0, 2.0, 3.0, float("nan"))}, "base_kw[3]"),
    ("lengths", {"import_price": (0.1, 0.2)}, "import_price: 2 values for 4 steps"),
    ("capacity", {"batteries": (battery(capacity_kwh=-1.0),)}, "batteries[0].capacity_kwh"),
    ("mode", {"mode": "cheapest"}, "mode: one of peak, tariff, self_consumption"),
    ("empty", {"base_kw": ()}, "base_kw: 1 to"),
    ("window", {"batteries": (battery(soc_min_pct=90.0, soc_max_pct=20.0),)}, "batteries[0].soc_min_pct"),
    ("twice", {"batteries": (battery(), battery())}, "batteries[1].id"),
    ("target", {"soc_targets": (SocTarget(step=4, pct=50.0),)}, "soc_targets[0].step"),
    ("step", {"step_s": 0.0}, "step_s"),
    ("limit", {"import_limit_kw": float("inf")}, "import_limit_kw"),
    ("efficiency", {"batteries": (battery(efficiency=0.0),)}, "batteries[0].efficiency"),
]  # fmt: skip


@pytest.mark.parametrize(("case", "change", "field"), BAD, ids=[c[0] for c in BAD])
def test_a_bad_request_is_infeasible_with_a_reason_naming_the_field(
    case: str, change: dict, field: str
) -> None:
    values = {"start_s": 0.0, "base_kw": (1.0, 2.0, 3.0, 4.0), "batteries": (battery(),)}
    req = PlanRequest(**{**values, **change})
    assert any(field in problem for problem in plan_problems(req))
    p = plan(req)
    assert p.status == "infeasible"
    assert field in p.reason
    assert p.import_kw == ()
    assert p.target_at(0.0) is None


def test_the_same_request_gives_the_same_plan() -> None:
    rng = np.random.default_rng(3)
    bats = tuple(
        battery(f"b{i}", f"n{i % 3}", capacity_kwh=50.0, soc_pct=40.0, max_charge_kw=20.0) for i in range(5)
    )
    req = PlanRequest(0.0, tuple(rng.uniform(-20, 80, 96).tolist()), bats, import_limit_kw=60.0)
    assert plan(req) == plan(req)
    tariff = PlanRequest(0.0, req.base_kw, bats, mode="tariff", import_price=tuple(rng.uniform(0, 1, 96)))
    assert plan(tariff) == plan(tariff)


# --- properties -------------------------------------------------------------------------------


@st.composite
def requests(draw: st.DrawFn) -> PlanRequest:
    n = draw(st.integers(2, 48))
    kw = st.floats(-40.0, 80.0, allow_nan=False)
    base = tuple(draw(st.lists(kw, min_size=n, max_size=n)))
    bats = []
    for i in range(draw(st.integers(0, 3))):
        low = draw(st.floats(0.0, 40.0))
        high = draw(st.floats(low + 5.0, 100.0))
        bats.append(
            BatteryModel(
                f"b{i}",
                f"n{i % 2}",
                capacity_kwh=draw(st.floats(1.0, 100.0)),
                soc_pct=draw(st.floats(low, high)),
                max_charge_kw=draw(st.floats(0.0, 40.0)),
                max_discharge_kw=draw(st.floats(0.0, 40.0)),
                soc_min_pct=low,
                soc_max_pct=high,
                efficiency=draw(st.floats(0.75, 1.0)),
            )
        )
    mode = draw(st.sampled_from(["peak", "tariff", "self_consumption"]))
    limit = draw(st.one_of(st.just(1e9), st.floats(0.0, 90.0)))
    export = draw(st.one_of(st.just(1e9), st.floats(0.0, 50.0)))
    price = draw(st.lists(st.floats(-0.1, 0.6), min_size=n, max_size=n)) if mode == "tariff" else []
    paid = draw(st.lists(st.floats(0.0, 0.2), min_size=n, max_size=n)) if draw(st.booleans()) else []
    floor = draw(st.floats(0.0, 30.0)) if mode == "peak" else 0.0
    return PlanRequest(
        start_s=0.0,
        base_kw=base,
        batteries=tuple(bats),
        mode=mode,
        import_limit_kw=limit,
        export_limit_kw=export,
        import_price=tuple(price),
        export_price=tuple(paid),
        peak_floor_kw=floor,
    )


@settings(max_examples=50, deadline=None)
@given(requests())
def test_plans_keep_the_physics_and_the_limits(req: PlanRequest) -> None:
    p = plan(req)
    assert p.status in ("optimal", "limit_unreachable"), p.reason
    base = np.array(req.base_kw)
    imports = np.array(p.import_kw)
    total = np.zeros(base.size)
    for b in req.batteries:
        kw, soc = series(p, "battery_kw", b.id), series(p, "soc_pct", b.id)
        assert soc.size == base.size + 1
        assert soc[0] == pytest.approx(b.soc_pct)
        assert soc.min() >= b.soc_min_pct - 1e-6
        assert soc.max() <= b.soc_max_pct + 1e-6
        assert kw.max(initial=0.0) <= b.max_discharge_kw + 1e-9
        assert kw.min(initial=0.0) >= -b.max_charge_kw - 1e-9
        total += kw
    assert np.abs(imports - (base - total)).max() <= 1e-6  # the zone balance
    assert p.peak_kw == pytest.approx(imports.max())
    if req.mode == "peak":
        assert np.all(imports <= np.maximum(p.peak_kw, base) + 1e-6)
        assert p.peak_kw <= base.max() + 1e-3  # charging never makes a new peak
    if base.max() <= req.import_limit_kw:  # a plan within the cap exists: do nothing
        assert p.status == "optimal"
    if p.status == "optimal":
        assert imports.max() <= req.import_limit_kw + 1e-3


def lowest_peak_by_scipy(req: PlanRequest) -> float:
    """The same model's lowest peak, built densely for scipy's linprog: per battery c, d, e."""
    from scipy.optimize import linprog

    n, h = len(req.base_kw), req.step_s / 3600
    nb = len(req.batteries)
    cols = 3 * n * nb + 1  # battery i: c at 3in, d at 3in + n, e at 3in + 2n; then P
    a_eq, b_eq, a_ub = [], [], []
    bounds: list[tuple[float, float | None]] = []
    for i, b in enumerate(req.batteries):
        eta, cap = math.sqrt(b.efficiency), b.capacity_kwh / 100
        e0 = b.soc_pct * cap
        lo, hi = min(b.soc_min_pct * cap, e0), max(b.soc_max_pct * cap, e0)
        c0 = 3 * n * i
        for t in range(n):
            row = np.zeros(cols)
            row[c0 + 2 * n + t], row[c0 + t], row[c0 + n + t] = 1.0, -eta * h, h / eta
            if t:
                row[c0 + 2 * n + t - 1] = -1.0
            a_eq.append(row)
            b_eq.append(e0 if t == 0 else 0.0)
        bounds += [(0.0, b.max_charge_kw)] * n + [(0.0, b.max_discharge_kw)] * n + [(lo, hi)] * n
    for t in range(n):  # base - sum(d - c) <= P
        row = np.zeros(cols)
        for i in range(nb):
            row[3 * n * i + t], row[3 * n * i + n + t] = 1.0, -1.0
        row[-1] = -1.0
        a_ub.append(row)
    cost = np.zeros(cols)
    cost[-1] = 1.0
    res = linprog(
        cost,
        A_ub=np.array(a_ub),
        b_ub=-np.array(req.base_kw),
        A_eq=np.array(a_eq) if a_eq else None,
        b_eq=np.array(b_eq) if b_eq else None,
        bounds=[*bounds, (0.0, None)],
        method="highs",
    )
    assert res.success, res.message
    return float(res.x[-1])


@settings(max_examples=40, deadline=None)
@given(requests())
def test_the_peak_is_the_lowest_an_independent_lp_finds(req: PlanRequest) -> None:
    req = PlanRequest(req.start_s, req.base_kw, req.batteries)  # peak mode, no caps or floor
    p = plan(req)
    lowest = lowest_peak_by_scipy(req)
    assert lowest - 1e-6 <= max(p.peak_kw, 0.0) <= lowest + 1e-3  # scipy's P is at least 0
