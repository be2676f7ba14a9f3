"""Unit tests for `meshems.sim.device_physics`: one simulated device at a time.

Tables pin the numbers (SoC integration with efficiency, the watchdog timing, curtailment,
the meter's sign convention); hypothesis checks that SoC and power stay inside their limits
under any setpoint sequence.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshems.sim.device_physics import PV, Battery, Load, Meter, RelayBank

PROPERTY = settings(max_examples=60, deadline=None)


def battery(**kw: float) -> Battery:
    fields: dict[str, float] = {
        "capacity_kwh": 100.0,
        "soc_pct": 50.0,
        "max_charge_kw": 50.0,
        "max_discharge_kw": 50.0,
    }
    fields.update(kw)
    return Battery(**fields)  # type: ignore[arg-type]


def run(b: Battery, dt_s: float, steps: int) -> Battery:
    for _ in range(steps):
        b = b.step(dt_s)
    return b


# --- Battery: SoC integration and limits ---------------------------------------------------


@pytest.mark.parametrize(
    ("setpoint_kw", "hours", "efficiency", "expected_soc_pct"),
    [
        (10.0, 1.0, 1.0, 40.0),  # 10 kWh out of 100 kWh
        (-10.0, 1.0, 1.0, 60.0),
        (10.0, 1.0, 0.81, 50.0 - 10.0 / 0.9),  # one-way efficiency sqrt(0.81) = 0.9
        (-10.0, 1.0, 0.81, 50.0 + 10.0 * 0.9),
        (20.0, 0.5, 0.95, 50.0 - 10.0 / math.sqrt(0.95)),
        (-20.0, 0.5, 0.95, 50.0 + 10.0 * math.sqrt(0.95)),
        (0.0, 2.0, 0.95, 50.0),
    ],
)
def test_soc_integration(
    setpoint_kw: float, hours: float, efficiency: float, expected_soc_pct: float
) -> None:
    b = battery(efficiency=efficiency).write_setpoint(setpoint_kw)
    b = run(b, 60.0, round(hours * 60))
    assert b.power_kw == pytest.approx(setpoint_kw)
    assert b.soc_pct == pytest.approx(expected_soc_pct)
    assert b.energy_kwh == pytest.approx(expected_soc_pct)  # 100 kWh: kWh == %


def test_same_energy_in_one_step_or_many() -> None:
    b = battery().write_setpoint(-30.0)
    assert b.step(3600.0).soc_pct == pytest.approx(run(b, 1.0, 3600).soc_pct)


@pytest.mark.parametrize(
    ("setpoint_kw", "expected_kw"),
    [(80.0, 40.0), (40.0, 40.0), (-80.0, -25.0), (-25.0, -25.0), (-10.0, -10.0), (0.0, 0.0)],
)
def test_power_clamped_to_ratings_not_the_setpoint(setpoint_kw: float, expected_kw: float) -> None:
    b = battery(max_charge_kw=25.0, max_discharge_kw=40.0).write_setpoint(setpoint_kw)
    assert b.setpoint_kw == setpoint_kw  # the device accepts the command as written
    assert b.step(1.0).power_kw == pytest.approx(expected_kw)


def test_no_discharge_below_soc_min() -> None:
    b = battery(soc_pct=5.0, soc_min_pct=5.0).write_setpoint(30.0).step(60.0)
    assert (b.power_kw, b.soc_pct) == (0.0, 5.0)
    b = battery(soc_pct=3.0, soc_min_pct=5.0).write_setpoint(30.0).step(60.0)  # already below
    assert (b.power_kw, b.soc_pct) == (0.0, 3.0)
    assert battery(soc_pct=3.0).write_setpoint(-10.0).step(60.0).power_kw == -10.0  # may charge


def test_no_charge_above_soc_max() -> None:
    b = battery(soc_pct=90.0, soc_max_pct=90.0).write_setpoint(-30.0).step(60.0)
    assert (b.power_kw, b.soc_pct) == (0.0, 90.0)
    assert battery(soc_pct=100.0).write_setpoint(-30.0).step(60.0).power_kw == 0.0
    assert battery(soc_pct=95.0, soc_max_pct=90.0).write_setpoint(10.0).step(60.0).power_kw == 10.0


def test_near_soc_min_only_the_energy_left_is_delivered() -> None:
    # 1 kWh above soc_min, efficiency 1: a 50 kW, 1 min step (0.833 kWh) fits; a 2 min step does not.
    b = battery(soc_pct=6.0, soc_min_pct=5.0, efficiency=1.0).write_setpoint(50.0)
    assert b.step(60.0).power_kw == pytest.approx(50.0)
    last = b.step(120.0)
    assert last.power_kw == pytest.approx(1.0 / (120.0 / 3600.0))  # 30 kW for 2 min = 1 kWh
    assert last.soc_pct == 5.0
    assert last.step(120.0).power_kw == 0.0


def test_near_soc_max_only_the_room_left_is_filled() -> None:
    b = battery(soc_pct=99.0, efficiency=0.81).write_setpoint(-50.0).step(3600.0)
    assert b.soc_pct == 100.0
    assert b.power_kw == pytest.approx(-1.0 / 0.9)  # 1 kWh of room needs 1.11 kWh at the terminals


@PROPERTY
@given(
    soc_pct=st.floats(0.0, 100.0),
    soc_min_pct=st.floats(0.0, 40.0),
    soc_max_pct=st.floats(60.0, 100.0),
    efficiency=st.floats(0.5, 1.0),
    commands=st.lists(st.tuples(st.floats(-200.0, 200.0), st.floats(0.0, 7200.0)), max_size=30),
)
def test_soc_and_power_stay_within_limits(
    soc_pct: float,
    soc_min_pct: float,
    soc_max_pct: float,
    efficiency: float,
    commands: list[tuple[float, float]],
) -> None:
    b = battery(soc_pct=soc_pct, soc_min_pct=soc_min_pct, soc_max_pct=soc_max_pct, efficiency=efficiency)
    low, high = min(soc_pct, soc_min_pct), max(soc_pct, soc_max_pct)
    for setpoint_kw, dt_s in commands:
        before = b.soc_pct
        b = b.write_setpoint(setpoint_kw).step(dt_s)
        assert 0.0 <= b.soc_pct <= 100.0
        assert low <= b.soc_pct <= high
        assert -b.max_charge_kw <= b.power_kw <= b.max_discharge_kw
        if b.power_kw > 0:
            assert b.soc_pct <= before
        elif b.power_kw < 0:
            assert b.soc_pct >= before
        else:
            assert b.soc_pct == before


def test_step_returns_a_new_battery_and_never_mutates() -> None:
    b = battery().write_setpoint(10.0)
    frozen = dataclasses.astuple(b)
    b2 = b.step(60.0)
    assert b2 is not b and dataclasses.astuple(b) == frozen
    with pytest.raises(dataclasses.FrozenInstanceError):
        b.soc_pct = 10.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "bad",
    [
        {"capacity_kwh": 0.0},
        {"soc_pct": 101.0},
        {"efficiency": 0.0},
        {"efficiency": 1.1},
        {"soc_min_pct": 50.0, "soc_max_pct": 40.0},
        {"max_charge_kw": -1.0},
        {"revert_timeout_s": -1.0},
    ],
)
def test_battery_rejects_impossible_parameters(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        battery(**bad)


def test_battery_rejects_bad_writes_and_steps() -> None:
    with pytest.raises(ValueError, match="setpoint_kw"):
        battery().write_setpoint(math.nan)
    with pytest.raises(ValueError, match="revert_timeout_s"):
        battery().write_revert_timeout(-5.0)
    with pytest.raises(ValueError, match="dt_s"):
        battery().step(-1.0)


# --- Battery: watchdog revert ---------------------------------------------------------------

# Timeout 10 s, 1 s steps over 30 s; the setpoint is written at the listed times (each write
# happens before the step that starts at that time). Expected: the first time at the end of a
# step when the battery has reverted, or None.
REVERT_CASES = [
    ([0], 11),  # age 10 at t=10 is not over the timeout; 11 at t=11 is
    ([0, 5], 16),
    ([0, 10], 21),  # refreshed at the last moment
    ([0, 11], 11),  # too late: already reverted at t=11
    ([0, 5, 10, 15, 20, 25], None),  # refreshed in time all along
    ([0, 10, 20], None),
    ([], 11),  # never written: the watchdog still expires (like a Modbus comms watchdog)
]


@pytest.mark.parametrize(("write_times", "expected_revert_t"), REVERT_CASES)
def test_battery_revert_timing(write_times: list[int], expected_revert_t: int | None) -> None:
    b = battery(default_setpoint_kw=0.0).write_revert_timeout(10.0)
    reverted_at = None
    for t in range(30):
        if t in write_times:
            b = b.write_setpoint(20.0)
        b = b.step(1.0)
        if b.reverted and reverted_at is None:
            reverted_at = t + 1
            assert b.setpoint_kw == 0.0 and b.power_kw == 0.0
        if reverted_at is None:
            assert b.power_kw == (20.0 if write_times else 0.0)
    assert reverted_at == expected_revert_t


def test_revert_goes_to_the_default_and_a_write_clears_the_flag() -> None:
    b = battery(default_setpoint_kw=-5.0, revert_timeout_s=30.0).write_setpoint(40.0)
    b = b.step(31.0)
    assert (b.reverted, b.setpoint_kw, b.power_kw) == (True, -5.0, -5.0)
    b = b.step(10.0)
    assert b.reverted and b.setpoint_kw == -5.0
    b = b.write_setpoint(15.0)
    assert (b.reverted, b.setpoint_age_s, b.setpoint_kw) == (False, 0.0, 15.0)
    assert b.step(30.0).power_kw == 15.0  # age 30 is not over 30


def test_timeout_zero_never_reverts() -> None:
    b = battery().write_setpoint(10.0)
    b = run(b, 3600.0, 2)
    assert not b.reverted and b.power_kw == 10.0 and b.setpoint_age_s == 7200.0


def test_writing_the_timeout_does_not_refresh_the_setpoint() -> None:
    b = battery().write_setpoint(10.0).step(100.0).write_revert_timeout(60.0)
    assert b.setpoint_age_s == 100.0
    assert b.step(1.0).reverted


# --- PV --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("irradiance", "limit_pct", "expected_kw"),
    [
        (1.0, 100.0, 40.0),
        (0.5, 100.0, 20.0),
        (0.0, 100.0, 0.0),
        (1.0, 50.0, 20.0),
        (0.4, 50.0, 16.0),  # the limit only caps, never raises output
        (1.0, 0.0, 0.0),
        (1.7, 100.0, 40.0),  # irradiance clipped to 1
        (-0.2, 100.0, 0.0),
    ],
)
def test_pv_power_and_curtailment(irradiance: float, limit_pct: float, expected_kw: float) -> None:
    pv = PV(rated_kw=40.0).write_limit_pct(limit_pct).step(1.0, irradiance)
    assert pv.power_kw == pytest.approx(expected_kw)
    assert 0.0 <= pv.irradiance <= 1.0


@pytest.mark.parametrize(("write_times", "expected_revert_t"), REVERT_CASES[:-1])
def test_pv_revert_timing(write_times: list[int], expected_revert_t: int | None) -> None:
    pv = PV(rated_kw=40.0, revert_timeout_s=10.0)
    reverted_at = None
    for t in range(30):
        if t in write_times:
            pv = pv.write_limit_pct(25.0)
        pv = pv.step(1.0, 1.0)
        if pv.reverted and reverted_at is None:
            reverted_at = t + 1
        assert pv.power_kw == (40.0 if pv.reverted else 10.0)
        assert pv.limit_pct == (100.0 if pv.reverted else 25.0)
    assert reverted_at == expected_revert_t


def test_pv_write_clears_the_revert_flag_and_rejects_out_of_range() -> None:
    pv = PV(rated_kw=10.0, revert_timeout_s=5.0).write_limit_pct(50.0).step(6.0, 1.0)
    assert pv.reverted and pv.power_kw == 10.0
    pv = pv.write_limit_pct(30.0)
    assert not pv.reverted and pv.limit_age_s == 0.0
    assert pv.step(1.0, 1.0).power_kw == pytest.approx(3.0)
    for bad in (-1.0, 100.5, math.nan):
        with pytest.raises(ValueError, match="limit_pct"):
            pv.write_limit_pct(bad)


# --- Loads, relays, meter --------------------------------------------------------------------


def test_load_follows_fraction_and_relay() -> None:
    load = Load(name="hvac", nominal_kw=20.0)
    assert load.step(1.0, 0.5, closed=True).power_kw == 10.0
    assert load.step(1.0, 0.5, closed=False).power_kw == 0.0
    assert load.step(1.0, 1.5, closed=True).power_kw == 20.0


def test_relay_bank_write_is_one_based_and_checked() -> None:
    bank = RelayBank.all_closed(3)
    opened = bank.write(2, False)
    assert opened.states == (True, False, True) and bank.states == (True, True, True)
    assert opened.open_count == 1 and not opened.is_closed(2)
    assert opened.write(2, True) == bank
    for channel in (0, 4, -1):
        with pytest.raises(IndexError, match=r"relay channel .* channels are 1\.\.3"):
            bank.write(channel, False)


@pytest.mark.parametrize(
    ("grid_kw", "voltage_v"),
    [(0.0, 230.0), (100.0, 229.0), (-100.0, 231.0), (5000.0, 207.0), (-5000.0, 253.0)],
)
def test_meter_voltage_droop(grid_kw: float, voltage_v: float) -> None:
    meter = Meter().step(1.0, grid_kw)
    assert meter.voltage_v == pytest.approx(voltage_v)
    assert meter.frequency_hz == 50.0


def test_meter_integrates_import_and_export_separately() -> None:
    m = Meter().step(1800.0, 10.0)  # 5 kWh in
    m = m.step(3600.0, -4.0)  # 4 kWh out
    m = m.step(900.0, 8.0)  # 2 kWh in
    assert m.energy_import_kwh == pytest.approx(7.0)
    assert m.energy_export_kwh == pytest.approx(4.0)
    assert m.grid_kw == 8.0
