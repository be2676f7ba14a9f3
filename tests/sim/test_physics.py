"""Unit tests for `meshems.sim.physics`: the simulated site as a whole.

The site's sign convention and relays are pinned by tables; hypothesis checks that the site
is deterministic and balances its power and energy every step; the demo site is sane.
"""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from meshems.sim.device_physics import PV, Load, RelayBank
from meshems.sim.physics import Site
from tests.sim.test_device_physics import PROPERTY, battery

# --- Site ------------------------------------------------------------------------------------


def test_site_sign_convention() -> None:
    site = Site(
        battery=battery(soc_pct=50.0).write_setpoint(15.0),
        pv=PV(rated_kw=40.0),
        loads=(Load("a", 30.0), Load("b", 20.0)),
        relays=RelayBank.all_closed(2),
        load_shape="flat",
        t_s=13 * 3600.0,  # solar noon for 6 h - 20 h
    ).step(0.0)
    load_kw = sum(load.power_kw for load in site.loads)
    assert site.pv_kw > 39.0 and site.battery_kw == 15.0
    assert site.meter.grid_kw == pytest.approx(load_kw - site.pv_kw - 15.0)
    assert site.meter.grid_kw < 0.0  # exporting: 40 kW PV + 15 kW battery against about 30 kW of load


def test_site_relays_switch_loads() -> None:
    site = Site.demo(t_s=12 * 3600.0)
    hvac_kw = site.loads[0].power_kw
    assert hvac_kw > 0.0
    shed = site.write_relay(1, False)
    assert shed.loads[0].power_kw == hvac_kw  # takes effect on the next step
    stepped = shed.step(1.0)
    assert stepped.loads[0].power_kw == 0.0 and not stepped.loads[0].closed
    assert stepped.summary()["shed"] == 1.0
    assert stepped.meter.grid_kw == pytest.approx(stepped.load_kw - stepped.pv_kw - stepped.battery_kw)
    assert stepped.step(1.0).write_relay(1, True).step(1.0).loads[0].power_kw > 0.0
    with pytest.raises(IndexError):
        site.write_relay(5, False)


def test_site_is_deterministic() -> None:
    dts = [1.0, 0.5, 60.0, 900.0, 3600.0, 10.0] * 5

    def run_site(seed: int) -> Site:
        site = Site.demo(seed=seed, cloudiness=0.6, battery_kwh=50.0)
        site = dataclasses.replace(site, battery=site.battery.write_setpoint(-20.0))  # type: ignore[union-attr]
        for dt_s in dts:
            site = site.step(dt_s)
        return site

    a = run_site(7)
    assert a == run_site(7)
    assert a.t_s == pytest.approx(sum(dts))
    other = run_site(8)
    assert other != a and other.t_s == a.t_s  # another seed: other clouds and load noise


@PROPERTY
@given(
    seed=st.integers(0, 2**31),
    start_s=st.floats(0.0, 14 * 86400.0),
    cloudiness=st.floats(0.0, 1.0),
    shape=st.sampled_from(["office", "residential", "flat"]),
    steps=st.lists(
        st.tuples(st.floats(0.0, 1800.0), st.floats(-80.0, 80.0), st.integers(1, 4), st.booleans()),
        min_size=1,
        max_size=20,
    ),
)
def test_site_balances_power_and_energy_every_step(
    seed: int,
    start_s: float,
    cloudiness: float,
    shape: str,
    steps: list[tuple[float, float, int, bool]],
) -> None:
    site = Site.demo(seed=seed, t_s=start_s, cloudiness=cloudiness, load_shape=shape, battery_kwh=20.0)
    for dt_s, setpoint_kw, channel, closed in steps:
        site = dataclasses.replace(site, battery=site.battery.write_setpoint(setpoint_kw))  # type: ignore[union-attr]
        before = site
        site = site.write_relay(channel, closed).step(dt_s)
        switched_on_kw = sum(
            load.nominal_kw * load.fraction
            for load, on in zip(site.loads, site.relays.states, strict=True)
            if on
        )
        assert site.load_kw == pytest.approx(switched_on_kw)
        assert site.meter.grid_kw + site.pv_kw + site.battery_kw == pytest.approx(switched_on_kw, abs=1e-9)
        net_kwh = (site.meter.energy_import_kwh - site.meter.energy_export_kwh) - (
            before.meter.energy_import_kwh - before.meter.energy_export_kwh
        )
        assert net_kwh == pytest.approx(site.meter.grid_kw * dt_s / 3600.0, abs=1e-9)
        assert 0.0 <= site.pv_kw <= 40.0 and 0.0 <= site.load_kw <= 60.0 + 1e-9
        assert site.t_s == before.t_s + dt_s


def test_demo_sanity() -> None:
    site = Site.demo()
    assert [load.name for load in site.loads] == ["hvac", "process", "lighting", "ev"]
    assert [load.nominal_kw for load in site.loads] == pytest.approx([24.0, 18.0, 12.0, 6.0])
    assert site.relays.states == (True,) * 4
    assert site.battery is not None and site.battery.capacity_kwh == 100.0
    assert site.battery.max_discharge_kw == 50.0 and site.battery.max_charge_kw == 50.0
    assert site.pv is not None and site.pv.rated_kw == 40.0
    assert site.pv_kw == 0.0  # midnight
    assert site.meter.grid_kw == pytest.approx(site.load_kw) and site.load_kw > 0.0
    noon = site.step(13 * 3600.0)
    assert noon.pv_kw > 30.0
    assert noon.step(11 * 3600.0).pv_kw == 0.0  # 24:00 again
    assert set(site.summary()) == {"t_s", "grid_kw", "pv_kw", "battery_kw", "load_kw", "shed", "soc_pct"}


def test_demo_variants() -> None:
    bare = Site.demo(pv_rated_kw=0.0, battery_kwh=0.0, loads=2)
    assert bare.pv is None and bare.battery is None
    assert [load.name for load in bare.loads] == ["hvac", "process"]
    assert sum(load.nominal_kw for load in bare.loads) == pytest.approx(60.0)
    assert "soc_pct" not in bare.summary()
    many = Site.demo(loads=6)
    assert [load.name for load in many.loads][4:] == ["load5", "load6"]
    assert sum(load.nominal_kw for load in many.loads) == pytest.approx(60.0)


def test_site_rejects_inconsistent_parts() -> None:
    with pytest.raises(ValueError, match="one channel per load"):
        Site(battery=None, pv=None, loads=(Load("a", 1.0),), relays=RelayBank.all_closed(2))
    with pytest.raises(ValueError, match="unknown load shape"):
        Site.demo(load_shape="factory")
