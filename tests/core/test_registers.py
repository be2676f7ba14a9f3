"""Unit tests for `meshems.core.registers`: the Modbus register codec and the profile schema.

Known word values pin the codec to the wire (int32 -2 big-endian is FFFF FFFE, float32 1.5
is 3FC0 0000); hypothesis checks that every encodable value survives decode(encode(v)) and
every finite decoded value re-encodes to the same words; read-block planning covers every
point exactly once; and every profile error names the file and the exact key.
"""

from __future__ import annotations

import copy
import itertools
import math
import pickle
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

import meshems.profiles
from meshems.core.errors import ConfigError
from meshems.core.registers import (
    ROLES,
    WORDS,
    Block,
    CodecError,
    Point,
    Profile,
    decode,
    decode_block,
    encode,
    parse_profile,
)

TYPES = ["int16", "uint16", "int32", "uint32", "float32"]
RAW = {
    "int16": (-0x7FFF, 0x7FFF),
    "uint16": (0, 0xFFFE),
    "int32": (-(2**31) + 1, 2**31 - 1),
    "uint32": (0, 2**32 - 2),
}
PROFILE_DIR = Path(meshems.profiles.__file__).parent


def pt(reg_type: str, order: str = "big", scale: float = 1.0, **kw: Any) -> Point:
    return Point("P", 100, reg_type, order, scale, **kw)  # type: ignore[arg-type]


# --- codec: known words -------------------------------------------------------------------

KNOWN: list[tuple[str, str, float, float, list[int]]] = [
    # (type, word order, scale, engineering value, words on the wire)
    ("int16", "big", 1, -2, [0xFFFE]),
    ("int16", "big", 1, 32767, [0x7FFF]),
    ("int16", "big", 1, -32767, [0x8001]),
    ("int16", "little", 1, -2, [0xFFFE]),  # one word: word order does not apply
    ("int16", "big", 0.1, -0.5, [0xFFFB]),
    ("uint16", "big", 1, 65534, [0xFFFE]),
    ("uint16", "big", 0.01, 55.5, [5550]),
    ("int32", "big", 1, -2, [0xFFFF, 0xFFFE]),
    ("int32", "little", 1, -2, [0xFFFE, 0xFFFF]),
    ("int32", "big", 1, 0x12345678, [0x1234, 0x5678]),
    ("int32", "little", 1, 0x12345678, [0x5678, 0x1234]),
    ("int32", "big", 0.001, 12.345, [0x0000, 12345]),
    ("int32", "big", 0.001, -12.345, [0xFFFF, 0xCFC7]),
    ("int32", "big", 0.001, 100.0, [0x0001, 0x86A0]),
    ("uint32", "big", 1, 65536, [0x0001, 0x0000]),
    ("uint32", "little", 1, 65536, [0x0000, 0x0001]),
    ("uint32", "big", 1, 2**32 - 2, [0xFFFF, 0xFFFE]),
    ("uint32", "big", 0.001, 4.5, [0x0000, 4500]),
    ("float32", "big", 1, 1.5, [0x3FC0, 0x0000]),
    ("float32", "little", 1, 1.5, [0x0000, 0x3FC0]),
    ("float32", "big", 1, -2.0, [0xC000, 0x0000]),
    ("float32", "big", 0.001, 1.5, [0x44BB, 0x8000]),  # raw 1500.0
    ("int32", "big", -1, 5, [0xFFFF, 0xFFFB]),  # a negative scale flips the sign convention
]


@pytest.mark.parametrize(("reg_type", "order", "scale", "value", "words"), KNOWN)
def test_known_words(reg_type: str, order: str, scale: float, value: float, words: list[int]) -> None:
    p = pt(reg_type, order, scale, access="rw")
    assert encode(p, value) == words
    assert decode(p, words) == pytest.approx(value, abs=abs(scale) / 1000)


@pytest.mark.parametrize(
    ("reg_type", "order", "words"),
    [
        ("int16", "big", [0x8000]),
        ("uint16", "big", [0xFFFF]),
        ("int32", "big", [0x8000, 0x0000]),
        ("int32", "little", [0x0000, 0x8000]),
        ("uint32", "big", [0xFFFF, 0xFFFF]),
        ("float32", "big", [0x7FC0, 0x0000]),  # a float32 NaN passes through
        ("float32", "little", [0x0000, 0x7FC0]),
    ],
)
@pytest.mark.parametrize("scale", [1, 0.001])
def test_not_implemented_markers_decode_to_nan(
    reg_type: str, order: str, words: list[int], scale: float
) -> None:
    assert math.isnan(decode(pt(reg_type, order, scale), words))


def test_near_markers_are_ordinary_values() -> None:
    assert decode(pt("int32"), [0x8000, 0x0001]) == -(2**31) + 1
    assert decode(pt("int32", "little"), [0x8000, 0x0000]) == 0x8000
    assert decode(pt("uint32"), [0xFFFF, 0xFFFE]) == 2**32 - 2
    assert decode(pt("float32"), [0x7F80, 0x0000]) == math.inf


def test_point_properties() -> None:
    p = Point("W", 40070, "int32")
    assert (p.count, p.end, p.writable, p.word_order, p.scale, p.access) == (2, 40072, False, "big", 1.0, "r")
    assert Point("S", 7, "uint16", access="rw").writable
    assert [WORDS[t] for t in TYPES] == [1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="scale"):
        Point("X", 0, "int16", scale=0)
    with pytest.raises(ValueError, match="do not fit"):
        Point("X", 65535, "int32")


# --- codec: errors ------------------------------------------------------------------------

ENCODE_ERRORS: list[tuple[str, Point, float, str]] = [
    ("int16 raw 40000", pt("int16", access="rw"), 40000, "outside int16 (-32767..32767)"),
    ("int16 marker", pt("int16", access="rw"), -32768, "outside int16"),
    ("int16 over by scale", pt("int16", scale=0.001, access="rw"), 40, "raw 40000"),
    ("uint16 negative", pt("uint16", access="rw"), -1, "outside uint16 (0..65534)"),
    ("uint16 marker", pt("uint16", access="rw"), 65535, "outside uint16"),
    ("int32 too big", pt("int32", access="rw"), 2**31, "outside int32"),
    ("uint32 negative", pt("uint32", scale=0.001, access="rw"), -0.001, "outside uint32"),
    ("float32 too big", pt("float32", access="rw"), 1e39, "too large for float32"),
    ("float32 too big by scale", pt("float32", scale=1e-10, access="rw"), 1e30, "too large for float32"),
    ("above max", pt("int32", scale=0.001, unit="kW", access="rw", max=1000), 1000.5, "above its max 1000"),
    ("below min", pt("int32", scale=0.001, unit="kW", access="rw", min=-1000), -1001, "below its min -1000"),
    ("nan", pt("float32", access="rw"), math.nan, "not a finite number"),
    ("inf", pt("int32", access="rw"), math.inf, "not a finite number"),
    ("minus inf", pt("int16", access="rw"), -math.inf, "not a finite number"),
    ("read-only", pt("int32"), 1, "read-only"),
    ("huge int", pt("int32", access="rw"), 10**400, "not a number it can hold"),
]


@pytest.mark.parametrize(("case", "point", "value", "text"), ENCODE_ERRORS, ids=[c[0] for c in ENCODE_ERRORS])
def test_encode_errors_name_the_point(case: str, point: Point, value: float, text: str) -> None:
    with pytest.raises(CodecError) as info:
        encode(point, value)
    assert "'P' at 100" in str(info.value)
    assert text in str(info.value)
    assert isinstance(info.value, ValueError)


def test_check_access_false_writes_read_only_points_but_keeps_the_limits() -> None:
    p = pt("int32", scale=0.001, max=10)
    assert encode(p, 7.5, check_access=False) == [0, 7500]
    with pytest.raises(CodecError, match="above its max"):
        encode(p, 11, check_access=False)


@pytest.mark.parametrize(
    ("point", "words", "text"),
    [
        (pt("int32"), [1], "needs 2 word(s), got 1"),
        (pt("int16"), [1, 2], "needs 1 word(s), got 2"),
        (pt("float32"), [], "got 0"),
        (pt("uint16"), [70000], "not a 16-bit register value"),
        (pt("int32"), [0, -1], "not a 16-bit register value"),
    ],
)
def test_decode_errors_name_the_point(point: Point, words: list[int], text: str) -> None:
    with pytest.raises(CodecError, match="'P' at 100") as info:
        decode(point, words)
    assert text in str(info.value)


# --- codec: properties --------------------------------------------------------------------

SCALES = [1, 0.1, 0.01, 0.001, 10, -1, 0.5]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(TYPES), st.sampled_from(["big", "little"]), st.sampled_from(SCALES), st.data())
def test_round_trip(reg_type: str, order: str, scale: float, data: st.DataObject) -> None:
    """decode(encode(v)) == v within scale/2 (float32: within float32 precision)."""
    p = pt(reg_type, order, scale, access="rw")
    if reg_type == "float32":
        value = data.draw(st.floats(-1e30, 1e30, allow_nan=False, allow_infinity=False))
        words = encode(p, value)
        assert math.isclose(decode(p, words), value, rel_tol=2**-23, abs_tol=1e-40 * abs(scale))
    else:
        lo, hi = sorted((RAW[reg_type][0] * scale, RAW[reg_type][1] * scale))
        value = data.draw(st.floats(lo, hi))
        words = encode(p, value)
        assert abs(decode(p, words) - value) <= abs(scale) / 2 * (1 + 1e-9)
        raw = data.draw(st.integers(*RAW[reg_type]))
        assert decode(p, encode(p, raw * scale)) == raw * scale  # on-grid values come back exactly
    assert len(words) == WORDS[reg_type]
    assert all(0 <= w <= 0xFFFF for w in words)


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(TYPES),
    st.sampled_from(["big", "little"]),
    st.sampled_from(SCALES),
    st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2),
)
def test_every_finite_reading_re_encodes_to_its_words(
    reg_type: str, order: str, scale: float, words: list[int]
) -> None:
    p = pt(reg_type, order, scale)
    words = words[: p.count]
    value = decode(p, words)
    if math.isfinite(value):
        assert encode(p, value, check_access=False) == words
    else:
        with pytest.raises(CodecError, match="not a finite number"):
            encode(p, value, check_access=False)


# --- read blocks --------------------------------------------------------------------------


def profile_of(*points: tuple[str, int, str]) -> Profile:
    pts = tuple(Point(name, address, reg_type) for name, address, reg_type in points)  # type: ignore[arg-type]
    return Profile("t", "meter", "test", "", pts, {})


BLOCKS: list[tuple[str, list[tuple[str, int, str]], dict[str, int], list[tuple[int, int, list[str]]]]] = [
    # (case, points, read_blocks kwargs, expected blocks as (start, count, point names))
    ("contiguous", [("A", 0, "int16"), ("B", 1, "int32"), ("C", 3, "uint16")], {}, [(0, 4, ["A", "B", "C"])]),
    (
        "sorted by address",
        [("C", 3, "uint16"), ("A", 0, "int16"), ("B", 1, "int32")],
        {},
        [(0, 4, ["A", "B", "C"])],
    ),
    ("gap of 8 merges", [("A", 0, "int16"), ("B", 9, "int16")], {}, [(0, 10, ["A", "B"])]),
    ("gap of 9 splits", [("A", 0, "int16"), ("B", 10, "int16")], {}, [(0, 1, ["A"]), (10, 1, ["B"])]),
    (
        "max_gap 0",
        [("A", 0, "int16"), ("B", 1, "int16"), ("C", 3, "int16")],
        {"max_gap": 0},
        [(0, 2, ["A", "B"]), (3, 1, ["C"])],
    ),
    (
        "max_count keeps a point whole",
        [("A", 0, "int16"), ("B", 1, "int32"), ("C", 3, "int32")],
        {"max_count": 4},
        [(0, 3, ["A", "B"]), (3, 2, ["C"])],
    ),
    (
        "far apart",
        [("A", 40070, "int32"), ("B", 40100, "uint32")],
        {},
        [(40070, 2, ["A"]), (40100, 2, ["B"])],
    ),
    ("last register", [("A", 65534, "int16"), ("B", 65535, "uint16")], {}, [(65534, 2, ["A", "B"])]),
]


@pytest.mark.parametrize(("case", "points", "kwargs", "expected"), BLOCKS, ids=[c[0] for c in BLOCKS])
def test_read_blocks(
    case: str,
    points: list[tuple[str, int, str]],
    kwargs: dict[str, int],
    expected: list[tuple[int, int, list[str]]],
) -> None:
    blocks = profile_of(*points).read_blocks(**kwargs)
    assert [(b.start, b.count, [p.name for p in b.points]) for b in blocks] == expected


def test_read_blocks_split_at_the_modbus_limit() -> None:
    profile = profile_of(*[(f"P{i}", 2 * i, "int32") for i in range(63)])  # 126 registers
    blocks = profile.read_blocks()
    assert [(b.start, b.count, len(b.points)) for b in blocks] == [(0, 124, 62), (124, 2, 1)]
    assert profile.read_blocks(max_count=126)[0].count == 126


def test_read_blocks_can_be_restricted_to_named_points() -> None:
    profile = profile_of(("A", 0, "int16"), ("B", 1, "int16"), ("C", 2, "int16"))
    assert [(b.start, b.count) for b in profile.read_blocks(names={"A", "C"})] == [(0, 3)]
    assert [(b.start, b.count) for b in profile.read_blocks(names=["C"])] == [(2, 1)]
    with pytest.raises(KeyError, match="no point"):
        profile.read_blocks(names=["D"])
    with pytest.raises(ValueError, match="max_count"):
        profile.read_blocks(max_count=1)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(0, 300), st.sampled_from(TYPES)), min_size=1, max_size=40),
    st.integers(0, 12),
    st.integers(2, 130),
)
def test_read_blocks_cover_every_point_once(
    raw_points: list[tuple[int, str]], max_gap: int, max_count: int
) -> None:
    points, used = [], set()
    for i, (address, reg_type) in enumerate(raw_points):
        regs = set(range(address, address + WORDS[reg_type]))
        if not regs & used:  # keep the points disjoint, as parse_profile does
            used |= regs
            points.append((f"P{i}", address, reg_type))
    profile = profile_of(*points)
    blocks = profile.read_blocks(max_gap, max_count)
    assert blocks == profile.read_blocks(max_gap, max_count)  # deterministic
    names = [p.name for b in blocks for p in b.points]
    assert sorted(names) == sorted(p[0] for p in points)
    for b in blocks:
        assert b.count <= max_count
        assert b.start == b.points[0].address and b.end == max(p.end for p in b.points)
        assert all(b.start <= p.address and p.end <= b.end for p in b.points)
    for before, after in itertools.pairwise(blocks):
        gap = after.start - before.end
        assert gap >= 0
        # Split only where the gap is too wide or merging would exceed max_count.
        assert gap > max_gap or after.points[0].end - before.start > max_count


def test_decode_block() -> None:
    profile = profile_of(("W", 10, "int32"), ("Hz", 12, "uint16"), ("X", 15, "int16"))
    (block,) = profile.read_blocks()
    assert block == Block(10, 6, profile.points)
    values = decode_block(block, [0xFFFF, 0xFFFE, 5000, 0, 0, 0x8000])
    assert values["W"] == -2 and values["Hz"] == 5000 and math.isnan(values["X"])
    with pytest.raises(CodecError, match="block at 10: expected 6 words, got 5"):
        decode_block(block, [0] * 5)


# --- profiles -----------------------------------------------------------------------------


def base() -> dict[str, Any]:
    """A small valid battery profile."""
    return {
        "name": "test-battery",
        "kind": "battery",
        "description": "a battery for tests",
        "sunspec": "names from SunSpec 701/704/713",
        "points": [
            {"name": "W", "address": 40010, "type": "int32", "scale": 0.001, "unit": "kW"},
            {
                "name": "WSet",
                "address": 40012,
                "type": "int32",
                "scale": 0.001,
                "unit": "kW",
                "access": "rw",
                "min": -10,
                "max": 10,
            },
            {"name": "SoC", "address": 40014, "type": "uint16", "scale": 0.01, "unit": "pct"},
            {"name": "RvrtTms", "address": 40020, "type": "uint32", "unit": "s", "access": "rw"},
        ],
        "roles": {"power_kw": "W", "setpoint_kw": "WSet", "soc_pct": "SoC", "revert_timeout_s": "RvrtTms"},
    }


def mutated(change: Any) -> dict[str, Any]:
    data = copy.deepcopy(base())
    change(data)
    return data


def test_a_valid_profile() -> None:
    profile = parse_profile(base(), "b.yaml")
    assert (profile.name, profile.kind, profile.sunspec) == (
        "test-battery",
        "battery",
        "names from SunSpec 701/704/713",
    )
    assert [p.name for p in profile.points] == ["W", "WSet", "SoC", "RvrtTms"]
    wset = profile.point("WSet")
    assert (wset.address, wset.type, wset.scale, wset.access, wset.min, wset.max) == (
        40012,
        "int32",
        0.001,
        "rw",
        -10,
        10,
    )
    assert profile.role("setpoint_kw") == wset
    assert profile.role("capacity_kwh") is None  # a battery role this profile does not map
    assert profile.role("voltage_v") is None  # a role of another kind
    assert profile.register_count() == 7
    assert [(b.start, b.count) for b in profile.read_blocks()] == [(40010, 12)]  # gap of 5 merges
    assert [(b.start, b.count) for b in profile.read_blocks(max_gap=4)] == [(40010, 5), (40020, 2)]


def test_profile_lookups_name_what_is_known() -> None:
    profile = parse_profile(base(), "b.yaml")
    with pytest.raises(
        KeyError, match=r"no point 'Wset' in profile 'test-battery' \(known: W, WSet, SoC, RvrtTms\)"
    ):
        profile.point("Wset")
    with pytest.raises(KeyError, match="'setpoint' is not a role"):
        profile.role("setpoint")


def test_profiles_are_frozen() -> None:
    profile = parse_profile(base(), "b.yaml")
    with pytest.raises(AttributeError):
        profile.name = "x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        profile.roles["power_kw"] = "SoC"  # type: ignore[index]
    with pytest.raises(AttributeError):
        profile.points[0].scale = 1  # type: ignore[misc]
    assert profile == parse_profile(base(), "b.yaml")
    assert pickle.loads(pickle.dumps(profile)) == copy.deepcopy(profile) == profile
    assert dict(profile.roles) == base()["roles"]


def test_parse_profile_rejects_non_mappings() -> None:
    with pytest.raises(ConfigError) as info:
        parse_profile(["W"], "x.yaml")
    assert info.value.message == "x.yaml: the profile must be a YAML mapping"
    assert info.value.exit_code == 2


def relay_role_on(point_change: dict[str, Any]) -> Any:
    def change(d: dict[str, Any]) -> None:
        d["kind"] = "relay"
        d["points"][0].update(point_change)
        d["roles"] = {"relay_1": "W"}

    return change


def pv_limit(**limits: float) -> Any:
    def change(d: dict[str, Any]) -> None:
        d["kind"] = "pv"
        d["points"][2].update(access="rw", **limits)
        d["roles"] = {"power_kw": "W", "limit_pct": "SoC"}

    return change


PROFILE_ERRORS: list[tuple[str, Any, str, str]] = [
    # (case, change to base(), key named in the message, text in the message)
    ("unknown top-level key", lambda d: d.update(colour="red"), "colour", "unknown key (misspelt?)"),
    ("unknown point key", lambda d: d["points"][1].update(scal=1), "points[1].scal", "unknown key"),
    (
        "bad type",
        lambda d: d["points"][3].update(type="int64"),
        "points[3].type",
        "Input should be 'int16', 'uint16'",
    ),
    ("bad kind", lambda d: d.update(kind="inverter"), "kind", "Input should be 'meter', 'battery'"),
    (
        "bad access",
        lambda d: d["points"][1].update(access="w"),
        "points[1].access",
        "Input should be 'r' or 'rw'",
    ),
    (
        "bad word order",
        lambda d: d["points"][0].update(word_order="mid"),
        "points[0].word_order",
        "'big' or 'little'",
    ),
    ("missing type", lambda d: d["points"][0].pop("type"), "points[0].type", "Field required"),
    ("missing description", lambda d: d.pop("description"), "description", "Field required"),
    ("no points", lambda d: d.update(points=[]), "points", "at least 1"),
    ("bad profile name", lambda d: d.update(name="Test Battery"), "name", "pattern"),
    ("bad point name", lambda d: d["points"][0].update(name="W set"), "points[0].name", "pattern"),
    (
        "negative address",
        lambda d: d["points"][0].update(address=-1),
        "points[0].address",
        "greater than or equal",
    ),
    (
        "address too big",
        lambda d: d["points"][0].update(address=70000),
        "points[0].address",
        "less than or equal",
    ),
    (
        "address not a number",
        lambda d: d["points"][0].update(address="x"),
        "points[0].address",
        "valid integer",
    ),
    ("scale not finite", lambda d: d["points"][0].update(scale=math.inf), "points[0].scale", "finite number"),
    ("max not finite", lambda d: d["points"][1].update(max=math.nan), "points[1].max", "finite number"),
    ("roles not a mapping", lambda d: d.update(roles=["W"]), "roles", "valid dictionary"),
    ("role not a name", lambda d: d["roles"].update(power_kw=5), "roles.power_kw", "valid string"),
    (
        "registers past 65535",
        lambda d: d["points"][3].update(address=65535),
        "points[3].address",
        "registers 65535-65536 run past 65535",
    ),
    ("scale zero", lambda d: d["points"][2].update(scale=0), "points[2].scale", "must not be 0"),
    (
        "min above max",
        lambda d: d["points"][1].update(min=5, max=1),
        "points[1].min",
        "min (5.0) is above max (1.0)",
    ),
    (
        "max beyond the type",
        lambda d: d["points"][2].update(max=1000),
        "points[2].max",
        "1000.0 is beyond what uint16 (0..65534) holds at scale 0.01",
    ),
    (
        "min beyond the type",
        lambda d: d["points"][3].update(min=-1),
        "points[3].min",
        "-1.0 is beyond what uint32",
    ),
    (
        "duplicate point name",
        lambda d: d["points"][2].update(name="W"),
        "points[2].name",
        "'W' is already the name of points[0]",
    ),
    (
        "overlap",
        lambda d: d["points"][2].update(address=40011),
        "points[2]",
        "registers 40011-40011 overlap points[0] (W, 40010-40011)",
    ),
    (
        "overlap with a later point at a lower address",
        lambda d: d["points"][3].update(address=40009),
        "points[3]",
        "registers 40009-40010 overlap points[0] (W, 40010-40011)",
    ),
    (
        "unknown role",
        lambda d: d["roles"].update(voltage_v="W"),
        "roles.voltage_v",
        "unknown role for a battery profile (known: power_kw, setpoint_kw",
    ),
    (
        "role names an unknown point",
        lambda d: d["roles"].update(setpoint_kw="Wset"),
        "roles.setpoint_kw",
        "no point named 'Wset' (known: W, WSet, SoC, RvrtTms)",
    ),
    (
        "writable role on a read-only point",
        lambda d: d["roles"].update(setpoint_kw="W"),
        "roles.setpoint_kw",
        "point 'W' is read-only; the setpoint_kw role needs access rw",
    ),
    (
        "missing required role",
        lambda d: d["roles"].pop("soc_pct"),
        "roles.soc_pct",
        "required for a battery profile",
    ),
    (
        "role unit mismatch",
        lambda d: d["points"][0].update(unit="W"),
        "roles.power_kw",
        "point 'W' has unit 'W'; the power_kw role needs unit 'kW'",
    ),
    (
        "unit-less point in a unit role",
        lambda d: d["points"][2].update(unit=""),
        "roles.soc_pct",
        "point 'SoC' has unit ''; the soc_pct role needs unit 'pct'",
    ),
    (
        "setpoint without limits",
        lambda d: [d["points"][1].pop(k) for k in ("min", "max")],
        "roles.setpoint_kw",
        "point 'WSet' needs min and max",
    ),
    ("pv limit above 100", pv_limit(min=0, max=120), "roles.limit_pct", "must lie within 0.0..100.0"),
    ("pv limit without range", pv_limit(), "roles.limit_pct", "needs min and max"),
    (
        "relay role on a scaled 32-bit point",
        relay_role_on({"access": "rw", "unit": ""}),
        "roles.relay_1",
        "a relay role needs a 16-bit integer point with scale 1",
    ),
    (
        "relay role with a unit",
        relay_role_on({"type": "uint16", "scale": 1, "access": "rw"}),
        "roles.relay_1",
        "no unit",
    ),
]


@pytest.mark.parametrize(
    ("case", "change", "key", "text"), PROFILE_ERRORS, ids=[c[0] for c in PROFILE_ERRORS]
)
def test_profile_errors_name_source_and_key(case: str, change: Any, key: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_profile(mutated(change), "x.yaml")
    err = info.value
    assert err.message.startswith(f"x.yaml: {key}: "), err.message
    assert text in err.message, err.message
    assert (err.code, err.exit_code) == ("E_CONFIG", 2)
    assert err.context == {"file": "x.yaml", "key": key}


def test_several_profile_errors_are_reported_one_per_line() -> None:
    def change(d: dict[str, Any]) -> None:
        d["points"][2]["name"] = "W"
        d["points"][3]["scale"] = 0
        d["roles"]["soc_pct"] = "SoCx"

    with pytest.raises(ConfigError) as info:
        parse_profile(mutated(change), "x.yaml")
    lines = info.value.message.splitlines()
    assert [line.split(": ")[1] for line in lines] == ["points[2].name", "points[3].scale", "roles.soc_pct"]
    assert all(line.startswith("x.yaml: ") for line in lines)


def test_role_table() -> None:
    required = {kind: sorted(r for r, s in roles.items() if s.required) for kind, roles in ROLES.items()}
    assert required == {
        "meter": ["power_kw"],
        "battery": ["power_kw", "setpoint_kw", "soc_pct"],
        "pv": ["limit_pct", "power_kw"],
        "relay": ["relay_1"],
    }
    writable = {kind: sorted(r for r, s in roles.items() if s.writable) for kind, roles in ROLES.items()}
    assert writable["battery"] == ["revert_timeout_s", "setpoint_kw"]
    assert writable["pv"] == ["limit_pct", "revert_timeout_s"]
    assert writable["relay"] == [f"relay_{i}" for i in range(1, 9)]
    assert {f"load_{i}_kw" for i in range(1, 9)} <= set(ROLES["relay"])


# --- the built-in profiles ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["meter", "battery", "pv", "relay"])
def test_builtin_profile_is_valid_and_polls_one_small_block(kind: str) -> None:
    path = PROFILE_DIR / f"{kind}.yaml"
    profile = parse_profile(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))
    assert profile.kind == kind
    assert 8 <= len(profile.points) <= 14
    assert all(p.address >= 40000 and p.end <= 40200 for p in profile.points)
    assert (
        "SunSpec" in profile.sunspec and "flat map" in profile.sunspec and "scale factors" in profile.sunspec
    )
    assert "flat register map" in profile.description
    blocks = profile.read_blocks()
    assert sorted(p.name for b in blocks for p in b.points) == sorted(p.name for p in profile.points)
    first = "relay_1" if kind == "relay" else "power_kw"
    (main,) = [b for b in blocks if profile.role(first) in b.points]
    assert main.start == 40070 and 8 <= main.count <= 12 <= 125
    assert all(b.count <= 125 for b in blocks)
    for role, name in profile.roles.items():  # every mapped role's point is polled every cycle or is config
        assert profile.point(name) == profile.role(role)
    for p in profile.points:  # every point's limits are encodable
        for value in (p.min, p.max, 0.0):
            if value is not None:
                assert decode(p, encode(p, value, check_access=False)) == pytest.approx(value)


def test_builtin_roles_and_main_points() -> None:
    def load(kind: str) -> Profile:
        return parse_profile(yaml.safe_load((PROFILE_DIR / f"{kind}.yaml").read_text()), f"{kind}.yaml")

    meter, battery, pv, relay = (load(k) for k in ("meter", "battery", "pv", "relay"))
    w = meter.role("power_kw")
    assert w is not None and (w.type, w.scale, w.unit) == ("int32", 0.001, "kW")
    assert encode(w, 12.345, check_access=False) == [0, 12345]
    wset = battery.role("setpoint_kw")
    assert wset is not None and (wset.type, wset.scale, wset.access, wset.min, wset.max) == (
        "int32",
        0.001,
        "rw",
        -1000,
        1000,
    )
    revert = battery.role("revert_timeout_s")
    assert revert is not None and (revert.type, revert.unit, revert.writable) == ("uint32", "s", True)
    assert encode(revert, 0) == [0, 0]  # 0 = no revert
    limit = pv.role("limit_pct")
    assert limit is not None and (limit.type, limit.scale, limit.min, limit.max) == ("uint16", 0.01, 0, 100)
    assert encode(limit, 100) == [10000]
    relays = [relay.role(f"relay_{i}") for i in range(1, 5)]
    assert [r.address for r in relays if r] == [40070, 40071, 40072, 40073]
    assert all(r is not None and r.writable and r.type == "uint16" for r in relays)
    loads = [relay.role(f"load_{i}_kw") for i in range(1, 5)]
    assert all(p is not None and (p.type, p.scale, p.access) == ("int32", 0.001, "r") for p in loads)
    assert relay.role("relay_5") is None


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_compiled_block_decoder_matches_decode_block(data: st.DataObject) -> None:
    """The poller's fast path gives exactly what decode_block gives, NaN sentinels included."""
    from meshems.adapters.profiles import builtin_profiles
    from meshems.core.registers import compile_block, decode_block

    profile = data.draw(st.sampled_from(sorted(builtin_profiles().items())))[1]
    for block in profile.read_blocks():
        words = data.draw(
            st.lists(st.sampled_from([0, 1, 0x7FFF, 0x8000, 0xFFFF]) | st.integers(0, 0xFFFF),
                     min_size=block.count, max_size=block.count)
        )  # fmt: skip
        want, got = decode_block(block, words), compile_block(block)(words)
        assert want.keys() == got.keys()
        for k in want:
            assert (math.isnan(want[k]) and math.isnan(got[k])) or want[k] == got[k]


def test_compiled_block_decoder_handles_little_word_order() -> None:
    from meshems.core.registers import Block, Point, compile_block, decode_block

    pts = (Point("a", 0, "int32", word_order="little", scale=0.5), Point("b", 2, "uint16"))
    block = Block(0, 3, pts)
    assert (
        compile_block(block)([0xFFFE, 0xFFFF, 7])
        == decode_block(block, [0xFFFE, 0xFFFF, 7])
        == {"a": -1.0, "b": 7}
    )
