"""Unit tests for `meshems.core.commands`: the msgpack wire form of replicated commands.

Every replica runs `decode` on the same bytes, so the tests pin down three things:
valid commands round-trip to normalised fields, every kind of bad input is refused with a
stable code (never an exception), and `peek_rid` reads the request id exactly when
`decode` would (that is what the dedup window of rejected commands relies on).
"""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshems.core.commands import (
    DEVICE_KINDS,
    INTERNAL_TYPES,
    MAX_BYTES_BY_TYPE,
    MAX_COMMAND_BYTES,
    MAX_ID_LEN,
    MAX_RID_LEN,
    OPERATOR_TYPES,
    ROLE_OF_TYPE,
    SCHEMA_VERSION,
    SCHEMAS,
    Command,
    Rejection,
    decode,
    encode,
    peek_rid,
)

CODES = {"E_CMD_MALFORMED", "E_CMD_VERSION", "E_CMD_UNKNOWN_TYPE"}
BAT = {"id": "bat-1", "kind": "battery", "min_kw": -50.0, "max_kw": 50.0}


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj)


def raw_cmd(type_: str = "barrier", rid: str = "r1", **fields: Any) -> dict[str, Any]:
    """The plain map behind a command, for tests that damage one field."""
    return {"type": type_, "v": SCHEMA_VERSION, "rid": rid, **fields}


def declare(**over: Any) -> dict[str, Any]:
    fields = {"node_id": "n1", "raft": "10.0.0.1:4321", "api": "10.0.0.1:8080", "devices": [BAT]}
    return raw_cmd("declare_node", "rid-decl", **{**fields, **over})


def setpoint(**over: Any) -> dict[str, Any]:
    fields = {"device_id": "bat-1", "kw": 12.5, "source": "operator"}
    return raw_cmd("set_setpoint", "rid-sp", **{**fields, **over})


def rejected(data: Any) -> Rejection:
    out = decode(data)
    assert isinstance(out, Rejection), out
    return out


# --- valid commands ----------------------------------------------------------------------


def test_encode_builds_an_envelope_map_with_the_schema_version() -> None:
    data = encode("set_setpoint", "r-7", device_id="d", kw=1.5, source="ems")
    assert msgpack.unpackb(data) == {
        "type": "set_setpoint",
        "v": SCHEMA_VERSION,
        "rid": "r-7",
        "device_id": "d",
        "kw": 1.5,
        "source": "ems",
    }


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (encode("barrier", "b1"), Command("barrier", "b1", {})),
        (encode("remove_node", "x", node_id="n2"), Command("remove_node", "x", {"node_id": "n2"})),
        (
            encode("set_setpoint", "s", device_id="d", kw=-3, source="ems"),
            Command("set_setpoint", "s", {"device_id": "d", "kw": -3.0, "source": "ems"}),
        ),
        (
            encode("declare_node", "d", node_id="n1", raft="h:1", api="h:2", devices=[]),
            Command("declare_node", "d", {"node_id": "n1", "raft": "h:1", "api": "h:2", "devices": []}),
        ),
        (
            pack(declare()),
            Command(
                "declare_node",
                "rid-decl",
                {"node_id": "n1", "raft": "10.0.0.1:4321", "api": "10.0.0.1:8080", "devices": [BAT]},
            ),
        ),
    ],
    ids=["barrier", "remove_node", "set_setpoint", "declare_node-empty", "declare_node"],
)
def test_decode_valid_commands(data: bytes, expected: Command) -> None:
    assert decode(data) == expected


def test_decode_accepts_bytearray() -> None:
    assert decode(bytearray(encode("barrier", "b"))) == Command("barrier", "b", {})


def test_numbers_are_normalised_to_float() -> None:
    cmd = decode(pack(declare(devices=[{"id": "p", "kind": "pv", "min_kw": 0, "max_kw": 7}])))
    assert isinstance(cmd, Command)
    dev = cmd.fields["devices"][0]
    assert (dev["min_kw"], dev["max_kw"]) == (0.0, 7.0)
    assert type(dev["min_kw"]) is float and type(dev["max_kw"]) is float
    sp = decode(pack(setpoint(kw=3)))
    assert isinstance(sp, Command) and type(sp.fields["kw"]) is float


@pytest.mark.parametrize("kind", sorted(DEVICE_KINDS))
def test_every_device_kind_is_accepted(kind: str) -> None:
    cmd = decode(pack(declare(devices=[{**BAT, "kind": kind}])))
    assert isinstance(cmd, Command)
    assert cmd.fields["devices"][0]["kind"] == kind


def test_equal_limits_are_a_valid_range() -> None:
    assert isinstance(decode(pack(declare(devices=[{**BAT, "min_kw": 5, "max_kw": 5}]))), Command)


def test_a_node_may_declare_one_thousand_devices() -> None:
    devices = [{"id": f"d{i}", "kind": "meter", "min_kw": 0, "max_kw": 0} for i in range(1000)]
    data = pack(declare(devices=devices))
    assert len(data) <= MAX_COMMAND_BYTES
    cmd = decode(data)
    assert isinstance(cmd, Command)
    assert len(cmd.fields["devices"]) == 1000


@pytest.mark.parametrize(
    ("field", "limit"),
    [("rid", MAX_RID_LEN), ("node_id", MAX_ID_LEN), ("raft", 255), ("api", 255)],
)
def test_string_length_limits_are_inclusive(field: str, limit: int) -> None:
    assert isinstance(decode(pack({**declare(), field: "x" * limit})), Command)
    assert rejected(pack({**declare(), field: "x" * (limit + 1)})).code == "E_CMD_MALFORMED"


def test_command_and_rejection_are_frozen() -> None:
    cmd = decode(encode("barrier", "b"))
    rej = rejected(b"\xc1")
    with pytest.raises(AttributeError):
        cmd.rid = "other"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        rej.code = "OK"  # type: ignore[misc]


# --- bad commands ------------------------------------------------------------------------

BAD: list[tuple[str, Any, str]] = [
    # not a msgpack map at all
    ("not bytes (str)", "barrier", "E_CMD_MALFORMED"),
    ("not bytes (None)", None, "E_CMD_MALFORMED"),
    ("not bytes (memoryview)", memoryview(encode("barrier", "b")), "E_CMD_MALFORMED"),
    ("empty bytes", b"", "E_CMD_MALFORMED"),
    ("reserved byte 0xc1", b"\xc1", "E_CMD_MALFORMED"),
    ("truncated map", encode("barrier", "b")[:-1], "E_CMD_MALFORMED"),
    ("trailing bytes", encode("barrier", "b") + b"\x00", "E_CMD_MALFORMED"),
    ("msgpack int", pack(7), "E_CMD_MALFORMED"),
    ("msgpack list", pack(["barrier", 1, "r"]), "E_CMD_MALFORMED"),
    ("msgpack str", pack("barrier"), "E_CMD_MALFORMED"),
    ("int map key", pack({1: "x", **raw_cmd()}), "E_CMD_MALFORMED"),
    ("too big", pack({**raw_cmd(), "pad": "x" * MAX_COMMAND_BYTES}), "E_CMD_MALFORMED"),
    ("invalid utf-8 in str", b"\x81\xa4type\xa2\xff\xfe", "E_CMD_MALFORMED"),
    # envelope
    ("missing type", {"v": 1, "rid": "r"}, "E_CMD_MALFORMED"),
    ("type not str", raw_cmd(type_=3), "E_CMD_MALFORMED"),  # type: ignore[arg-type]
    ("empty type", raw_cmd(type_=""), "E_CMD_MALFORMED"),
    ("type too long", raw_cmd(type_="x" * 33), "E_CMD_MALFORMED"),
    ("type as bytes", {"type": b"barrier", "v": 1, "rid": "r"}, "E_CMD_MALFORMED"),
    ("missing rid", {"type": "barrier", "v": 1}, "E_CMD_MALFORMED"),
    ("empty rid", raw_cmd(rid=""), "E_CMD_MALFORMED"),
    ("rid not str", raw_cmd(rid=5), "E_CMD_MALFORMED"),  # type: ignore[arg-type]
    ("rid too long", raw_cmd(rid="r" * (MAX_RID_LEN + 1)), "E_CMD_MALFORMED"),
    ("missing v", {"type": "barrier", "rid": "r"}, "E_CMD_MALFORMED"),
    ("v is bool", {**raw_cmd(), "v": True}, "E_CMD_MALFORMED"),
    ("v is str", {**raw_cmd(), "v": "1"}, "E_CMD_MALFORMED"),
    ("v is float", {**raw_cmd(), "v": 1.0}, "E_CMD_MALFORMED"),
    ("v is 0", {**raw_cmd(), "v": 0}, "E_CMD_VERSION"),
    ("v is 2", {**raw_cmd(), "v": 2}, "E_CMD_VERSION"),
    ("v is negative", {**raw_cmd(), "v": -1}, "E_CMD_VERSION"),
    ("v is huge", {**raw_cmd(), "v": 2**64 - 1}, "E_CMD_VERSION"),
    ("unknown type", raw_cmd(type_="reboot"), "E_CMD_UNKNOWN_TYPE"),
    ("type differs in case", raw_cmd(type_="Barrier"), "E_CMD_UNKNOWN_TYPE"),
    ("version checked before type", {**raw_cmd(type_="reboot"), "v": 9}, "E_CMD_VERSION"),
    ("type checked before fields", raw_cmd(type_="reboot", junk=1), "E_CMD_UNKNOWN_TYPE"),
    # fields
    ("barrier with a field", raw_cmd(junk=1), "E_CMD_MALFORMED"),
    ("setpoint extra field", setpoint(ttl=5), "E_CMD_MALFORMED"),
    ("setpoint field of another type", setpoint(node_id="n1"), "E_CMD_MALFORMED"),
    ("setpoint missing kw", {k: v for k, v in setpoint().items() if k != "kw"}, "E_CMD_MALFORMED"),
    ("setpoint missing source", {k: v for k, v in setpoint().items() if k != "source"}, "E_CMD_MALFORMED"),
    ("setpoint missing device", {k: v for k, v in setpoint().items() if k != "device_id"}, "E_CMD_MALFORMED"),
    ("kw NaN", setpoint(kw=math.nan), "E_CMD_MALFORMED"),
    ("kw +inf", setpoint(kw=math.inf), "E_CMD_MALFORMED"),
    ("kw -inf", setpoint(kw=-math.inf), "E_CMD_MALFORMED"),
    ("kw True", setpoint(kw=True), "E_CMD_MALFORMED"),
    ("kw False", setpoint(kw=False), "E_CMD_MALFORMED"),
    ("kw str", setpoint(kw="12.5"), "E_CMD_MALFORMED"),
    ("kw None", setpoint(kw=None), "E_CMD_MALFORMED"),
    ("kw list", setpoint(kw=[1]), "E_CMD_MALFORMED"),
    ("device_id int", setpoint(device_id=1), "E_CMD_MALFORMED"),
    ("device_id empty", setpoint(device_id=""), "E_CMD_MALFORMED"),
    ("device_id too long", setpoint(device_id="d" * (MAX_ID_LEN + 1)), "E_CMD_MALFORMED"),
    ("remove without node", raw_cmd("remove_node"), "E_CMD_MALFORMED"),
    ("remove node_id None", raw_cmd("remove_node", node_id=None), "E_CMD_MALFORMED"),
    ("declare extra field", declare(zone="z"), "E_CMD_MALFORMED"),
    ("declare missing raft", {k: v for k, v in declare().items() if k != "raft"}, "E_CMD_MALFORMED"),
    ("declare raft too long", declare(raft="h" * 256), "E_CMD_MALFORMED"),
    ("devices missing", {k: v for k, v in declare().items() if k != "devices"}, "E_CMD_MALFORMED"),
    ("devices a map", declare(devices={"bat-1": BAT}), "E_CMD_MALFORMED"),
    ("devices too many", declare(devices=[BAT] * 1001), "E_CMD_MALFORMED"),
    ("device not a map", declare(devices=["bat-1"]), "E_CMD_MALFORMED"),
    ("device unknown kind", declare(devices=[{**BAT, "kind": "reactor"}]), "E_CMD_MALFORMED"),
    ("device min above max", declare(devices=[{**BAT, "min_kw": 1, "max_kw": 0}]), "E_CMD_MALFORMED"),
    ("device NaN limit", declare(devices=[{**BAT, "max_kw": math.nan}]), "E_CMD_MALFORMED"),
    ("device inf limit", declare(devices=[{**BAT, "min_kw": -math.inf}]), "E_CMD_MALFORMED"),
    ("device bool limit", declare(devices=[{**BAT, "min_kw": False}]), "E_CMD_MALFORMED"),
    ("device extra field", declare(devices=[{**BAT, "capacity_kwh": 100}]), "E_CMD_MALFORMED"),
    ("device missing kind", declare(devices=[{"id": "x", "min_kw": 0, "max_kw": 1}]), "E_CMD_MALFORMED"),
    ("device id too long", declare(devices=[{**BAT, "id": "d" * 64}]), "E_CMD_MALFORMED"),
    ("duplicate device ids", declare(devices=[BAT, {**BAT, "kind": "pv"}]), "E_CMD_MALFORMED"),
]


@pytest.mark.parametrize(("case", "data", "code"), BAD, ids=[b[0] for b in BAD])
def test_bad_commands_are_rejected_with_a_stable_code(case: str, data: Any, code: str) -> None:
    if isinstance(data, dict):
        data = pack(data)
    first = rejected(data)
    assert first.code == code
    assert first.message
    # Deterministic: the same bytes give the same answer every time.
    assert decode(data) == first


def test_rejection_messages_name_the_problem() -> None:
    assert "'reboot'" in rejected(pack(raw_cmd(type_="reboot"))).message
    assert "schema version 2" in rejected(pack({**raw_cmd(), "v": 2})).message
    assert "['aaa', 'zzz']" in rejected(pack(raw_cmd(zzz=1, aaa=2))).message
    assert "'kw'" in rejected(pack(setpoint(kw=math.nan))).message
    assert "not msgpack" in rejected(b"\xc1").message
    assert str(MAX_COMMAND_BYTES) in rejected("text").message


def test_the_byte_limit_is_inclusive() -> None:
    base = pack(raw_cmd("declare_node", node_id="", raft="h:1", api="h:2", devices=[]))
    # Grow the node id until the whole command is exactly MAX_COMMAND_BYTES long.
    node_id = "n" * (MAX_COMMAND_BYTES - len(base) - 2)  # str16 header adds 2 bytes over fixstr
    data = pack(raw_cmd("declare_node", node_id=node_id, raft="h:1", api="h:2", devices=[]))
    assert len(data) == MAX_COMMAND_BYTES
    # Accepted by the size check, refused later only because the id is too long.
    assert "node_id" in rejected(data).message
    assert f"<= {MAX_COMMAND_BYTES}" in rejected(data + b"x").message


SMALL_TYPES = [
    ("set_setpoint", {"device_id": "b", "kw": 1.0}),
    ("remove_node", {"node_id": "n2"}),
    ("barrier", {}),
]


@pytest.mark.parametrize(("type_", "fields"), SMALL_TYPES)
def test_each_type_has_its_own_size_cap(type_: str, fields: dict[str, Any]) -> None:
    cap = MAX_BYTES_BY_TYPE[type_]
    assert cap < MAX_COMMAND_BYTES

    def padded(n: int) -> bytes:
        return pack(raw_cmd(type_, **fields, pad=b"x" * n))

    n = next(n for n in range(cap) if len(padded(n)) >= cap)
    assert len(padded(n)) == cap
    # at the cap the size check passes (the unknown pad field is what refuses it) ...
    assert rejected(padded(n)).code == "E_CMD_MALFORMED"
    # ... one byte more is too large, whatever else is wrong with it
    refusal = rejected(padded(n + 1))
    assert refusal.code == "E_CMD_TOO_LARGE" and f"at most {cap}" in refusal.message


def test_every_type_has_a_size_cap_and_a_role() -> None:
    assert set(MAX_BYTES_BY_TYPE) == set(SCHEMAS)
    assert all(n <= MAX_COMMAND_BYTES for n in MAX_BYTES_BY_TYPE.values())
    assert set(SCHEMAS) == OPERATOR_TYPES | INTERNAL_TYPES and not OPERATOR_TYPES & INTERNAL_TYPES
    assert {
        "set_setpoint",
        "set_policy",
        "barrier",
        "relay_override",
        "token_create",
        "token_revoke",
        "deploy",
        "deploy_abort",
        "deploy_rollback",
    } == OPERATOR_TYPES
    assert set(ROLE_OF_TYPE) == OPERATOR_TYPES and ROLE_OF_TYPE["token_create"] == "admin"


# --- peek_rid ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "rid"),
    [
        (encode("barrier", "r-1"), "r-1"),
        (pack({**raw_cmd(rid="old"), "v": 99}), "old"),  # wrong version, rid still readable
        (pack(raw_cmd(type_="reboot", rid="t")), "t"),
        (pack(setpoint(kw=math.nan)), "rid-sp"),
        (pack({"rid": "only"}), "only"),
        (pack({"rid": "r" * MAX_RID_LEN}), "r" * MAX_RID_LEN),
        (pack({"rid": "r" * (MAX_RID_LEN + 1)}), None),
        (pack({"rid": ""}), None),
        (pack({"rid": 42}), None),
        (pack({"rid": b"bytes"}), None),
        (pack({"type": "barrier"}), None),
        (pack(["rid", "r"]), None),
        (b"", None),
        (b"\xc1", None),
        (encode("barrier", "r")[:-1], None),
    ],
)
def test_peek_rid(data: bytes, rid: str | None) -> None:
    assert peek_rid(data) == rid


# --- properties --------------------------------------------------------------------------

ids = st.text(st.sampled_from("abcdefghij0123456789-_."), min_size=1, max_size=MAX_ID_LEN)
finite = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(min_value=-(2**53), max_value=2**53),
)


@st.composite
def device_maps(draw: st.DrawFn) -> dict[str, Any]:
    lo, hi = sorted([draw(finite), draw(finite)])
    return {"id": draw(ids), "kind": draw(st.sampled_from(sorted(DEVICE_KINDS))), "min_kw": lo, "max_kw": hi}


valid_raw = st.one_of(
    st.builds(lambda rid: raw_cmd("barrier", rid), ids),
    st.builds(lambda rid, n: raw_cmd("remove_node", rid, node_id=n), ids, ids),
    st.builds(
        lambda rid, d, kw, s: raw_cmd("set_setpoint", rid, device_id=d, kw=kw, source=s),
        ids,
        ids,
        finite,
        ids,
    ),
    st.builds(
        lambda rid, n, devs: raw_cmd(
            "declare_node", rid, node_id=n, raft=n + ":1", api=n + ":2", devices=devs
        ),
        ids,
        ids,
        st.lists(device_maps(), max_size=5, unique_by=lambda d: d["id"]),
    ),
)

msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["type", "v", "rid", "kw", "devices", "x"]) | st.text(max_size=4), inner
        )
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(valid_raw)
def test_valid_commands_round_trip(raw: dict[str, Any]) -> None:
    cmd = decode(pack(raw))
    assert isinstance(cmd, Command)
    assert (cmd.type, cmd.rid) == (raw["type"], raw["rid"])
    envelope = {"type", "v", "rid"}
    assert set(cmd.fields) == set(raw) - envelope
    for key, value in cmd.fields.items():
        if key == "kw":
            assert value == float(raw[key]) and type(value) is float
        elif key == "devices":
            assert value == [
                {**d, "min_kw": float(d["min_kw"]), "max_kw": float(d["max_kw"])} for d in raw[key]
            ]
        else:
            assert value == raw[key]
    assert peek_rid(pack(raw)) == raw["rid"]


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=64))
def test_decode_never_raises_on_random_bytes(data: bytes) -> None:
    out = decode(data)
    assert isinstance(out, Command | Rejection)
    if isinstance(out, Rejection):
        assert out.code in CODES
    assert decode(data) == out


@settings(max_examples=200, deadline=None)
@given(msgpack_values)
def test_decode_never_raises_on_random_msgpack(value: Any) -> None:
    data = pack(value)
    out = decode(data)
    assert isinstance(out, Command | Rejection)
    if isinstance(out, Rejection):
        assert out.code in CODES
    else:
        # Whatever decodes has a readable rid, the same one `peek_rid` sees.
        assert peek_rid(data) == out.rid


@settings(max_examples=150, deadline=None)
@given(valid_raw, st.sampled_from(["rid", "type", "v"]), msgpack_values)
def test_damaging_an_envelope_field_never_yields_a_different_command(
    raw: dict[str, Any], key: str, value: Any
) -> None:
    damaged = {**raw, key: value}
    out = decode(pack(damaged))
    if isinstance(out, Command):
        # Only a replacement that is itself valid for that field may pass.
        assert damaged[key] == {"rid": out.rid, "type": out.type, "v": SCHEMA_VERSION}[key]
        assert type(damaged["v"]) is int
    else:
        assert out.code in CODES


@settings(max_examples=150, deadline=None)
@given(valid_raw, st.text(min_size=1, max_size=8), msgpack_values)
def test_any_unknown_field_is_refused(raw: dict[str, Any], key: str, value: Any) -> None:
    allowed = SCHEMAS[raw["type"]][1] | {"type", "v", "rid"}
    if key in allowed:
        return
    out = decode(pack({**raw, key: value}))
    assert isinstance(out, Rejection)
    assert out.code == "E_CMD_MALFORMED"
    assert "unknown fields" in out.message
