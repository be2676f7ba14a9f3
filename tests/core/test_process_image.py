"""Unit tests for `meshems.core.process_image`: the per-cycle view dispatch reads.

`build_image` turns the replicated zone state (declared devices + each node's latest
report, created here with real `declare_node`/`report` commands through `cluster.apply`)
into a ProcessImage; `image_from_readings` does the same from device declarations and
(state, values by role) readings, as a node without quorum does. A device is `ok` only when
its reading is; relay channels become loads "DEVICE:CHANNEL"; a node's grid power is the sum
of its meters; limits are the tighter of the declared and the reported ones.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from meshems.core.cluster import ZoneState, apply
from meshems.core.commands import encode
from meshems.core.process_image import (
    BatteryImage,
    DeviceInfo,
    LoadImage,
    NodeImage,
    ProcessImage,
    PVImage,
    build_image,
    image_from_readings,
)

# --- the zone (commands through apply) -----------------------------------------------------


def dev(id_: str, kind: str, lo: float = 0.0, hi: float = 0.0) -> dict[str, Any]:
    return {"id": id_, "kind": kind, "min_kw": lo, "max_kw": hi}


def reading(id_: str, state: str = "ok", **values: float) -> dict[str, Any]:
    return {"id": id_, "state": state, "values": values}


def declare(node: str, *devices: dict[str, Any]) -> bytes:
    return encode("declare_node", f"decl-{node}", node_id=node, raft=f"{node}:1", api=f"{node}:2",
                  devices=list(devices))  # fmt: skip


def report(node: str, *readings: dict[str, Any], seq: int = 1) -> bytes:
    return encode("report", f"rep-{node}-{seq}", node_id=node, seq=seq, devices=list(readings))


def zone() -> ZoneState:
    """n1: meter, battery, PV, relay (all reported ok); n2: two meters and a stale battery;
    n3: a battery only, never reported."""
    entries = [
        declare("n1", dev("m1", "meter"), dev("b1", "battery", -10, 8), dev("p1", "pv", 0, 8),
                dev("r1", "relay")),
        declare("n2", dev("m2a", "meter"), dev("m2b", "meter"), dev("b2", "battery", -5, 5)),
        declare("n3", dev("b3", "battery", -10, 10)),
        report("n1",
               reading("m1", power_kw=12.5),
               reading("b1", power_kw=-2.0, soc_pct=61.0, capacity_kwh=20.0, max_charge_kw=12.0,
                       max_discharge_kw=5.0),
               reading("p1", power_kw=6.0, rated_kw=10.0),
               reading("r1", relay_1=1.0, load_1_kw=3.0, relay_2=0.0, load_2_kw=0.0)),
        report("n2",
               reading("m2a", power_kw=3.0),
               reading("m2b", power_kw=4.0),
               reading("b2", "stale", power_kw=1.0, soc_pct=40.0)),
    ]  # fmt: skip
    state = ZoneState()
    for data in entries:
        state, res = apply(state, data, 1, state.last_index + 1)
        assert res.ok, res
    return state


B1 = BatteryImage("b1", "n1", True, -2.0, 61.0, 20.0, 10.0, 5.0)
B2 = BatteryImage("b2", "n2", False, 1.0, 40.0, 0.0, 5.0, 5.0)
B3 = BatteryImage("b3", "n3", False, 0.0, 0.0, 0.0, 10.0, 10.0)
P1 = PVImage("p1", "n1", True, 6.0, 8.0)
R1 = (LoadImage("r1:1", "r1", 1, "n1", True, True, 3.0), LoadImage("r1:2", "r1", 2, "n1", True, False, 0.0))


def test_build_image_of_the_whole_zone() -> None:
    img = build_image(zone())
    assert img == ProcessImage(
        nodes=(
            NodeImage("n1", True, 12.5, -2.0),
            NodeImage("n2", True, 7.0, 0.0),  # two meters summed; the stale battery not counted
            NodeImage("n3", False, 0.0, 0.0),  # no meter
        ),
        batteries=(B1, B2, B3),
        pvs=(P1,),
        loads=R1,
    )
    assert img.grid_kw == 19.5
    assert not img.complete


def test_build_image_of_some_nodes() -> None:
    state = zone()
    img = build_image(state, nodes=("n2",))
    assert img == ProcessImage((NodeImage("n2", True, 7.0, 0.0),), (B2,), (), ())
    assert img.complete
    both = build_image(state, nodes=("n1", "n3"))
    assert [n.node_id for n in both.nodes] == ["n1", "n3"]
    assert both.batteries == (B1, B3)
    assert build_image(state, nodes=()) == ProcessImage((), (), (), ())


def test_build_image_follows_the_newest_report() -> None:
    state = zone()
    state, res = apply(state, report("n1", reading("m1", "defective", power_kw=1.0), seq=2), 1,
                       state.last_index + 1)  # fmt: skip
    assert res.ok
    img = build_image(state)
    # n1's newest report has only its meter, and not ok: the rest of n1 is unknown now
    assert img.nodes[0] == NodeImage("n1", False, 1.0, 0.0)
    assert img.batteries[0] == BatteryImage("b1", "n1", False, 0.0, 0.0, 0.0, 10.0, 8.0)
    assert img.pvs == (PVImage("p1", "n1", False, 0.0, 8.0),)
    assert img.loads == ()


def test_build_image_of_an_empty_zone() -> None:
    assert build_image(ZoneState()) == ProcessImage((), (), (), ())


def test_a_stale_nodes_batteries_count_as_reverted_to_zero() -> None:
    img = build_image(zone(), stale_nodes=frozenset({"n1"}))
    assert img.batteries[0] == BatteryImage("b1", "n1", False, -2.0, 61.0, 20.0, 10.0, 5.0)
    # the meter's import is what it will be once the (charging) battery is back at 0
    assert img.nodes[0] == NodeImage("n1", True, 10.5, 0.0)
    assert img.nodes[1:] == build_image(zone()).nodes[1:]


def test_build_image_does_not_change_the_state() -> None:
    state = zone()
    before = copy.deepcopy(state)
    build_image(state)
    build_image(state, stale_nodes=frozenset({"n1", "n2"}))
    assert state == before


# --- image_from_readings -------------------------------------------------------------------


def info(id_: str, kind: str, node: str = "n1", lo: float = 0.0, hi: float = 0.0) -> DeviceInfo:
    return DeviceInfo(id_, kind, node, lo, hi)


def test_devices_without_readings_are_not_ok() -> None:
    devices = [
        info("b", "battery", lo=-7, hi=6),
        info("p", "pv", hi=9),
        info("m", "meter"),
        info("r", "relay"),
    ]
    img = image_from_readings(devices, {})
    assert img == ProcessImage(
        nodes=(NodeImage("n1", False, 0.0, 0.0),),
        batteries=(BatteryImage("b", "n1", False, 0.0, 0.0, 0.0, 7.0, 6.0),),
        pvs=(PVImage("p", "n1", False, 0.0, 9.0),),
        loads=(),  # a relay without a reading has no known channels
    )
    assert img.grid_kw == 0.0 and not img.complete


@pytest.mark.parametrize("state", ["unknown", "stale", "defective"])
def test_devices_whose_reading_is_not_ok_are_not_ok(state: str) -> None:
    devices = [
        info("b", "battery", lo=-7, hi=6),
        info("p", "pv", hi=9),
        info("m", "meter"),
        info("r", "relay"),
    ]
    readings = {
        "b": (state, {"power_kw": 2.0, "soc_pct": 50.0}),
        "p": (state, {"power_kw": 3.0}),
        "m": (state, {"power_kw": 4.0}),
        "r": (state, {"relay_1": 1.0, "load_1_kw": 1.5}),
    }
    img = image_from_readings(devices, readings)
    assert [b.ok for b in img.batteries] == [False]
    assert img.batteries[0].power_kw == 2.0  # the values are kept; dispatch ignores them
    assert [p.ok for p in img.pvs] == [False]
    assert img.loads == (LoadImage("r:1", "r", 1, "n1", False, True, 1.5),)
    assert img.nodes == (NodeImage("n1", False, 4.0, 0.0),)  # a not-ok battery is not in battery_kw
    assert img.grid_kw == 0.0


def test_a_battery_without_soc_is_not_ok() -> None:
    img = image_from_readings([info("b", "battery", lo=-5, hi=5)], {"b": ("ok", {"power_kw": 1.0})})
    assert not img.batteries[0].ok
    assert img.nodes[0].battery_kw == 0.0


def test_relay_channels_become_loads() -> None:
    values = {
        "relay_1": 1.0,
        "load_1_kw": 2.5,
        "relay_2": 0.0,
        "load_2_kw": 7.0,
        "relay_3": 0.49,
        "relay_4": 0.5,
        "relay_6": 1.0,  # after a gap: not a channel
        "load_6_kw": 9.0,
    }
    img = image_from_readings([info("rl", "relay", node="n2")], {"rl": ("ok", values)})
    assert img.loads == (
        LoadImage("rl:1", "rl", 1, "n2", True, True, 2.5),
        LoadImage("rl:2", "rl", 2, "n2", True, False, 7.0),
        LoadImage("rl:3", "rl", 3, "n2", True, False, 0.0),  # < 0.5 is open
        LoadImage("rl:4", "rl", 4, "n2", True, True, 0.0),  # >= 0.5 is closed; no power known
    )


def test_relay_without_channel_one_has_no_loads() -> None:
    img = image_from_readings([info("rl", "relay")], {"rl": ("ok", {"relay_2": 1.0})})
    assert img.loads == ()


@pytest.mark.parametrize(
    ("meters", "meter_ok", "node_grid"),
    [
        ([("ok", {"power_kw": 5.0})], True, 5.0),
        ([("ok", {"power_kw": 5.0}), ("ok", {"power_kw": -8.5})], True, -3.5),
        ([("ok", {"power_kw": 5.0}), ("ok", {"power_kw": 1.0}), ("ok", {"power_kw": 2.0})], True, 8.0),
        ([("ok", {"power_kw": 5.0}), ("stale", {"power_kw": 1.0})], False, 6.0),
        ([("ok", {"power_kw": 5.0}), ("ok", {"voltage_v": 230.0})], False, 5.0),  # no power_kw
        ([("defective", {})], False, 0.0),
    ],
    ids=["one", "two", "three", "one stale", "one without power", "defective"],
)
def test_node_grid_is_the_sum_of_its_meters(
    meters: list[tuple[str, dict[str, float]]], meter_ok: bool, node_grid: float
) -> None:
    devices = [info(f"m{i}", "meter") for i in range(len(meters))] + [info("x", "meter", node="n2")]
    readings = {f"m{i}": r for i, r in enumerate(meters)} | {"x": ("ok", {"power_kw": 100.0})}
    img = image_from_readings(devices, readings)
    assert img.nodes[0] == NodeImage("n1", meter_ok, node_grid, 0.0)
    assert img.nodes[1] == NodeImage("n2", True, 100.0, 0.0)
    # the zone import counts only nodes whose meters are all ok
    assert img.grid_kw == (node_grid + 100.0 if meter_ok else 100.0)
    assert img.complete is meter_ok


def test_a_node_without_a_meter_is_not_meter_ok() -> None:
    img = image_from_readings([info("b", "battery", lo=-5, hi=5)], {"b": ("ok", {"soc_pct": 50.0})})
    assert img.nodes == (NodeImage("n1", False, 0.0, 0.0),)
    assert not img.complete


@pytest.mark.parametrize(
    ("lo", "hi", "reported", "charge", "discharge"),
    [
        (-10.0, 10.0, {"max_charge_kw": 12.0, "max_discharge_kw": 5.0}, 10.0, 5.0),
        (-10.0, 10.0, {"max_charge_kw": 4.0, "max_discharge_kw": 15.0}, 4.0, 10.0),
        (-3.0, 4.0, {"max_charge_kw": 6.0, "max_discharge_kw": 6.0}, 3.0, 4.0),
        (-10.0, 10.0, {}, 10.0, 10.0),
        (-10.0, 10.0, {"max_discharge_kw": 2.0}, 10.0, 2.0),
        (-10.0, 10.0, {"max_charge_kw": 0.0, "max_discharge_kw": 0.0}, 0.0, 0.0),
        (0.0, 0.0, {"max_charge_kw": 5.0, "max_discharge_kw": 5.0}, 0.0, 0.0),  # declared without limits
    ],
)
def test_battery_limits_are_the_tighter_of_declared_and_reported(
    lo: float, hi: float, reported: dict[str, float], charge: float, discharge: float
) -> None:
    values = {"power_kw": 0.0, "soc_pct": 50.0, **reported}
    img = image_from_readings([info("b", "battery", lo=lo, hi=hi)], {"b": ("ok", values)})
    (b,) = img.batteries
    assert (b.max_charge_kw, b.max_discharge_kw) == (charge, discharge)


@pytest.mark.parametrize(
    ("declared_max", "reported", "rated"),
    [
        (8.0, 10.0, 8.0),  # clamped to the declared max
        (8.0, 6.0, 6.0),
        (8.0, None, 8.0),
        # declared without a max: not dispatchable (the zone knows no range to set it in)
        (0.0, 10.0, 0.0),
        (0.0, None, 0.0),
    ],
)
def test_pv_rated_is_clamped_to_the_declared_max(
    declared_max: float, reported: float | None, rated: float
) -> None:
    values = {"power_kw": 3.0} if reported is None else {"power_kw": 3.0, "rated_kw": reported}
    img = image_from_readings([info("p", "pv", hi=declared_max)], {"p": ("ok", values)})
    assert img.pvs == (PVImage("p", "n1", declared_max > 0, 3.0, rated),)


def test_node_battery_kw_sums_its_ok_batteries() -> None:
    devices = [
        info("b1", "battery", lo=-9, hi=9),
        info("b2", "battery", lo=-9, hi=9),
        info("b3", "battery", lo=-9, hi=9),
        info("b4", "battery", node="n2", lo=-9, hi=9),
        info("m", "meter"),
    ]
    readings = {
        "b1": ("ok", {"power_kw": 3.0, "soc_pct": 50.0}),
        "b2": ("ok", {"power_kw": -1.5, "soc_pct": 50.0}),
        "b3": ("stale", {"power_kw": 7.0, "soc_pct": 50.0}),
        "b4": ("ok", {"power_kw": 4.0, "soc_pct": 50.0}),
        "m": ("ok", {"power_kw": 1.0}),
    }
    img = image_from_readings(devices, readings)
    assert img.nodes == (NodeImage("n1", True, 1.0, 1.5), NodeImage("n2", False, 0.0, 4.0))


def test_images_are_sorted_by_id_whatever_the_declaration_order() -> None:
    devices = [
        info("z-b", "battery", node="n9"),
        info("c-pv", "pv", node="n1", hi=5),
        info("a-b", "battery", node="n5"),
        info("b-r", "relay", node="n1"),
        info("a-r", "relay", node="n2"),
        info("l", "load"),  # plain loads are not in the image
    ]
    readings = {"b-r": ("ok", {"relay_1": 1.0}), "a-r": ("ok", {"relay_1": 0.0})}
    img = image_from_readings(devices, readings)
    assert [b.id for b in img.batteries] == ["a-b", "z-b"]
    assert [ld.id for ld in img.loads] == ["a-r:1", "b-r:1"]
    assert [n.node_id for n in img.nodes] == ["n1", "n2", "n5", "n9"]
    assert image_from_readings(list(reversed(devices)), readings) == img


def test_image_from_readings_does_not_change_its_inputs() -> None:
    devices = [info("b", "battery", lo=-5, hi=5), info("r", "relay")]
    readings = {"b": ("ok", {"soc_pct": 50.0}), "r": ("ok", {"relay_1": 1.0})}
    before = copy.deepcopy((devices, readings))
    image_from_readings(devices, readings)
    assert (devices, readings) == before
