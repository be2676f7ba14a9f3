"""The planner's request from the zone state (`core.plan_inputs.plan_request`): prices from the
dated series where it covers a step, else the daily profile; the peak so far as its floor; the
step under way from the meters and its forecast."""

from __future__ import annotations

import numpy as np
import pytest

from meshems.core.cluster import ZoneState, apply
from meshems.core.commands import encode
from meshems.core.load_history import LoadForecast
from meshems.core.node_plan import forecast_command
from meshems.core.plan_inputs import plan_request
from meshems.core.policy import Policy
from meshems.core.process_image import DeviceInfo, image_from_readings

T0 = 1_796_169_600.0  # 2026-12-02 00:00 UTC
DEVICES = [DeviceInfo("m", "meter", "n1", 0, 0), DeviceInfo("b", "battery", "n1", -5, 5)]


def zone() -> ZoneState:
    devs = [{"id": "m", "kind": "meter", "min_kw": 0.0, "max_kw": 0.0},
            {"id": "b", "kind": "battery", "min_kw": -5.0, "max_kw": 5.0}]  # fmt: skip
    state, res = apply(ZoneState(), encode("declare_node", "d", node_id="n1", raft="n1:1", api="n1:2",
                                           devices=devs), 1, 1)  # fmt: skip
    assert res.ok, res
    f = LoadForecast(T0, 900.0, np.full(96, 3.0), "model v1")
    state, res = apply(state, forecast_command("n1", f, "nf-1"), 1, 2)  # type: ignore[arg-type]
    assert res.ok, res
    return state


def image(meter_kw: float = 3.0):  # type: ignore[no-untyped-def]
    bat = {
        "power_kw": 0.0,
        "soc_pct": 50.0,
        "capacity_kwh": 10.0,
        "max_charge_kw": 5.0,
        "max_discharge_kw": 5.0,
    }
    return image_from_readings(DEVICES, {"m": ("ok", {"power_kw": meter_kw}), "b": ("ok", bat)})


def test_dated_prices_win_where_they_cover_a_step_and_the_profile_fills_the_rest() -> None:
    policy = Policy(mode="tariff", import_price=(0.5,) * 24, price_series_start_s=T0 + 3600,
                    import_price_series=(0.1, 0.2, 0.3, 0.4))  # fmt: skip
    req, basis = plan_request(zone(), image(), policy, T0 + 10.0)
    assert req is not None and "n1: model v1" in basis
    assert req.import_price[:4] == (0.5,) * 4  # 00:00-01:00: before the series, the profile
    assert req.import_price[4:8] == pytest.approx((0.1, 0.2, 0.3, 0.4))
    assert set(req.import_price[8:]) == {0.5} and req.export_price == ()
    # a series alone: beyond it, the same time of its day
    only = Policy(
        mode="tariff", price_series_start_s=T0, import_price_series=tuple(float(i) for i in range(96))
    )
    req, _ = plan_request(zone(), image(), only, T0 + 10.0)
    assert req is not None and req.import_price == tuple(float(i) for i in range(96))


def test_the_peak_so_far_is_the_request_s_floor() -> None:
    req, _ = plan_request(zone(), image(), Policy(), T0 + 10.0, peak_so_far_kw=4.5)
    assert req is not None and req.peak_floor_kw == 4.5 and req.import_price == ()
    req, _ = plan_request(zone(), image(), Policy(), T0 + 10.0, peak_so_far_kw=float("nan"))
    assert req is not None and req.peak_floor_kw == 0.0


def test_the_step_under_way_weighs_the_meters_now_and_its_forecast_equally() -> None:
    # a reading of 7 kW (one sample of a noisy load) where 3 kW was forecast: the step under way
    # counts 5 kW, the steps after it the forecast
    req, _ = plan_request(zone(), image(7.0), Policy(), T0 + 10.0)
    assert req is not None and req.base_kw[0] == pytest.approx(5.0) and req.base_kw[1] == 3.0
    # a forecast that does not cover the step yet (it starts next quarter-hour): the reading
    req, _ = plan_request(zone(), image(7.0), Policy(), T0 - 890.0)
    assert req is not None and req.base_kw[0] == pytest.approx(7.0) and req.base_kw[1] == 3.0
