"""An operator's relay override (`relay_override`): its wire form, what `apply` does with it,
how dispatch and the node's leader treat an overridden load, and its expiry."""

from __future__ import annotations

import math
from typing import Any

import pytest

from meshems.core import commands
from meshems.core.cluster import apply
from meshems.core.dispatch import dispatch
from meshems.core.node_events import Applied, Propose, Proposed, Tick, Write
from meshems.core.policy import Policy
from meshems.core.process_image import DeviceInfo, image_from_readings
from meshems.core.snapshot import restore, snapshot, state_hash
from tests.core.test_node import LEADER, Zone, machine, poll


def override(
    load: str = "n1-relays:1", closed: bool | None = False, until_s: float | None = None, rid: str = "o1"
) -> bytes:
    return commands.encode("relay_override", rid, load=load, closed=closed, until_s=until_s, source="op")


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"load": "n1-relays"}, "RELAY_DEVICE:CHANNEL"),
        ({"load": "n1-relays:0"}, "RELAY_DEVICE:CHANNEL"),
        ({"closed": "yes"}, "'closed'"),
        ({"until_s": -5.0}, "'until_s'"),
        ({"until_s": math.inf}, "'until_s'"),
    ],
)
def test_a_malformed_override_is_refused(fields: dict[str, Any], text: str) -> None:
    base = {"load": "n1-relays:1", "closed": False, "until_s": None, "source": "op", **fields}
    cmd = commands.decode(commands.encode("relay_override", "o", **base))
    assert isinstance(cmd, commands.Rejection) and text in cmd.message


def test_an_override_is_an_operator_command() -> None:
    assert "relay_override" in commands.OPERATOR_TYPES


def test_an_override_commits_the_load_state_and_clearing_keeps_it_until_control_moves_it() -> None:
    zone = Zone()
    state = zone.commit(override(closed=False, until_s=2e9))
    o, r = state.overrides["n1-relays:1"], state.relays["n1-relays:1"]
    assert (o.closed, o.until_s, o.source, (o.term, o.index)) == (False, 2e9, "op", (r.term, r.index))
    assert (r.closed, r.controller) == (False, "override")
    on = zone.commit(override(closed=True, rid="o2"))
    assert on.relays["n1-relays:1"].closed and on.overrides["n1-relays:1"].until_s is None
    cleared = zone.commit(override(closed=None, rid="o3"))
    assert cleared.overrides == {} and cleared.relays["n1-relays:1"].closed  # control takes it from here
    assert restore(snapshot(on)) == on and state_hash(restore(snapshot(on))) == state_hash(on)


@pytest.mark.parametrize("load", ["nope:1", "n1-bat:1"])
def test_an_override_of_something_that_is_no_relay_load_is_refused(load: str) -> None:
    zone = Zone()
    before = zone.state
    after, res = apply(before, override(load=load), 2, before.last_index + 1)
    assert (res.ok, res.code) == (False, "E_UNKNOWN_DEVICE") and after.overrides == {}


def test_a_dispatch_leaves_an_overridden_load_alone() -> None:
    zone = Zone()
    held = zone.commit(override(closed=False))
    fields = {
        "cycle": 1,
        "setpoints": [],
        "envelopes": [],
        "inputs": {},
        "relays": [
            {
                "load": "n1-relays:1",
                "closed": True,
                "controller": "restore",
                "reason": "r",
                "expected_kw": 8.0,
            },
            {
                "load": "n1-relays:2",
                "closed": False,
                "controller": "load_shedding",
                "reason": "s",
                "expected_kw": 4.0,
            },
        ],
    }
    after = zone.commit(commands.encode("dispatch", "d1", **fields))
    assert after.relays["n1-relays:1"] == held.relays["n1-relays:1"]  # still held off by the override
    assert not after.relays["n1-relays:2"].closed  # the other load follows dispatch


def test_dispatch_neither_sheds_nor_restores_an_overridden_load() -> None:
    devices = [DeviceInfo("m", "meter", "n1", 0, 0), DeviceInfo("r", "relay", "n1", 0, 0)]
    readings = {
        "m": ("ok", {"power_kw": 50.0}),
        "r": ("ok", {"relay_1": 1.0, "relay_2": 1.0, "load_1_kw": 8.0, "load_2_kw": 8.0}),
    }
    policy = Policy(import_limit_kw=30.0, shed_order=("r:1", "r:2"))
    image = image_from_readings(devices, readings)
    assert [x[0] for x in dispatch(image, policy).relays] == ["r:1", "r:2"]
    assert [x[0] for x in dispatch(image, policy, overridden={"r:1"}).relays] == ["r:2"]


def test_the_node_writes_an_override_like_any_committed_relay_state() -> None:
    node, zone = machine(), Zone()
    node.step(LEADER)
    poll(node, 100.0)
    (w,) = [
        a
        for a in node.step(Applied(zone.commit(override(closed=False))))
        if isinstance(a, Write) and a.key == "n1-relays:1"
    ]
    o = zone.state.overrides["n1-relays:1"]
    assert (w.role, w.value, w.token, w.source) == ("relay_1", 0.0, (o.term, o.index), "override")


def test_the_leader_clears_an_expired_override_once() -> None:
    node, zone = machine(), Zone()
    node.step(LEADER)
    end = 1.8e9 + 60  # machine() starts at wall time 1.8e9
    node.step(Applied(zone.commit(override(closed=False, until_s=end))))
    expire = [a for a in node.step(Tick(101.0, end - 1)) if isinstance(a, Propose) and a.purpose == "expire"]
    assert expire == []  # not yet
    (p,) = [a for a in node.step(Tick(101.1, end)) if isinstance(a, Propose) and a.purpose == "expire"]
    cmd = commands.decode(p.data)
    assert (
        isinstance(cmd, commands.Command) and cmd.fields["closed"] is None and cmd.rid.startswith("expire-")
    )
    assert [
        a for a in node.step(Tick(101.2, end + 1)) if isinstance(a, Propose) and a.purpose == "expire"
    ] == []
    node.step(Proposed("expire", p.key, {"ok": True, "code": "OK"}, 101.3))
    assert zone.commit(p.data).overrides == {}


@pytest.mark.parametrize(("shed_order", "closed_after"), [((), True), (("n1-relays:1",), False)])
def test_clearing_an_off_override_puts_a_load_outside_the_shed_order_back_on(
    shed_order: tuple[str, ...], closed_after: bool
) -> None:
    zone = Zone()
    if shed_order:
        zone.commit(commands.encode("set_policy", "p", values={"shed_order": list(shed_order)}))
    zone.commit(override(closed=False))
    cleared = zone.commit(override(closed=None, rid="o2"))
    # outside the shed order nothing else would ever switch it back on; inside it, restore
    # decides with the zone's headroom (no load slammed on past the import limit)
    assert cleared.overrides == {} and cleared.relays["n1-relays:1"].closed is closed_after
