"""Unit tests for the `report` command: a node's measurement summary, replicated about 1 Hz.

Two halves: `meshems.core.commands` validates a report (seq, readings, states, values) the
same way on every replica, and `meshems.core.cluster` stores a member's newest report with
its log position, refusing non-members, foreign or unknown devices and stale sequence
numbers. A report must survive snapshot/restore, be dropped with its node, deduplicate by
request id, and replicas applying random logs of reports must agree.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshems.core.cluster import ZoneState, apply
from meshems.core.commands import (
    DEVICE_STATES,
    MAX_REPORT_VALUES,
    SCHEMA_VERSION,
    Command,
    Invalid,
    Rejection,
    _reading,
    _report,
    decode,
    encode,
)
from meshems.core.snapshot import restore, snapshot, state_hash, to_snapshot
from meshems.core.zone_handlers import MAX_SEQ_STEP
from meshems.core.zone_records import NodeReport, Reading
from tests.core.test_cluster import (
    PHASES,
    business,
    declare,
    dev,
    remove,
    run,
    setpoint,
    valid_maps,
    weighted,
    zone,
)

PROPS = settings(max_examples=60, deadline=None, phases=PHASES)

# --- building reports ----------------------------------------------------------------------


def reading(id_: str, state: str = "ok", **values: Any) -> dict[str, Any]:
    return {"id": id_, "state": state, "values": values}


def report(node: str, *readings: dict[str, Any], seq: int, rid: str | None = None) -> bytes:
    return encode("report", rid or f"report-{node}-{seq}", node_id=node, seq=seq, devices=list(readings))


def raw_report(rid: str = "bad-report", **fields: Any) -> bytes:
    """A report map packed as is (no validation), for malformed cases."""
    base: dict[str, Any] = {"node_id": "n1", "seq": 1, "devices": [reading("d1", p_kw=1.0)]}
    return msgpack.packb({"type": "report", "v": SCHEMA_VERSION, "rid": rid, **{**base, **fields}})


def at(state: ZoneState, data: bytes, term: int = 2) -> tuple[ZoneState, Any]:
    """Apply one entry at the next index."""
    return apply(state, data, term, state.last_index + 1)


def everything(state: ZoneState) -> tuple[Any, ...]:
    """What a report may change: business state and reports (not position or window)."""
    return (*business(state), dict(state.reports))


# zone(): n1 owns d1 (battery) and d2 (pv); n2 owns d3; d1 has a setpoint.

# --- validation (commands) -----------------------------------------------------------------


def test_device_states_and_value_limit_are_the_documented_ones() -> None:
    assert frozenset({"unknown", "ok", "stale", "defective"}) == DEVICE_STATES
    assert MAX_REPORT_VALUES == 32


def test_a_reading_is_normalised_with_values_sorted_by_name_as_floats() -> None:
    out = _reading({"values": {"soc_pct": 61, "p_kw": -2.5, "f_hz": 50}, "state": "ok", "id": "d1"})
    assert out == {"id": "d1", "state": "ok", "values": {"f_hz": 50.0, "p_kw": -2.5, "soc_pct": 61.0}}
    assert list(out["values"]) == ["f_hz", "p_kw", "soc_pct"]
    assert all(type(v) is float for v in out["values"].values())


def test_a_report_is_normalised() -> None:
    fields = _report({"node_id": "n1", "seq": 0, "devices": [reading("d2", "stale"), reading("d1", x=1)]})
    assert fields == {
        "node_id": "n1",
        "seq": 0,
        "devices": [
            {"id": "d2", "state": "stale", "values": {}},
            {"id": "d1", "state": "ok", "values": {"x": 1.0}},
        ],
        "reserve_kwh": 0.0,  # no forecast reserve asked for
    }


def test_decode_returns_the_normalised_report() -> None:
    cmd = decode(report("n1", reading("d1", "defective", b=2, a=1.5), seq=7, rid="r-7"))
    assert isinstance(cmd, Command)
    assert (cmd.type, cmd.rid) == ("report", "r-7")
    assert cmd.fields == {
        "node_id": "n1",
        "seq": 7,
        "devices": [{"id": "d1", "state": "defective", "values": {"a": 1.5, "b": 2.0}}],
        "reserve_kwh": 0.0,
    }


many_values = {f"v{i:02d}": float(i) for i in range(MAX_REPORT_VALUES)}
VALID_SHAPES = [
    ("no readings", {"devices": []}),
    ("seq zero", {"seq": 0}),
    ("largest seq", {"seq": 2**63 - 1}),
    ("no values", {"devices": [reading("d1")]}),
    ("exactly MAX_REPORT_VALUES values", {"devices": [reading("d1", **many_values)]}),
    ("value name of 32 characters", {"devices": [reading("d1", **{"n" * 32: 1.0})]}),
    ("integer and negative values", {"devices": [reading("d1", a=-3, b=0, c=-0.5)]}),
    ("huge finite value", {"devices": [reading("d1", a=1.7e308)]}),
    ("1000 readings", {"devices": [reading(f"x{i}") for i in range(1000)]}),
    *[(f"state {s}", {"devices": [reading("d1", s)]}) for s in sorted(DEVICE_STATES)],
]


@pytest.mark.parametrize(("case", "fields"), VALID_SHAPES, ids=[v[0] for v in VALID_SHAPES])
def test_valid_report_shapes_decode(case: str, fields: dict[str, Any]) -> None:
    cmd = decode(raw_report(**fields))
    assert isinstance(cmd, Command), cmd
    assert cmd.fields["seq"] == fields.get("seq", 1)
    assert len(cmd.fields["devices"]) == len(fields.get("devices", [1]))


def _without(key: str) -> bytes:
    raw = msgpack.unpackb(raw_report())
    del raw[key]
    return msgpack.packb(raw)


def _reading_without(key: str) -> bytes:
    r = reading("d1", p_kw=1.0)
    del r[key]
    return raw_report(devices=[r])


MALFORMED = [
    # seq
    ("bool seq True", raw_report(seq=True)),
    ("bool seq False", raw_report(seq=False)),
    ("negative seq", raw_report(seq=-1)),
    ("seq of 2**63", raw_report(seq=2**63)),
    ("float seq", raw_report(seq=1.0)),
    ("string seq", raw_report(seq="1")),
    ("nil seq", raw_report(seq=None)),
    ("missing seq", _without("seq")),
    # node
    ("missing node_id", _without("node_id")),
    ("empty node_id", raw_report(node_id="")),
    ("node_id too long", raw_report(node_id="n" * 64)),
    ("node_id not a string", raw_report(node_id=1)),
    # devices
    ("missing devices", _without("devices")),
    ("devices a map", raw_report(devices={"d1": reading("d1")})),
    ("devices nil", raw_report(devices=None)),
    ("more than 1000 readings", raw_report(devices=[reading(f"x{i}") for i in range(1001)])),
    ("reading not a map", raw_report(devices=["d1"])),
    ("reading a list", raw_report(devices=[["d1", "ok", {}]])),
    ("duplicate device", raw_report(devices=[reading("d1", a=1), reading("d2"), reading("d1", a=2)])),
    ("duplicate device, identical readings", raw_report(devices=[reading("d1"), reading("d1")])),
    ("extra field in a reading", raw_report(devices=[{**reading("d1"), "unit_id": 2}])),
    ("reading without id", _reading_without("id")),
    ("reading without state", _reading_without("state")),
    ("reading without values", _reading_without("values")),
    ("empty device id", raw_report(devices=[reading("")])),
    ("device id too long", raw_report(devices=[reading("d" * 64)])),
    # state
    ("bad state", raw_report(devices=[reading("d1", "broken")])),
    ("state in capitals", raw_report(devices=[reading("d1", "OK")])),
    ("empty state", raw_report(devices=[reading("d1", "")])),
    ("state not a string", raw_report(devices=[reading("d1", 1)])),
    ("state too long", raw_report(devices=[reading("d1", "defective" * 2)])),
    # values
    ("NaN value", raw_report(devices=[reading("d1", p_kw=math.nan)])),
    ("inf value", raw_report(devices=[reading("d1", p_kw=math.inf)])),
    ("-inf value", raw_report(devices=[reading("d1", ok=1.0, p_kw=-math.inf)])),
    ("bool value", raw_report(devices=[reading("d1", on=True)])),
    ("string value", raw_report(devices=[reading("d1", p_kw="1.0")])),
    ("nil value", raw_report(devices=[reading("d1", p_kw=None)])),
    ("list value", raw_report(devices=[reading("d1", p_kw=[1.0])])),
    ("too many values", raw_report(devices=[reading("d1", **many_values, extra=1.0)])),
    ("values a list", raw_report(devices=[{"id": "d1", "state": "ok", "values": [["p_kw", 1.0]]}])),
    ("values nil", raw_report(devices=[{"id": "d1", "state": "ok", "values": None}])),
    ("values a number", raw_report(devices=[{"id": "d1", "state": "ok", "values": 1.0}])),
    ("empty value name", raw_report(devices=[{"id": "d1", "state": "ok", "values": {"": 1.0}}])),
    ("value name too long", raw_report(devices=[{"id": "d1", "state": "ok", "values": {"n" * 33: 1.0}}])),
    ("binary value name", raw_report(devices=[{"id": "d1", "state": "ok", "values": {b"p_kw": 1.0}}])),
    # envelope
    ("extra field", raw_report(zone="z1")),
    ("extra field named like a reading", raw_report(state="ok")),
]


@pytest.mark.parametrize(("case", "data"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_reports_are_refused_and_change_nothing(case: str, data: bytes) -> None:
    decoded = decode(data)
    assert isinstance(decoded, Rejection)
    assert decoded.code == "E_CMD_MALFORMED"
    before = zone()
    after, res = apply(before, data, 4, before.last_index + 1)
    assert (res.ok, res.code, res.term, res.index) == (False, "E_CMD_MALFORMED", 4, before.last_index + 1)
    assert everything(after) == everything(before)
    assert after.reports == {}
    assert (after.last_term, after.last_index) == (4, before.last_index + 1)


@pytest.mark.parametrize(
    "raw",
    [
        "d1",
        None,
        {"id": "d1", "state": "ok"},
        {"id": "d1", "state": "ok", "values": {1: 2.0}},
        {"id": "d1", "state": "ok", "values": {}, "x": 1},
        {"id": "d1", "state": "gone", "values": {}},
    ],
)
def test_reading_raises_invalid_on_bad_input(raw: object) -> None:
    with pytest.raises(Invalid) as info:
        _reading(raw)
    assert info.value.code == "E_CMD_MALFORMED"


# --- applying (cluster) --------------------------------------------------------------------


def test_a_members_report_is_stored_with_its_log_position_and_sorted_readings() -> None:
    before = zone()
    data = report("n1", reading("d2", "stale", p_kw=3), reading("d1", soc_pct=61.5, p_kw=-2.0), seq=5)
    after, res = apply(before, data, 7, 40)
    assert (res.ok, res.code, res.term, res.index, res.duplicate) == (True, "OK", 7, 40, False)
    assert after.reports == {
        "n1": NodeReport(
            "n1",
            5,
            7,
            40,
            (
                Reading("d1", "ok", (("p_kw", -2.0), ("soc_pct", 61.5))),
                Reading("d2", "stale", (("p_kw", 3.0),)),
            ),
        )
    }
    assert business(after) == business(before)  # a report changes no member, device or setpoint
    assert before.reports == {}  # states are immutable


def test_an_empty_report_is_stored() -> None:
    after, res = at(zone(), report("n2", seq=0))
    assert res.ok
    assert after.reports["n2"].readings == ()
    assert after.reports["n2"].seq == 0


def test_a_report_may_cover_only_some_of_the_nodes_devices() -> None:
    after, res = at(zone(), report("n1", reading("d2", "unknown"), seq=1))
    assert res.ok
    assert [r.device_id for r in after.reports["n1"].readings] == ["d2"]


def test_reports_of_different_nodes_are_kept_apart() -> None:
    state, results = run(
        zone(),
        [
            report("n1", reading("d1", p_kw=1.0), seq=9),
            report("n2", reading("d3", "defective"), seq=1),
            report("n1", reading("d1", p_kw=2.0), seq=10),
        ],
        term=3,
    )
    assert [r.code for r in results] == ["OK", "OK", "OK"]
    assert sorted(state.reports) == ["n1", "n2"]
    assert state.reports["n1"].seq == 10
    assert state.reports["n1"].readings == (Reading("d1", "ok", (("p_kw", 2.0),)),)
    assert state.reports["n1"].index == state.last_index
    assert state.reports["n2"].index == state.last_index - 1
    assert state.reports["n2"].readings == (Reading("d3", "defective", ()),)


REFUSED = [
    # (case, report bytes, code)
    ("unknown node", report("n9", seq=1), "E_UNKNOWN_NODE"),
    ("unknown node, case differs", report("N1", seq=1), "E_UNKNOWN_NODE"),
    ("a device id is not a node", report("d1", seq=1), "E_UNKNOWN_NODE"),
    ("unknown node naming its devices", report("n9", reading("d1"), seq=1), "E_UNKNOWN_NODE"),
    ("device of another node", report("n1", reading("d3"), seq=1), "E_DEVICE_OWNED"),
    ("unknown device", report("n1", reading("ghost"), seq=1), "E_DEVICE_OWNED"),
    ("own and foreign devices", report("n1", reading("d1"), reading("d3"), seq=1), "E_DEVICE_OWNED"),
    ("own and unknown devices", report("n2", reading("d3"), reading("d4"), seq=1), "E_DEVICE_OWNED"),
]


@pytest.mark.parametrize(("case", "data", "code"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refused_reports_change_nothing(case: str, data: bytes, code: str) -> None:
    before, _ = at(zone(), report("n2", reading("d3", p_kw=1.0), seq=0, rid="seed-n2"))
    after, res = apply(before, data, 5, before.last_index + 3)
    assert (res.ok, res.code, res.term, res.index) == (False, code, 5, before.last_index + 3)
    assert everything(after) == everything(before)
    assert (after.last_term, after.last_index) == (5, before.last_index + 3)


def test_a_refused_device_is_named_in_the_message() -> None:
    _, res = at(zone(), report("n1", reading("d1"), reading("d3"), seq=1))
    assert res.code == "E_DEVICE_OWNED"
    assert "'d3'" in res.message and "n1" in res.message


@pytest.mark.parametrize(
    ("first", "then", "code"),
    [
        (5, 5, "E_STALE_REPORT"),
        (5, 4, "E_STALE_REPORT"),
        (5, 0, "E_STALE_REPORT"),
        (0, 0, "E_STALE_REPORT"),
        (5, 6, "OK"),
        (0, 1, "OK"),
        (5, 5 + MAX_SEQ_STEP, "OK"),
        (5, 6 + MAX_SEQ_STEP, "E_SEQ_JUMP"),
        (5, 2**63 - 1, "E_SEQ_JUMP"),
    ],
)
def test_a_report_must_be_newer_than_the_stored_one(first: int, then: int, code: str) -> None:
    state, _ = at(zone(), report("n1", reading("d1", p_kw=1.0), seq=first, rid="first"))
    stored = state.reports["n1"]
    after, res = at(state, report("n1", reading("d2", p_kw=9.0), seq=then, rid="then"))
    assert res.code == code
    if code == "OK":
        assert after.reports["n1"].seq == then
        assert after.reports["n1"].readings == (Reading("d2", "ok", (("p_kw", 9.0),)),)
    else:
        assert not res.ok
        assert str(then) in res.message and str(first) in res.message
        assert after.reports["n1"] is stored
        assert everything(after) == everything(state)


@pytest.mark.parametrize(("seq", "code"), [(0, "OK"), (MAX_SEQ_STEP - 1, "OK"), (MAX_SEQ_STEP, "E_SEQ_JUMP"),
                                           (2**63 - 1, "E_SEQ_JUMP")])  # fmt: skip
def test_a_first_report_starts_near_zero(seq: int, code: str) -> None:
    _, res = at(zone(), report("n1", seq=seq, rid="first"))
    assert res.code == code


# Found by an attack probe: one forged report with seq 2**63-1 made every later report of the
# node stale, for good (also after a restart). It is refused now, and the real ones go on.
def test_a_forged_huge_seq_cannot_wedge_a_node_s_reports() -> None:
    state, _ = at(zone(), report("n1", reading("d1", p_kw=1.0), seq=7, rid="real-7"))
    state, res = at(state, report("n1", reading("d1", p_kw=-500.0), seq=2**63 - 1, rid="forged"))
    assert res.code == "E_SEQ_JUMP" and state.reports["n1"].seq == 7
    state, res = at(state, report("n1", reading("d1", p_kw=2.0), seq=8, rid="real-8"))
    assert res.ok and state.reports["n1"].readings == (Reading("d1", "ok", (("p_kw", 2.0),)),)


def test_a_stale_report_is_refused_before_its_devices_are_checked() -> None:
    state, _ = at(zone(), report("n1", seq=5, rid="first"))
    _, res = at(state, report("n1", reading("ghost"), seq=3, rid="then"))
    assert res.code == "E_STALE_REPORT"


def test_the_seq_of_one_node_does_not_fence_another() -> None:
    state, _ = at(zone(), report("n1", seq=100))
    after, res = at(state, report("n2", seq=1))
    assert res.ok
    assert (after.reports["n1"].seq, after.reports["n2"].seq) == (100, 1)


def test_a_refused_report_does_not_consume_its_seq() -> None:
    state, _ = at(zone(), report("n1", seq=1))
    state, res = at(state, report("n1", reading("d3"), seq=2, rid="foreign"))
    assert res.code == "E_DEVICE_OWNED"
    state, res = at(state, report("n1", reading("d1"), seq=2, rid="retry-own"))
    assert res.ok
    assert state.reports["n1"].seq == 2


# --- dedup -----------------------------------------------------------------------------------


def test_the_same_report_bytes_twice_are_deduplicated_by_rid() -> None:
    data = report("n1", reading("d1", p_kw=1.0), seq=3)
    first_state, first = at(zone(), data, term=2)
    second_state, second = at(first_state, data, term=3)
    assert first.ok and not first.duplicate
    assert second.duplicate
    assert (second.ok, second.code, second.term, second.index) == (True, "OK", 2, first.index)
    # Not a second, stale report: nothing changes but the log position.
    assert second.code != "E_STALE_REPORT"
    assert everything(second_state) == everything(first_state)
    assert second_state.reports["n1"] is first_state.reports["n1"]
    assert (second_state.last_term, second_state.last_index) == (3, first_state.last_index + 1)


def test_a_retried_refused_report_returns_the_first_refusal() -> None:
    data = report("n9", seq=1)
    state, first = at(zone(), data)
    state, second = at(state, data)
    assert first.code == second.code == "E_UNKNOWN_NODE"
    assert second.duplicate and second.index == first.index


def test_a_different_report_reusing_a_rid_gets_the_first_result() -> None:
    state, first = at(zone(), report("n1", reading("d1", p_kw=1.0), seq=3, rid="r"))
    state, second = at(state, report("n1", reading("d1", p_kw=2.0), seq=4, rid="r"))
    assert second.duplicate and second.index == first.index
    assert state.reports["n1"].seq == 3
    assert state.reports["n1"].readings[0].values == (("p_kw", 1.0),)


def test_a_malformed_report_retry_is_deduplicated() -> None:
    data = raw_report(rid="bad", seq=-1)
    state, first = at(zone(), data)
    state, second = at(state, data)
    assert first.code == second.code == "E_CMD_MALFORMED"
    assert second.duplicate and second.index == first.index


# --- membership changes ----------------------------------------------------------------------


def test_remove_node_drops_its_report_and_keeps_the_others() -> None:
    state, results = run(
        zone(),
        [report("n1", reading("d1"), seq=4), report("n2", reading("d3"), seq=2), remove("n1", rid="rm-n1")],
    )
    assert [r.code for r in results] == ["OK", "OK", "OK"]
    assert list(state.reports) == ["n2"]
    assert state.reports["n2"].seq == 2


def test_a_removed_and_redeclared_node_starts_its_seq_again() -> None:
    state, results = run(
        zone(),
        [
            report("n1", reading("d1"), seq=50),
            remove("n1", rid="rm-n1"),
            report("n1", seq=51, rid="after-removal"),
            declare("n1", dev("d1"), rid="redecl-n1"),
            report("n1", reading("d1"), seq=0, rid="restart"),
        ],
    )
    assert [r.code for r in results] == ["OK", "OK", "E_UNKNOWN_NODE", "OK", "OK"]
    assert state.reports["n1"].seq == 0


def test_a_device_released_by_redeclaring_can_no_longer_be_reported() -> None:
    state, results = run(
        zone(),
        [
            declare("n1", dev("d1"), rid="redecl-n1"),  # drops d2
            report("n1", reading("d2"), seq=1),
            declare("n2", dev("d3"), dev("d2", "pv", 0.0, 5.0), rid="redecl-n2"),
            report("n2", reading("d2"), reading("d3"), seq=1),
        ],
    )
    assert [r.code for r in results] == ["OK", "E_DEVICE_OWNED", "OK", "OK"]
    assert [r.device_id for r in state.reports["n2"].readings] == ["d2", "d3"]


def test_setpoints_and_reports_do_not_interfere() -> None:
    state, results = run(
        zone(),
        [report("n1", reading("d1", p_kw=4.0), seq=1), setpoint("d1", -3.0, rid="sp-2")],
    )
    assert [r.code for r in results] == ["OK", "OK"]
    assert state.setpoints["d1"].kw == -3.0
    assert state.reports["n1"].readings == (Reading("d1", "ok", (("p_kw", 4.0),)),)


# --- snapshot, restore, hash -----------------------------------------------------------------


def reported() -> ZoneState:
    state, results = run(
        zone(),
        [
            report("n1", reading("d2", "stale", p_kw=1.25), reading("d1", soc_pct=60, p_kw=-5), seq=7),
            report("n2", reading("d3", "defective"), seq=2),
        ],
        term=4,
    )
    assert all(r.ok for r in results)
    return state


def test_snapshot_lists_reports_sorted_by_node_with_their_readings() -> None:
    state = reported()
    n = state.last_index
    assert to_snapshot(state)["reports"] == [
        [
            "n1",
            7,
            4,
            n - 1,
            [["d1", "ok", [["p_kw", -5.0], ["soc_pct", 60.0]]], ["d2", "stale", [["p_kw", 1.25]]]],
            0.0,
        ],
        ["n2", 2, 4, n, [["d3", "defective", []]], 0.0],
    ]
    assert to_snapshot(ZoneState())["reports"] == []


def test_snapshot_restore_round_trips_reports() -> None:
    state = reported()
    back = restore(snapshot(state))
    assert back == state
    assert back.reports == state.reports
    assert all(isinstance(r, NodeReport) for r in back.reports.values())
    assert all(isinstance(x, Reading) for r in back.reports.values() for x in r.readings)
    assert snapshot(back) == snapshot(state)
    assert state_hash(back) == state_hash(state)
    # The restored state goes on applying reports exactly as the original does.
    more = report("n1", reading("d1", p_kw=0.5), seq=8)
    assert at(back, more) == at(state, more)
    stale = report("n1", seq=7, rid="stale-after-restore")
    assert at(back, stale)[1].code == "E_STALE_REPORT"


@pytest.mark.parametrize(
    "change",
    [
        lambda r: replace(r, seq=r.seq + 1),
        lambda r: replace(r, term=r.term + 1),
        lambda r: replace(r, index=r.index - 1),
        lambda r: replace(r, readings=r.readings[:1]),
        lambda r: replace(r, readings=(replace(r.readings[0], state="stale"), *r.readings[1:])),
        lambda r: replace(r, readings=(replace(r.readings[0], values=(("p_kw", -5.5),)), *r.readings[1:])),
        lambda r: replace(r, readings=(replace(r.readings[0], device_id="d0"), *r.readings[1:])),
    ],
    ids=["seq", "term", "index", "fewer readings", "state", "value", "device id"],
)
def test_state_hash_depends_on_every_part_of_a_report(change: Any) -> None:
    state = reported()
    changed = replace(state, reports={**state.reports, "n1": change(state.reports["n1"])})
    assert state_hash(changed) != state_hash(state)
    assert restore(snapshot(changed)) == changed


def test_state_hash_ignores_the_order_reports_were_stored_in() -> None:
    state = reported()
    flipped = replace(state, reports=dict(reversed(list(state.reports.items()))))
    assert list(flipped.reports) != list(state.reports)
    assert state_hash(flipped) == state_hash(state)


@pytest.mark.parametrize(
    "reports",
    [
        5,
        [7],
        [[]],
        [["n1", 1, 1]],
        [["n1", 1, 1, 1, [["d1", "ok"]]]],
        [["n1", 1, 1, 1, [["d1", "ok", [[1]]]]]],
    ],
    ids=["not a list", "row not a list", "empty row", "short row", "short reading", "short value pair"],
)
def test_restore_of_damaged_reports_raises_value_error(reports: Any) -> None:
    raw = {**to_snapshot(reported()), "reports": reports}
    with pytest.raises(ValueError):
        restore(msgpack.packb(raw))


# --- replicas agree on logs with reports ----------------------------------------------------

NODES = ["n1", "n2", "n3", "n9"]
IDS = ["d1", "d2", "d3", "d4", "ghost"]
#: Each node mostly reports its own devices (as declared by the boot entries below).
OWN = {"n1": ["d1", "d2"], "n2": ["d3"], "n3": ["d4"], "n9": ["d4"]}
report_rids = st.text("abcdefgh", min_size=2, max_size=4).map(lambda s: f"rep-{s}")
values = st.dictionaries(
    st.sampled_from(["p_kw", "soc_pct", "f_hz", "u_v"]),
    st.one_of(st.integers(-100, 100), st.floats(-1e3, 1e3, allow_nan=False)),
    max_size=3,
)


def _readings(ids: list[str]) -> st.SearchStrategy[list[dict[str, Any]]]:
    one = st.builds(
        lambda i, s, vals: {"id": i, "state": s, "values": vals},
        st.sampled_from(ids),
        st.sampled_from(sorted(DEVICE_STATES)),
        values,
    )
    return st.lists(one, max_size=3, unique_by=lambda r: r["id"])


@st.composite
def report_maps(draw: st.DrawFn) -> dict[str, Any]:
    node = draw(st.sampled_from(NODES))
    devices = draw(weighted((4, _readings(OWN[node])), (1, _readings(IDS))))
    rid, seq = draw(report_rids), draw(st.integers(0, 5))
    return {
        "type": "report",
        "v": SCHEMA_VERSION,
        "rid": rid,
        "node_id": node,
        "seq": seq,
        "devices": devices,
    }


bad_report_maps = st.builds(
    lambda m, k, v: {**m, k: v},
    report_maps(),
    st.sampled_from(["seq", "devices", "node_id", "extra"]),
    st.sampled_from([-1, True, None, "x", [{"id": "d1", "state": "bad", "values": {}}], math.nan]),
)
ops = weighted(
    (4, report_maps().map(msgpack.packb)),
    (1, bad_report_maps.map(msgpack.packb)),
    (3, valid_maps.map(msgpack.packb)),
    (2, st.integers(0, 1000)),  # a retry: the exact bytes of an earlier entry
)


@st.composite
def report_logs(draw: st.DrawFn) -> list[tuple[bytes, int, int]]:
    datas = [
        declare("n1", dev("d1"), dev("d2", "pv", 0, 5), rid="boot-1"),
        declare("n2", dev("d3"), rid="boot-2"),
        declare("n3", dev("d4"), rid="boot-3"),
    ]
    for op in draw(st.lists(ops, max_size=30)):
        datas.append(datas[op % len(datas)] if isinstance(op, int) else op)
    entries, term, index = [], 1, 0
    for data in datas:
        term += draw(st.sampled_from([0, 0, 0, 1]))
        index += draw(st.sampled_from([1, 1, 2]))
        entries.append((data, term, index))
    return entries


def replay(state: ZoneState, entries: list[tuple[bytes, int, int]]) -> tuple[ZoneState, list[Any]]:
    results = []
    for data, term, index in entries:
        state, res = apply(state, data, term, index)
        results.append(res)
    return state, results


@PROPS
@given(report_logs(), st.integers(0, 1000))
def test_replicas_applying_a_log_with_reports_agree(
    entries: list[tuple[bytes, int, int]], cut_at: int
) -> None:
    cut = cut_at % (len(entries) + 1)
    a, results_a = replay(ZoneState(), entries)
    b, results_b = replay(ZoneState(), entries)
    c, results_c = replay(ZoneState(), entries[:cut])
    c = restore(snapshot(c))
    c, more = replay(c, entries[cut:])
    assert a == b == c
    assert state_hash(a) == state_hash(b) == state_hash(c)
    assert results_a == results_b == [*results_c, *more]


@PROPS
@given(report_logs())
def test_report_invariants_hold_after_every_entry(entries: list[tuple[bytes, int, int]]) -> None:
    state = ZoneState()
    for data, term, index in entries:
        before = state
        state, res = apply(state, data, term, index)
        for node, rep in state.reports.items():
            assert rep.node_id == node and node in state.members
            ids = [r.device_id for r in rep.readings]
            assert ids == sorted(set(ids))
            assert all(r.state in DEVICE_STATES for r in rep.readings)
            assert all(math.isfinite(v) and type(v) is float for r in rep.readings for _, v in r.values)
            assert rep.index <= index and rep.term <= term
            old = before.reports.get(node)
            if old is not None and rep is not old:
                # a node's report only moves forward, or is pruned when the node re-declares
                pruned = rep.seq == old.seq and set(rep.readings) < set(old.readings)
                assert rep.seq > old.seq or pruned
                if not pruned:
                    assert (rep.term, rep.index) == (term, index)
            assert all(state.devices[r.device_id].owner == node for r in rep.readings)
        changed = {n for n in state.reports if before.reports.get(n) is not state.reports[n]}
        if changed:
            cmd = decode(data)
            assert res.ok and not res.duplicate
            assert isinstance(cmd, Command) and cmd.type in ("report", "declare_node")
            assert changed == {cmd.fields["node_id"]}  # a report, or a re-declare pruning its own


def test_redeclaring_a_node_prunes_readings_of_devices_it_no_longer_has() -> None:
    from meshems.core.commands import encode

    state, _ = run(ZoneState(), [declare("n1", dev("d1"), dev("d2"), rid="decl")])
    rep = encode("report", "rep-1", node_id="n1", seq=1, devices=[
        {"id": "d1", "state": "ok", "values": {"power_kw": 1.0}},
        {"id": "d2", "state": "ok", "values": {"power_kw": 2.0}},
    ])  # fmt: skip
    state, res = run(state, [rep])
    assert res[0].ok
    state, res = run(state, [declare("n1", dev("d1"), rid="decl-2"), declare("n2", dev("d2"), rid="decl-n2")])
    assert all(r.ok for r in res)
    assert [r.device_id for r in state.reports["n1"].readings] == ["d1"]


# The forecast reserve is a field of its own (it used to travel as a fake meter value).
@pytest.mark.parametrize(("reserve", "ok"), [(0.0, True), (12.5, True), (1e6, True), (-0.1, False),
                                              (math.nan, False), (1e6 + 1, False), ("5", False)])  # fmt: skip
def test_a_report_may_carry_the_nodes_forecast_reserve(reserve: object, ok: bool) -> None:
    cmd = decode(encode("report", "r-res", node_id="n1", seq=0, devices=[], reserve_kwh=reserve))
    assert isinstance(cmd, Command) is ok
    if ok:
        state, res = at(
            zone(), encode("report", "r-res", node_id="n1", seq=0, devices=[], reserve_kwh=reserve)
        )
        assert res.ok and state.reports["n1"].reserve_kwh == reserve
        assert restore(snapshot(state)).reports["n1"].reserve_kwh == reserve
    else:
        assert "reserve_kwh" in cmd.message  # type: ignore[union-attr]
