"""Unit tests for `meshems.core.zone_handlers`, through `apply`: the rules of set_setpoint
(limits inclusive, the fencing token) and of declare_node / remove_node (ownership, narrowed
limits drop setpoints). The other commands have their own test modules (report, dispatch,
policy, ownership, forecast records)."""

from __future__ import annotations

import pytest

from meshems.core.cluster import ZoneState, apply
from meshems.core.zone_records import Device, Member, Result, Setpoint, setpoint_dict
from tests.core.test_cluster import business, declare, dev, remove, setpoint, zone

# --- set_setpoint ------------------------------------------------------------------------


def test_set_setpoint_on_an_unknown_device_lists_the_known_ones() -> None:
    _, res = apply(zone(), setpoint("d7", 1.0, rid="u"), 1, 10)
    assert (res.ok, res.code) == (False, "E_UNKNOWN_DEVICE")
    assert "'d7'" in res.message and "known: d1, d2, d3" in res.message
    _, res = apply(ZoneState(), setpoint("d7", 1.0, rid="u"), 1, 1)
    assert "known: none yet" in res.message


@pytest.mark.parametrize(
    ("device", "kw", "code"),
    [
        ("d1", -10.0, "OK"),
        ("d1", 10.0, "OK"),
        ("d1", 0, "OK"),
        ("d1", -10.000001, "E_LIMIT"),
        ("d1", 10.5, "E_LIMIT"),
        ("d2", 0.0, "OK"),
        ("d2", 5.0, "OK"),
        ("d2", -0.1, "E_LIMIT"),
        ("d2", 1e300, "E_LIMIT"),
    ],
)
def test_set_setpoint_limits_are_inclusive(device: str, kw: float, code: str) -> None:
    before = zone()
    after, res = apply(before, setpoint(device, kw, rid="lim"), 2, 10)
    assert res.code == code
    if code == "OK":
        assert after.setpoints[device].kw == kw
    else:
        assert business(after) == business(before)
        assert str(kw) in res.message and "limits" in res.message


def test_an_accepted_setpoint_carries_its_fencing_token() -> None:
    state, res = apply(zone(), setpoint("d2", 3, rid="fence-1", source="ems"), 5, 42)
    assert res == Result(True, "OK", "", 5, 42)
    assert state.setpoints["d2"] == Setpoint("d2", 3.0, 5, 42, "fence-1", "ems")
    assert type(state.setpoints["d2"].kw) is float
    # A later write replaces it with a newer token; other setpoints keep theirs.
    state, _ = apply(state, setpoint("d2", 1.5, rid="fence-2"), 6, 50)
    assert state.setpoints["d2"] == Setpoint("d2", 1.5, 6, 50, "fence-2", "operator")
    assert state.setpoints["d1"] == Setpoint("d1", 4.0, 1, 3, "sp-d1", "operator")
    assert setpoint_dict(state.setpoints["d2"]) == {
        "device_id": "d2",
        "kw": 1.5,
        "term": 6,
        "index": 50,
        "rid": "fence-2",
        "source": "operator",
    }


# --- declare_node and remove_node --------------------------------------------------------


def test_declaring_a_device_owned_by_another_node_is_refused() -> None:
    before = zone()
    after, res = apply(before, declare("n3", dev("d9"), dev("d3"), rid="steal"), 1, 10)
    assert (res.ok, res.code) == (False, "E_DEVICE_OWNED")
    assert "'d3'" in res.message and "'n2'" in res.message
    assert business(after) == business(before)  # n3 did not become a member, d9 not added


def test_redeclaring_with_fewer_devices_drops_them_and_their_setpoints() -> None:
    state, _ = apply(zone(), setpoint("d2", 2.0, rid="sp-d2"), 1, 10)
    state, res = apply(state, declare("n1", dev("d2", "pv", 0, 5), rid="n1-v2", api="new:1"), 2, 11)
    assert res == Result(True, "OK", "node n1 declared with 1 devices", 2, 11)
    assert set(state.devices) == {"d2", "d3"}
    assert set(state.setpoints) == {"d2"}  # d1 and its setpoint are gone
    assert state.setpoints["d2"].index == 10
    assert state.members["n1"] == Member("n1", "n1.local:4321", "new:1")


def test_redeclaring_updates_limits_and_kind() -> None:
    state, _ = apply(zone(), declare("n1", dev("d1", "load", -3, 0), dev("d2"), rid="n1-v2"), 1, 10)
    assert state.devices["d1"] == Device("d1", "load", "n1", -3.0, 0.0)
    _, res = apply(state, setpoint("d1", -4, rid="x"), 1, 11)
    assert res.code == "E_LIMIT"


def test_a_released_device_can_be_declared_by_another_node() -> None:
    state, _ = apply(zone(), declare("n2", rid="n2-empty"), 1, 10)
    assert "d3" not in state.devices and "n2" in state.members
    state, res = apply(state, declare("n3", dev("d3", "meter", 0, 0), rid="n3"), 1, 11)
    assert res.ok
    assert state.devices["d3"] == Device("d3", "meter", "n3", 0.0, 0.0)


def test_remove_node_removes_the_member_its_devices_and_setpoints() -> None:
    before = zone()
    before, _ = apply(before, setpoint("d3", -1, rid="sp-d3"), 1, 10)
    after, res = apply(before, remove("n1", rid="rm-n1"), 2, 11)
    assert res == Result(True, "OK", "node n1 removed", 2, 11)
    assert set(after.members) == {"n2"}
    assert set(after.devices) == {"d3"}
    assert set(after.setpoints) == {"d3"}
    assert after.setpoints["d3"] == before.setpoints["d3"]


@pytest.mark.parametrize("node", ["n7", "d1", "N1"])
def test_remove_of_an_unknown_node_is_refused(node: str) -> None:
    before = zone()
    after, res = apply(before, remove(node, rid=f"rm-{node}"), 1, 10)
    assert (res.ok, res.code) == (False, "E_UNKNOWN_NODE")
    assert repr(node) in res.message
    assert business(after) == business(before)


def test_removing_twice_refuses_the_second_time() -> None:
    state, _ = apply(zone(), remove("n2", rid="rm-1"), 1, 10)
    _, res = apply(state, remove("n2", rid="rm-2"), 1, 11)
    assert res.code == "E_UNKNOWN_NODE"


def test_narrowed_limits_drop_setpoints_now_out_of_range() -> None:
    state, _ = apply(zone(), setpoint("d1", 4.0, rid="s1"), 1, 10)
    assert state.setpoints["d1"].kw == 4.0
    narrower = declare("n1", dev("d1", "battery", -1.0, 1.0), dev("d2", "pv", 0.0, 5.0), rid="narrow")
    state, res = apply(state, narrower, 1, 11)
    assert res.ok
    assert "d1" not in state.setpoints  # 4 kW is outside the new [-1, 1]: not actuated any more
    state, _ = apply(state, setpoint("d1", 0.5, rid="s2"), 1, 12)
    wider = declare("n1", dev("d1", "battery", -2.0, 2.0), dev("d2", "pv", 0.0, 5.0), rid="wider")
    state, _ = apply(state, wider, 1, 13)
    assert state.setpoints["d1"].kw == 0.5  # still inside: kept
