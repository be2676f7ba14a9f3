"""The node state machine, rule by rule (OpenEMS style: events in, actions out).

Each test builds a gateway n1 (meter, battery with a 3 s revert timeout, PV, a relay
board) in a zone with n2 and n3, feeds `core.node.Node` events and asserts on the actions
it answers with. No I/O: this is the exact code the daemon and the harness run.
"""

from __future__ import annotations

from typing import Any

from meshems.core import commands
from meshems.core.cluster import ZoneState, apply
from meshems.core.config import parse_config
from meshems.core.node import Node
from meshems.core.node_events import (
    Applied,
    DeviceReading,
    Log,
    Propose,
    Proposed,
    RaftChanged,
    Tick,
    Write,
    Written,
)
from meshems.core.node_spec import NodeSpec, declaration

BAT_ROLES = frozenset({"power_kw", "soc_pct", "setpoint_kw", "revert_timeout_s", "capacity_kwh"})
ROLES = {
    "n1-meter": frozenset({"power_kw"}),
    "n1-bat": BAT_ROLES,
    "n1-pv": frozenset({"power_kw", "limit_pct", "rated_kw"}),
    "n1-relays": frozenset({"relay_1", "relay_2", "load_1_kw", "load_2_kw"}),
}
LEADER = RaftChanged("leader", 2, "n1", True, True, frozenset({"n2", "n3"}))
FOLLOWER = RaftChanged("follower", 2, "n2", True, True, frozenset({"n2", "n3"}))
ALONE = RaftChanged("follower", 2, None, False, True)


def config(protection: dict[str, Any] | None = None, policy: dict[str, Any] | None = None) -> Any:
    n1 = {
        "id": "n1",
        "address": "127.0.0.1",
        "raft_port": 1,
        "api_port": 2,
        "devices": [
            {"id": "n1-meter", "kind": "meter"},
            {"id": "n1-bat", "kind": "battery", "min_kw": -50, "max_kw": 50, "revert_timeout_s": 3.0},
            {"id": "n1-pv", "kind": "pv", "min_kw": 0, "max_kw": 40, "rated_kw": 40},
            {"id": "n1-relays", "kind": "relay"},
        ],
    }
    if protection is not None:
        n1["protection"] = protection
    peers = [
        {
            "id": n,
            "address": "127.0.0.1",
            "raft_port": 10 + i,
            "api_port": 20 + i,
            "devices": [{"id": f"{n}-bat", "kind": "battery", "min_kw": -50, "max_kw": 50}],
        }
        for i, n in enumerate(("n2", "n3"))
    ]
    doc: dict[str, Any] = {"cluster": "t", "zone": "z", "raft": {"secret_file": "s"}, "nodes": [n1, *peers]}
    if policy is not None:
        doc["policy"] = policy
    return parse_config(doc)


def machine(**kw: Any) -> Node:
    node = Node(NodeSpec.from_config(config(**kw), "n1", ROLES))
    node.step(Tick(100.0, 1.8e9))
    return node


class Zone:
    """A zone state built by the real `apply`, one committed entry at a time."""

    def __init__(self) -> None:
        self.state, self.term = ZoneState(), 2
        cfg = config()
        for n in cfg.nodes:
            self.commit(declaration(n))
        self.n1 = cfg.node("n1")

    def redeclare_n1(self) -> ZoneState:
        """n1's configured devices and limits, declared again (a new request id)."""
        cmd = commands.decode(declaration(self.n1))
        assert isinstance(cmd, commands.Command)
        return self.commit(commands.encode("declare_node", f"again-{self.state.last_index}", **cmd.fields))

    def commit(self, data: bytes) -> ZoneState:
        self.state, res = apply(self.state, data, self.term, self.state.last_index + 1)
        assert res.ok, res
        return self.state

    def setpoint(self, device: str, kw: float) -> ZoneState:
        return self.commit(
            commands.encode(
                "set_setpoint", f"sp-{self.state.last_index}", device_id=device, kw=kw, source="operator"
            )
        )

    def envelope(self, import_kw: float) -> ZoneState:
        env = {
            "node_id": "n1",
            "import_limit_kw": import_kw,
            "export_limit_kw": 100.0,
            "soc_reserve_pct": 20.0,
            "shed": ["n1-relays:2"],
        }
        cycle = (self.state.last_dispatch.cycle + 1) if self.state.last_dispatch else 1
        return self.commit(
            commands.encode(
                "dispatch", f"d-{cycle}", cycle=cycle, setpoints=[], relays=[], envelopes=[env], inputs={}
            )
        )


def writes(actions: list) -> list[Write]:
    return [a for a in actions if isinstance(a, Write)]


def codes(actions: list) -> list[str]:
    return [a.code for a in actions if isinstance(a, Log)]


def poll(node: Node, now: float, grid_kw: float = 5.0, relays: tuple[float, float] = (1.0, 1.0)) -> list:
    """One poll of every device of n1, the site meter last (protection checks its reading)."""
    bat = {"power_kw": 0.0, "soc_pct": 50.0, "capacity_kwh": 100.0, "setpoint_kw": 0.0}
    polled = {
        "n1-bat": bat,
        "n1-pv": {"power_kw": 10.0, "rated_kw": 40.0, "limit_pct": 100.0},
        "n1-relays": {"relay_1": relays[0], "relay_2": relays[1], "load_1_kw": 8.0, "load_2_kw": 4.0},
        "n1-meter": {"power_kw": grid_kw},
    }
    out = []
    for dev, values in polled.items():
        out += node.step(DeviceReading(dev, True, 0, values, now))
    return out


def done(node: Node, actions: list, now: float, ok: bool = True) -> list:
    """Answer every write as the field would (ok or failed)."""
    out = []
    for w in writes(actions):
        out += node.step(Written(w.key, w.token, ok, "OK" if ok else "E_TIMEOUT", "", now))
    return out


# --- actuation: fencing and refresh -------------------------------------------------------------


def test_a_committed_setpoint_is_written_once_then_refreshed_at_a_third_of_the_revert_timeout() -> None:
    node, zone = machine(), Zone()
    node.step(FOLLOWER)
    poll(node, 100.0)
    first = node.step(Applied(zone.setpoint("n1-bat", 12.0)))
    bat = [w for w in writes(first) if w.key == "n1-bat"]
    revert = [w for w in writes(first) if w.role == "revert_timeout_s"]
    assert [(w.role, w.value, w.source) for w in bat] == [("setpoint_kw", 12.0, "committed")]
    assert [(w.device_id, w.value) for w in revert] == [("n1-bat", 3.0)]  # once the device answered
    done(node, first, 100.0)
    assert writes(node.step(Tick(100.9, 0.0))) == []  # not yet: refresh_s is 3 / 3 = 1 s
    again = writes(node.step(Tick(101.0, 0.0)))
    assert [(w.key, w.value, w.token) for w in again] == [("n1-bat", 12.0, bat[0].token)]
    assert not any(w.role == "revert_timeout_s" for w in again)  # written once


def test_a_write_in_flight_is_not_sent_again() -> None:
    node, zone = machine(), Zone()
    node.step(FOLLOWER)
    assert (
        len([w for w in writes(node.step(Applied(zone.setpoint("n1-bat", 5.0)))) if w.key == "n1-bat"]) == 1
    )
    assert [w for w in writes(node.step(Tick(110.0, 0.0))) if w.key == "n1-bat"] == []


def test_an_older_token_than_the_one_applied_is_refused_and_counted() -> None:
    node, zone = machine(), Zone()
    node.step(FOLLOWER)
    old_state = zone.setpoint("n1-bat", 5.0)
    new_state = zone.setpoint("n1-bat", 7.0)
    done(node, node.step(Applied(new_state)), 100.0)
    replayed = node.step(Applied(old_state))  # a stale state (e.g. a late replay)
    assert [w for w in writes(replayed) if w.key == "n1-bat"] == []
    assert "W_STALE_SETPOINT" in codes(replayed) and node.actuation.refused_stale == 1


def test_nothing_is_written_before_the_node_caught_up() -> None:
    node, zone = machine(), Zone()
    node.step(RaftChanged("follower", 2, "n2", True, False))  # replaying its journal
    assert writes(node.step(Applied(zone.setpoint("n1-bat", 5.0)))) == []
    assert [w.key for w in writes(node.step(FOLLOWER))] == ["n1-bat"]


def test_a_setpoint_outside_the_config_limits_is_never_written() -> None:
    node, zone = machine(), Zone()
    node.step(FOLLOWER)
    wide = zone.commit(
        commands.encode(
            "declare_node",
            "d-wide",
            node_id="n1",
            raft="x:1",
            api="x:2",
            devices=[{"id": "n1-bat", "kind": "battery", "min_kw": -5e3, "max_kw": 5e3}],
        )
    )
    actions = node.step(Applied(wide)) + node.step(Applied(zone.setpoint("n1-bat", 900.0)))
    assert [w for w in writes(actions) if w.key == "n1-bat"] == [] and "E_LIMIT" in codes(actions)


def test_a_pv_setpoint_becomes_a_percent_limit() -> None:
    node, zone = machine(), Zone()
    node.step(FOLLOWER)
    (pv,) = [w for w in writes(node.step(Applied(zone.setpoint("n1-pv", 10.0)))) if w.key == "n1-pv"]
    assert (pv.role, pv.value, pv.kw) == ("limit_pct", 25.0, 10.0)


# --- survival ----------------------------------------------------------------------------------


def test_survival_starts_after_1_5_s_without_quorum_and_ends_when_it_is_back() -> None:
    node, zone = machine(policy={"import_limit_kw": 30}), Zone()
    node.step(FOLLOWER)
    zone.commit(commands.encode("set_policy", "p", values={"import_limit_kw": 30.0}))
    done(node, node.step(Applied(zone.envelope(import_kw=3.0))), 100.0)
    node.step(ALONE)
    assert codes(node.step(Tick(101.4, 0.0))) == [] and node.mode == "normal"
    poll(node, 101.45, grid_kw=20.0)
    entered = node.step(Tick(101.5, 0.0))
    assert "E_QUORUM" in codes(entered) and node.mode == "survival"
    (bat,) = [w for w in writes(entered) if w.key == "n1-bat"]
    assert bat.token is None and bat.source.startswith("survival:") and bat.value > 0  # discharges
    back = node.step(FOLLOWER)
    assert "I_SURVIVAL_END" in codes(back) and node.mode == "normal"


def test_without_an_envelope_survival_writes_nothing() -> None:
    node = machine()
    node.step(ALONE)
    poll(node, 100.0, grid_kw=80.0)
    actions = node.step(Tick(102.0, 0.0))
    assert node.mode == "survival" and writes(actions) == []


# --- protection --------------------------------------------------------------------------------


def test_an_overload_sheds_at_once_and_the_load_stays_off_for_the_hold_time() -> None:
    node, zone = machine(protection={"max_import_kw": 50, "hold_s": 10}), Zone()
    node.step(FOLLOWER)
    trip = poll(node, 100.0, grid_kw=60.0)
    # 10 kW over: the first load (8 kW) is not enough, the second goes too (by id: no shed order)
    assert [(w.key, w.role, w.value, w.source) for w in writes(trip)] == [
        ("n1-relays:1#trip", "relay_1", 0.0, "protection"),
        ("n1-relays:2#trip", "relay_2", 0.0, "protection"),
    ]
    done(node, trip, 100.02)
    assert [(t["target"], t["ms"]) for t in node.trips] == [("n1-relays:1", 20.0), ("n1-relays:2", 20.0)]
    # a committed relay state for the tripped load is held back until the hold ends
    closed = zone.commit(
        commands.encode(
            "dispatch",
            "d-r",
            cycle=1,
            setpoints=[],
            envelopes=[],
            inputs={},
            relays=[
                {
                    "load": "n1-relays:1",
                    "closed": True,
                    "controller": "restore",
                    "reason": "r",
                    "expected_kw": 8.0,
                }
            ],
        )
    )
    assert [w for w in writes(node.step(Applied(closed))) if w.key == "n1-relays:1"] == []
    later = node.step(Tick(110.1, 0.0))
    assert [(w.key, w.value) for w in writes(later) if w.key == "n1-relays:1"] == [("n1-relays:1", 1.0)]


def test_an_import_within_the_limit_trips_nothing() -> None:
    node = machine(protection={"max_import_kw": 50})
    assert writes(poll(node, 100.0, grid_kw=49.9)) == []


# --- duties: declare, report, lead ---------------------------------------------------------------


def test_the_node_declares_itself_once_a_leader_exists_and_a_leader_declares_the_others() -> None:
    node = machine()
    assert node.step(Tick(100.1, 0.0)) == []  # no leader: nothing to propose to
    props = [a for a in node.step(LEADER) if isinstance(a, Propose) and a.purpose == "declare"]
    assert sorted(p.key for p in props) == ["n1", "n2", "n3"]
    node.step(Proposed("declare", "n1", {"ok": True, "code": "OK"}, 100.2))
    assert node.declared


def test_reports_go_out_about_once_a_second_with_the_next_sequence_number() -> None:
    node, zone = machine(), Zone()
    node.step(FOLLOWER)
    node.step(Applied(zone.state))
    poll(node, 100.0)
    (rep,) = [a for a in node.step(Tick(100.1, 0.0)) if isinstance(a, Propose) and a.purpose == "report"]
    cmd = commands.decode(rep.data)
    assert isinstance(cmd, commands.Command) and cmd.fields["seq"] == 0
    assert {d["id"] for d in cmd.fields["devices"]} == set(ROLES)
    assert [a for a in node.step(Tick(100.5, 0.0)) if isinstance(a, Propose) and a.purpose == "report"] == []
    node.step(Proposed("report", "0", {"ok": True, "code": "OK"}, 100.6))
    zone.commit(rep.data)
    node.step(Applied(zone.state))
    (nxt,) = [a for a in node.step(Tick(101.2, 0.0)) if isinstance(a, Propose) and a.purpose == "report"]
    assert commands.decode(nxt.data).fields["seq"] == 1  # type: ignore[union-attr]


def dispatches(actions: list) -> list[Propose]:
    return [a for a in actions if isinstance(a, Propose) and a.purpose == "dispatch"]


def test_a_new_leader_dispatches_at_once_then_once_per_cycle_one_at_a_time() -> None:
    node, zone = machine(), Zone()
    zone.commit(commands.encode("set_policy", "p", values={"import_limit_kw": 30.0, "cycle_s": 2.0}))
    report = commands.encode(
        "report",
        "r",
        node_id="n2",
        seq=0,
        devices=[{"id": "n2-bat", "state": "ok", "values": {"power_kw": 0.0}}],
    )
    node.step(Applied(zone.commit(report)))
    (first,) = dispatches(node.step(LEADER))  # at once (t = 100.0)
    assert dispatches(node.step(Tick(100.5, 0.0))) == []  # the first is still in flight
    assert dispatches(node.step(Proposed("dispatch", first.key, {"ok": True, "code": "OK"}, 100.6))) == []
    assert dispatches(node.step(Tick(101.9, 0.0))) == []  # within the 2 s cycle of the first
    assert len(dispatches(node.step(Tick(102.1, 0.0)))) == 1


def test_a_gone_peer_counts_as_stale_three_seconds_after_its_last_report() -> None:
    node, zone = machine(), Zone()
    for seq in range(3):
        data = commands.encode(
            "report",
            f"r{seq}",
            node_id="n2",
            seq=seq,
            devices=[{"id": "n2-bat", "state": "ok", "values": {"power_kw": 5.0}}],
        )
        node.step(Tick(100.0 + seq, 0.0))
        node.step(Applied(zone.commit(data)))
    assert node.liveness.stale(node.zone, 104.9) == frozenset()
    assert node.liveness.stale(node.zone, 105.1) == {"n2"}


def test_the_forecast_reserve_travels_as_its_own_report_field_and_dispatch_sums_it() -> None:
    from meshems.core.node_lead import zone_reserve_kwh

    node, zone = machine(), Zone()
    node.step(FOLLOWER)
    node.step(Applied(zone.state))
    poll(node, 100.0)
    node.reserve_kwh = 7.5  # what the node's forecast asked for (no envelope: kept as it is)
    (rep,) = [a for a in node.step(Tick(100.1, 0.0)) if isinstance(a, Propose) and a.purpose == "report"]
    cmd = commands.decode(rep.data)
    assert isinstance(cmd, commands.Command) and cmd.fields["reserve_kwh"] == 7.5
    assert all("reserve_kwh" not in d["values"] for d in cmd.fields["devices"])  # no fake meter value
    other = commands.encode("report", "r2", node_id="n2", seq=0, devices=[], reserve_kwh=2.5)
    state = zone.commit(other)
    assert zone_reserve_kwh(zone.commit(rep.data)) == 10.0 and zone_reserve_kwh(state) == 2.5
