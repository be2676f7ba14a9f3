"""`core.sunspec_profile`: a profile from a model chain (as pysunspec2 lays the models out)."""

from __future__ import annotations

import pytest

from meshems.core.sunspec_profile import ModelLayout, sunspec_profile
from meshems.sim.sunspec_chain import chain_layouts


def test_each_kind_maps_its_roles_onto_the_models_that_carry_them() -> None:
    pv = sunspec_profile("pv", chain_layouts("pv"), "t")
    assert dict(pv.roles) == {
        "power_kw": "103.W",
        "limit_pct": "123.WMaxLimPct",
        "revert_timeout_s": "123.WMaxLimPct_RvrtTms",
        "rated_kw": "120.WRtg",
    }
    w = pv.point("103.W")
    assert (w.scale, w.scale_point, w.unit, w.writable) == (0.001, "103.W_SF", "kW", False)
    assert pv.point("123.WMaxLimPct").writable and pv.point("123.WMaxLim_Ena").writable
    assert not pv.point("123.Conn").writable  # only what meshems writes is writable
    assert pv.enables == {"limit_pct": (("123.WMaxLim_Ena", 1),)}
    battery = sunspec_profile("battery", chain_layouts("battery"), "t")
    assert battery.roles["setpoint_kw"] == "704.WSet" and battery.roles["soc_pct"] == "124.ChaState"
    assert battery.point("120.WHRtg").unit == "kWh"
    meter = sunspec_profile("meter", chain_layouts("meter"), "t")
    assert meter.roles["power_kw"] == "203.W" and meter.enables == {}
    # every point lies inside its model, and the reads cover them all
    for profile, layouts in ((pv, chain_layouts("pv")), (meter, chain_layouts("meter"))):
        end = max(m.address + 2 + m.length for m in layouts)
        assert all(layouts[0].address <= p.address and p.end <= end for p in profile.points)
        assert sum(len(b.points) for b in profile.read_blocks()) == len(profile.points)


def test_a_chain_without_what_the_kind_needs_is_refused_naming_the_models() -> None:
    common_only = [m for m in chain_layouts("pv") if m.id in (1, 103)]
    with pytest.raises(ValueError, match=r"a SunSpec pv needs models for limit_pct; the chain holds 1, 103"):
        sunspec_profile("pv", common_only, "t")
    with pytest.raises(ValueError, match="not relay"):
        sunspec_profile("relay", chain_layouts("pv"), "t")


def test_a_second_model_of_the_same_id_gets_its_own_names_and_no_role() -> None:
    layouts = chain_layouts("meter")
    second = layouts[1]
    again = ModelLayout(second.id, second.address + 2 + second.length, second.length, second.points)
    profile = sunspec_profile("meter", [*layouts, again], "t")
    assert profile.roles["power_kw"] == "203.W"
    assert profile.point("203_2.W").address == again.address + (
        profile.point("203.W").address - second.address
    )
    assert profile.point("203_2.W").scale == 1.0  # raw watts: not a role
