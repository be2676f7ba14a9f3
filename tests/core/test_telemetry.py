"""Unit tests for `meshems.core.telemetry`: the zone telemetry record every replica derives
from an applied Raft entry, its topic, payload and user properties.

Zone states are built by applying real commands with `apply`. The stream numbering
(`ZoneState.telemetry_seq`) rises by one per successful report, set_setpoint and dispatch
only; replicas applying the same log derive byte-identical payloads (a hypothesis
property); the `cloud_ack` watermark never runs ahead of the stream nor backwards.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import msgpack
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from meshems.core.cluster import TELEMETRY_TYPES, ZoneState, apply
from meshems.core.commands import encode
from meshems.core.snapshot import restore, snapshot
from meshems.core.telemetry import (
    PAYLOAD_VERSION,
    TOPICS,
    TelemetryRecord,
    derive,
    gap_notice,
    parse_payload,
    payload,
    subscription,
    topic,
    user_properties,
)
from meshems.core.zone_records import Result

# No explain phase: it traces every line on Python < 3.12 and makes a failure take minutes.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
PROPS = settings(max_examples=60, deadline=None, phases=PHASES)
ZONE = "zone-a"

# --- building commands -----------------------------------------------------------------------


def dev(id_: str, kind: str = "battery", min_kw: float = -10.0, max_kw: float = 10.0) -> dict[str, Any]:
    return {"id": id_, "kind": kind, "min_kw": min_kw, "max_kw": max_kw}


def declare(node: str, *devices: dict[str, Any], rid: str | None = None) -> bytes:
    return encode(
        "declare_node",
        rid or f"decl-{node}",
        node_id=node,
        raft=f"{node}.local:4321",
        api=f"{node}.local:8080",
        devices=list(devices),
    )


def reading(id_: str, state: str = "ok", **values: float) -> dict[str, Any]:
    return {"id": id_, "state": state, "values": values}


def report(node: str, *readings: dict[str, Any], seq: int, rid: str | None = None) -> bytes:
    return encode("report", rid or f"report-{node}-{seq}", node_id=node, seq=seq, devices=list(readings))


def setpoint(device: str, kw: float, rid: str, source: str = "operator") -> bytes:
    return encode("set_setpoint", rid, device_id=device, kw=kw, source=source)


def dispatch(
    cycle: int,
    setpoints: Iterable[tuple[str, float]] = (),
    relays: Iterable[tuple[str, bool]] = (),
    rid: str | None = None,
) -> bytes:
    return encode(
        "dispatch",
        rid or f"dispatch-{cycle}",
        cycle=cycle,
        setpoints=[{"device_id": d, "kw": kw, "controller": "peak", "reason": "test"} for d, kw in setpoints],
        relays=[
            {"load": load, "closed": closed, "controller": "shed", "reason": "test", "expected_kw": 1.5}
            for load, closed in relays
        ],
        envelopes=[],
        inputs={"grid_kw": 1.0},
    )


def barrier(rid: str) -> bytes:
    return encode("barrier", rid)


def cloud_ack(seq: int, rid: str | None = None) -> bytes:
    return encode("cloud_ack", rid or f"ack-{seq}", seq=seq)


def at(state: ZoneState, data: bytes, term: int = 2) -> tuple[ZoneState, Result]:
    """Apply one entry at the next index."""
    return apply(state, data, term, state.last_index + 1)


def run(state: ZoneState, entries: Iterable[bytes], term: int = 2) -> ZoneState:
    """Apply entries at consecutive indexes; every one must succeed."""
    for data in entries:
        state, res = at(state, data, term)
        assert res.ok, res
    return state


def zone() -> ZoneState:
    """n1 owns meter m1, battery b1 [-10, 10], pv p1 [0, 5], relay r1; n2 owns meter m2, battery b2."""
    return run(
        ZoneState(),
        [
            declare("n1", dev("m1", "meter"), dev("b1"), dev("p1", "pv", 0.0, 5.0), dev("r1", "relay")),
            declare("n2", dev("m2", "meter"), dev("b2")),
        ],
    )


def reported(n1_grid_kw: float, n2_grid_kw: float) -> ZoneState:
    """The zone after one report per node with these meter readings."""
    return run(
        zone(),
        [
            report("n1", reading("m1", power_kw=n1_grid_kw), seq=1),
            report("n2", reading("m2", power_kw=n2_grid_kw), seq=1),
        ],
    )


# --- the stream numbering --------------------------------------------------------------------

#: (entry, expected result code, telemetry_seq after it), applied in order on `zone()`
STEPS: list[tuple[str, bytes, str, int]] = [
    ("report", report("n1", reading("m1", power_kw=2.0), seq=1), "OK", 1),
    ("stale report", report("n1", reading("m1", power_kw=2.0), seq=1, rid="again"), "E_STALE_REPORT", 1),
    ("report of a non-member", report("n9", reading("m1", power_kw=2.0), seq=1), "E_UNKNOWN_NODE", 1),
    ("report of a foreign device", report("n1", reading("m2", power_kw=1.0), seq=2), "E_DEVICE_OWNED", 1),
    ("malformed report", encode("report", "bad", node_id="n1", seq=-1, devices=[]), "E_CMD_MALFORMED", 1),
    ("setpoint", setpoint("b1", 2.5, rid="sp-1"), "OK", 2),
    ("setpoint over the limit", setpoint("b1", 11.0, rid="sp-2"), "E_LIMIT", 2),
    ("setpoint of an unknown device", setpoint("zz", 1.0, rid="sp-3"), "E_UNKNOWN_DEVICE", 2),
    ("retried setpoint (same rid)", setpoint("b1", 2.5, rid="sp-1"), "OK", 2),
    ("dispatch", dispatch(1, [("b1", -3.0)], [("r1:1", True)]), "OK", 3),
    ("stale dispatch", dispatch(1, [("b1", -3.0)], rid="dispatch-1b"), "E_STALE_DISPATCH", 3),
    ("dispatch over a limit", dispatch(2, [("b1", 99.0)]), "E_LIMIT", 3),
    ("barrier", barrier("bar-1"), "OK", 3),
    ("declare_node", declare("n3", dev("b3"), rid="decl-n3"), "OK", 3),
    ("cloud_ack", cloud_ack(2), "OK", 3),
    ("set_policy", encode("set_policy", "pol-1", values={"import_limit_kw": 30}), "OK", 3),
    ("second report", report("n2", reading("m2", power_kw=-1.0), seq=5), "OK", 4),
    ("second setpoint", setpoint("p1", 4.0, rid="sp-4", source="cli"), "OK", 5),
    ("second dispatch", dispatch(7, [("b2", 1.0)]), "OK", 6),
]


def test_telemetry_seq_rises_by_one_per_successful_telemetry_entry_only() -> None:
    state = zone()
    assert state.telemetry_seq == 0
    seen: list[tuple[str, str, int]] = []
    for name, data, _, _ in STEPS:
        state, res = at(state, data)
        seen.append((name, res.code, state.telemetry_seq))
    assert seen == [(name, code, seq) for name, _, code, seq in STEPS]
    assert state.cloud_acked == 2


def test_declaring_nodes_adds_no_record() -> None:
    assert zone().telemetry_seq == 0


def test_telemetry_types_are_reports_setpoints_and_dispatches() -> None:
    assert frozenset({"report", "set_setpoint", "dispatch"}) == TELEMETRY_TYPES


def test_derive_gives_a_record_exactly_for_the_entries_that_raised_the_seq() -> None:
    state = zone()
    derived: list[tuple[str, int | None]] = []
    for name, data, _, _ in STEPS:
        before = state.telemetry_seq
        state, _ = at(state, data, term=3)
        if state.telemetry_seq > before:
            rec = derive(state, data, 3, state.last_index)
            assert rec is not None
            assert (rec.term, rec.index) == (3, state.last_index)
            derived.append((name, rec.seq))
        elif name in ("barrier", "declare_node", "cloud_ack", "set_policy"):
            assert derive(state, data, 3, state.last_index) is None
            derived.append((name, None))
    assert derived == [
        ("report", 1),
        ("setpoint", 2),
        ("dispatch", 3),
        ("barrier", None),
        ("declare_node", None),
        ("cloud_ack", None),
        ("set_policy", None),
        ("second report", 4),
        ("second setpoint", 5),
        ("second dispatch", 6),
    ]


@pytest.mark.parametrize(
    "data",
    [b"\xc1", b"not msgpack at all", msgpack.packb([1, 2]), encode("report", "r", node_id="n1")],
    ids=["reserved-byte", "garbage", "not-a-map", "report-missing-fields"],
)
def test_derive_ignores_undecodable_entries(data: bytes) -> None:
    assert derive(reported(1.0, 2.0), data, 1, 9) is None


# --- record contents -------------------------------------------------------------------------


def test_report_record_carries_readings_node_grid_and_zone_import() -> None:
    state = reported(3.5, -1.25)
    data = report(
        "n1", reading("m1", power_kw=4.0), reading("b1", "stale", power_kw=-2.0, soc_pct=55.0), seq=2
    )
    state, res = at(state, data, term=4)
    assert res.ok and state.telemetry_seq == 3
    rec = derive(state, data, 4, state.last_index)
    assert rec == TelemetryRecord(
        seq=3,
        term=4,
        index=state.last_index,
        kind="node",
        subject="n1",
        body={
            "node": "n1",
            "report_seq": 2,
            "readings": {
                "m1": {"state": "ok", "values": {"power_kw": 4.0}},
                "b1": {"state": "stale", "values": {"power_kw": -2.0, "soc_pct": 55.0}},
            },
            "node_grid_kw": 4.0,
            "zone": {"grid_kw": 2.75, "import_kw": 2.75, "export_kw": 0.0, "complete": True},
        },
    )


def test_report_record_shows_export_when_the_zone_feeds_the_grid() -> None:
    state = reported(3.5, 0.0)
    data = report("n2", reading("m2", power_kw=-8.25), seq=2)
    state, _ = at(state, data)
    rec = derive(state, data, 2, state.last_index)
    assert rec is not None
    assert rec.body["node_grid_kw"] == -8.25
    assert rec.body["zone"] == {"grid_kw": -4.75, "import_kw": 0.0, "export_kw": 4.75, "complete": True}


def test_report_record_before_every_meter_reported_is_incomplete() -> None:
    state = zone()
    data = report("n1", reading("m1", power_kw=6.0), seq=1)
    state, _ = at(state, data)
    rec = derive(state, data, 2, state.last_index)
    assert rec is not None
    assert rec.body["node_grid_kw"] == 6.0
    # n2's meter has not reported: its import is unknown and left out of the sum
    assert rec.body["zone"] == {"grid_kw": 6.0, "import_kw": 6.0, "export_kw": 0.0, "complete": False}


def test_report_record_of_a_node_whose_meter_is_not_ok_has_no_node_grid() -> None:
    state = reported(1.0, 2.0)
    data = report("n1", reading("m1", "defective", power_kw=9.0), seq=2)
    state, _ = at(state, data)
    rec = derive(state, data, 2, state.last_index)
    assert rec is not None
    assert rec.body["node_grid_kw"] is None
    assert rec.body["readings"] == {"m1": {"state": "defective", "values": {"power_kw": 9.0}}}
    assert rec.body["zone"] == {"grid_kw": 2.0, "import_kw": 2.0, "export_kw": 0.0, "complete": False}


def test_report_record_of_a_node_without_a_meter_has_no_node_grid() -> None:
    state = run(zone(), [declare("n3", dev("b3"))])
    data = report("n3", reading("b3", power_kw=1.0, soc_pct=40.0), seq=1)
    state, _ = at(state, data)
    rec = derive(state, data, 2, state.last_index)
    assert rec is not None
    assert (rec.kind, rec.subject, rec.body["node_grid_kw"]) == ("node", "n3", None)
    assert rec.body["zone"]["complete"] is False


def test_a_value_named_state_does_not_hide_the_device_state() -> None:
    state = zone()
    data = report("n1", {"id": "m1", "state": "stale", "values": {"state": 1.0, "power_kw": 2.0}}, seq=1)
    state, res = at(state, data)
    assert res.ok
    rec = derive(state, data, 2, state.last_index)
    assert rec is not None
    assert rec.body["readings"]["m1"] == {"state": "stale", "values": {"state": 1.0, "power_kw": 2.0}}


meter_kw = st.floats(min_value=-1000.0, max_value=1000.0, allow_nan=False, allow_subnormal=False)


@PROPS
@given(n1=meter_kw, n2=meter_kw)
def test_zone_import_and_export_follow_the_meters(n1: float, n2: float) -> None:
    state = reported(0.0, n2)
    data = report("n1", reading("m1", power_kw=n1), seq=2)
    state, _ = at(state, data)
    rec = derive(state, data, 2, state.last_index)
    assert rec is not None
    grid = n1 + n2
    z = rec.body["zone"]
    assert z == {
        "grid_kw": round(grid, 4),
        "import_kw": round(max(0.0, grid), 4),
        "export_kw": round(max(0.0, -grid), 4),
        "complete": True,
    }
    assert z["import_kw"] >= 0.0 and z["export_kw"] >= 0.0
    assert z["import_kw"] == 0.0 or z["export_kw"] == 0.0
    assert z["import_kw"] - z["export_kw"] == z["grid_kw"]
    assert rec.body["node_grid_kw"] == round(n1, 4)


def test_setpoint_record() -> None:
    data = setpoint("b1", -7.5, rid="op-42", source="cli")
    state, _ = at(zone(), data, term=5)
    rec = derive(state, data, 5, state.last_index)
    assert rec == TelemetryRecord(
        1, 5, state.last_index, "setpoints", "", {"setpoints": {"b1": -7.5}, "source": "cli", "rid": "op-42"}
    )


def test_dispatch_record() -> None:
    data = dispatch(12, [("b1", -3.0), ("p1", 2.0)], [("r1:1", True), ("r1:2", False)])
    state, res = at(zone(), data, term=6)
    assert res.ok
    rec = derive(state, data, 6, state.last_index)
    assert rec == TelemetryRecord(
        1,
        6,
        state.last_index,
        "setpoints",
        "",
        {
            "cycle": 12,
            "source": "dispatch",
            "setpoints": {"b1": -3.0, "p1": 2.0},
            "relays": {"r1:1": True, "r1:2": False},
        },
    )


# --- replicas agree byte for byte ------------------------------------------------------------


def _entries() -> st.SearchStrategy[list[bytes]]:
    value = st.floats(min_value=-20.0, max_value=20.0, allow_nan=False, allow_subnormal=False)
    rid = st.sampled_from([f"r{i}" for i in range(24)])  # a small pool: retries happen
    node_report = st.builds(
        lambda node, seq, kw, rid_: report(node, reading(f"m{node[1]}", power_kw=kw), seq=seq, rid=rid_),
        st.sampled_from(["n1", "n2", "n9"]),
        st.integers(0, 40),
        value,
        st.one_of(st.none(), rid),
    )
    operator = st.builds(
        lambda d, kw, rid_: setpoint(d, kw, rid=rid_), st.sampled_from(["b1", "p1", "b2", "zz"]), value, rid
    )
    dispatches = st.builds(
        lambda cycle, kw, closed: dispatch(cycle, [("b2", kw)], [("r1:1", closed)]),
        st.integers(0, 40),
        value,
        st.booleans(),
    )
    others = st.one_of(
        st.builds(barrier, rid),
        st.builds(cloud_ack, st.integers(0, 8), rid),
        st.just(b"\x93garbage"),
    )
    return st.lists(st.one_of(node_report, operator, dispatches, others), max_size=30)


def _stream(entries: list[bytes], restore_at: int | None = None) -> list[tuple[int, bytes, bytes]]:
    """(seq, msgpack payload, json payload) of every record a replica derives, optionally
    after restoring its state from a snapshot before entry `restore_at`."""
    state, out = zone(), []
    for i, data in enumerate(entries):
        if i == restore_at:
            state = restore(snapshot(state))
        before = state.telemetry_seq
        state, res = apply(state, data, 2 + i // 10, state.last_index + 1)
        if state.telemetry_seq != before:
            assert res.ok and state.telemetry_seq == before + 1
            rec = derive(state, data, 2 + i // 10, state.last_index)
            assert rec is not None and rec.seq == state.telemetry_seq
            out.append((rec.seq, payload(rec, ZONE), payload(rec, ZONE, "json")))
    return out


@PROPS
@given(entries=_entries(), cut=st.integers(0, 30))
def test_replicas_applying_the_same_log_derive_identical_payloads(entries: list[bytes], cut: int) -> None:
    first = _stream(entries)
    second = _stream(list(entries))
    restored = _stream(entries, restore_at=min(cut, len(entries)))
    assert first == second == restored
    assert [seq for seq, _, _ in first] == list(range(1, len(first) + 1))
    for seq, packed, text in first:
        assert parse_payload(packed) == parse_payload(text)
        assert parse_payload(packed)["seq"] == seq


# --- payload, parse, user properties ---------------------------------------------------------

REPORT_RECORD = TelemetryRecord(
    7,
    3,
    41,
    "node",
    "n1",
    {"node": "n1", "report_seq": 9, "readings": {"m1": {"state": "ok", "power_kw": 1.5}}},
)
SETPOINT_RECORD = TelemetryRecord(8, 3, 42, "setpoints", "", {"setpoints": {"b1": 2.0}, "source": "cli"})


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_payload_round_trips_with_its_position(fmt: str) -> None:
    assert parse_payload(payload(REPORT_RECORD, ZONE, fmt)) == {
        "v": PAYLOAD_VERSION,
        "zone": ZONE,
        "seq": 7,
        "term": 3,
        "index": 41,
        "kind": "node",
        "node": "n1",
        "data": {"node": "n1", "report_seq": 9, "readings": {"m1": {"state": "ok", "power_kw": 1.5}}},
    }
    # a record without a subject carries no "node" key
    assert parse_payload(payload(SETPOINT_RECORD, ZONE, fmt)) == {
        "v": 1,
        "zone": ZONE,
        "seq": 8,
        "term": 3,
        "index": 42,
        "kind": "setpoints",
        "data": {"setpoints": {"b1": 2.0}, "source": "cli"},
    }


def test_payload_formats_are_told_apart_by_their_first_byte() -> None:
    packed, text = payload(SETPOINT_RECORD, ZONE), payload(SETPOINT_RECORD, ZONE, "json")
    assert packed == payload(SETPOINT_RECORD, ZONE, "msgpack")
    assert packed[:1] != b"{" and msgpack.unpackb(packed)["seq"] == 8
    assert text == (
        b'{"data":{"setpoints":{"b1":2.0},"source":"cli"},"index":42,"kind":"setpoints",'
        b'"seq":8,"term":3,"v":1,"zone":"zone-a"}'
    )


def test_user_properties_name_the_position_and_zone() -> None:
    assert user_properties(7, 3, 41, ZONE) == [("seq", "7"), ("term", "3"), ("index", "41"), ("zone", ZONE)]


def test_gap_notice_names_the_range_reason_and_policy() -> None:
    body = gap_notice(ZONE, 5, 9, "age", "drop_oldest")
    assert body == b'{"first":5,"last":9,"policy":"drop_oldest","reason":"age","v":1,"zone":"zone-a"}'
    assert parse_payload(body) == {
        "v": 1,
        "zone": ZONE,
        "first": 5,
        "last": 9,
        "reason": "age",
        "policy": "drop_oldest",
    }


# --- topics ----------------------------------------------------------------------------------


def matches(topic_filter: str, name: str) -> bool:
    """MQTT topic-filter matching (MQTT v5 §4.7): '+' is one level, a final '#' is the rest
    (including the parent level itself)."""
    fl, nl = topic_filter.split("/"), name.split("/")
    for i, part in enumerate(fl):
        if part == "#":
            return i == len(fl) - 1
        if i >= len(nl) or (part != "+" and part != nl[i]):
            return False
    return len(fl) == len(nl)


@pytest.mark.parametrize(
    ("topic_filter", "name", "expected"),
    [
        ("a/b/#", "a/b", True),
        ("a/b/#", "a/b/c/d", True),
        ("a/b/#", "a/bc/d", False),
        ("a/+/c", "a/b/c", True),
        ("a/+/c", "a/b/c/d", False),
        ("a/b", "a/b/c", False),
        ("a/b/c", "a/b", False),
    ],
)
def test_the_matcher_follows_mqtt(topic_filter: str, name: str, expected: bool) -> None:
    assert matches(topic_filter, name) is expected


def test_topics_are_spelled_by_kind() -> None:
    assert set(TOPICS) == {"node", "setpoints", "gaps"}
    assert topic("meshems", ZONE, "node", "n1") == "meshems/zone-a/telemetry/node/n1"
    assert topic("site/eu", ZONE, "setpoints") == "site/eu/zone-a/setpoints"
    assert topic("meshems", ZONE, "gaps") == "meshems/zone-a/gaps"
    with pytest.raises(KeyError):
        topic("meshems", ZONE, "alarms")


def test_the_subscription_matches_every_topic_of_its_zone_only() -> None:
    sub = subscription("site/eu", ZONE)
    assert sub == "site/eu/zone-a/#"
    for kind in TOPICS:
        assert matches(sub, topic("site/eu", ZONE, kind, "n1")), kind
        assert not matches(sub, topic("site/eu", "zone-b", kind, "n1")), kind
        assert not matches(sub, topic("site", ZONE, kind, "n1")), kind
        assert not matches(subscription("site/eu", "zone-b"), topic("site/eu", ZONE, kind, "n1")), kind


def test_record_topics_come_from_the_kind_and_subject() -> None:
    state = reported(1.0, 2.0)
    data = setpoint("b1", 1.0, rid="sp")
    state, _ = at(state, data)
    sp = derive(state, data, 2, state.last_index)
    data = report("n2", reading("m2", power_kw=1.0), seq=2)
    state, _ = at(state, data)
    node = derive(state, data, 2, state.last_index)
    assert sp is not None and node is not None
    assert topic("p", ZONE, sp.kind, sp.subject) == "p/zone-a/setpoints"
    assert topic("p", ZONE, node.kind, node.subject) == "p/zone-a/telemetry/node/n2"


# --- the cloud_ack watermark -----------------------------------------------------------------


def three_records() -> ZoneState:
    state = run(reported(1.0, 2.0), [setpoint("b1", 1.0, rid="sp")])
    assert state.telemetry_seq == 3
    return state


def test_cloud_ack_ahead_of_the_stream_is_refused() -> None:
    state = three_records()
    after, res = at(state, cloud_ack(4))
    assert (res.ok, res.code) == (False, "E_CLOUD_ACK_AHEAD")
    assert res.message == "cloud ack 4 is ahead of the telemetry stream (3)"
    assert (after.cloud_acked, after.telemetry_seq) == (0, 3)


def test_cloud_ack_moves_the_watermark_forward_only() -> None:
    state = three_records()
    state, res = at(state, cloud_ack(2))
    assert (res.code, res.message, state.cloud_acked) == ("OK", "cloud acknowledged through 2", 2)
    state, res = at(state, cloud_ack(1))
    assert (res.code, res.message, state.cloud_acked) == ("OK", "already acknowledged through 2", 2)
    state, res = at(state, cloud_ack(2, rid="ack-2-again"))
    assert (res.ok, state.cloud_acked) == (True, 2)
    state, res = at(state, cloud_ack(3))
    assert (res.ok, state.cloud_acked, state.telemetry_seq) == (True, 3, 3)


@pytest.mark.parametrize("seq", [-1, True, 1.0, "2", 2**63])
def test_malformed_cloud_ack_is_refused(seq: object) -> None:
    state = three_records()
    after, res = at(state, encode("cloud_ack", "bad-ack", seq=seq))
    assert res.code == "E_CMD_MALFORMED"
    assert after.cloud_acked == 0


def test_watermark_and_stream_survive_snapshot_and_restore() -> None:
    state, res = at(three_records(), cloud_ack(2))
    assert res.ok
    back = restore(snapshot(state))
    assert (back.telemetry_seq, back.cloud_acked) == (3, 2)
    back, res = at(back, cloud_ack(1, rid="late"))
    assert (res.ok, back.cloud_acked) == (True, 2)
    back, res = at(back, cloud_ack(4, rid="ahead"))
    assert (res.code, back.cloud_acked) == ("E_CLOUD_ACK_AHEAD", 2)
    back, _ = at(back, setpoint("b1", 2.0, rid="sp-after"))
    assert back.telemetry_seq == 4


def test_a_snapshot_without_the_telemetry_fields_restores_them_as_zero() -> None:
    raw = msgpack.unpackb(snapshot(three_records()), raw=False)
    del raw["telemetry_seq"], raw["cloud_acked"]
    back = restore(msgpack.packb(raw))
    assert (back.telemetry_seq, back.cloud_acked) == (0, 0)


def test_json_payload_is_plain_json() -> None:
    doc = json.loads(payload(REPORT_RECORD, ZONE, "json"))
    assert doc["node"] == "n1" and doc["data"]["readings"]["m1"]["power_kw"] == 1.5
