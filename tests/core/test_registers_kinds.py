"""Unit tests for `meshems.core.registers` beyond plain numbers: strings, bits of registers,
coils and discrete inputs, SunSpec scale factors (sunssf), the range checks of the 64-bit
types, and the compiled block decoder against point-by-point decoding for every type and order.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshems.core.register_map import Point, Profile
from meshems.core.registers import (
    CodecError,
    apply_scale_factors,
    compile_block,
    decode,
    decode_block,
    encode,
    scale_by_sf,
)
from tests.core.test_registers import ORDERS

# --- strings, bits, coils ---------------------------------------------------------------------


def test_strings_decode_to_str_up_to_the_first_nul() -> None:
    p = Point("Md", 40004, "string", length=4, access="rw")
    assert decode(p, [0x5344, 0x4D36, 0x3330, 0x0000]) == "SDM630"  # 'S' 'D' 'M' '6' '3' '0'
    assert encode(p, "SDM630") == [0x5344, 0x4D36, 0x3330, 0x0000]
    swapped = Point("Md", 40004, "string", "BADC", length=4, access="rw")
    assert decode(swapped, [0x4453, 0x364D, 0x3033, 0x0000]) == "SDM630"
    assert encode(swapped, "SDM630") == [0x4453, 0x364D, 0x3033, 0x0000]
    assert decode(p, [0, 0, 0, 0]) == ""  # SunSpec "not implemented": all NUL
    assert decode(p, [0x4142, 0x2020, 0, 0x4344]) == "AB"  # trailing spaces go, nothing after a NUL
    with pytest.raises(CodecError, match="9 bytes do not fit its 4 registers"):
        encode(p, "SDM630-MC")
    with pytest.raises(CodecError, match="takes a str"):
        encode(p, 5.0)
    (block,) = Profile("t", "meter", "", "", (p, Point("W", 40008, "int16")), {}).read_blocks()
    words = [0x5344, 0x4D36, 0x3330, 0x0000, 0xFFFE]
    assert compile_block(block)(words) == decode_block(block, words) == {"Md": "SDM630", "W": -2.0}


@pytest.mark.parametrize(
    ("bit", "word", "value"),
    [(0, 0x0001, 1.0), (3, 0x0008, 1.0), (3, 0xFFF7, 0.0), (15, 0x8000, 1.0), (15, 0x7FFF, 0.0)],
)
def test_bits_of_a_register(bit: int, word: int, value: float) -> None:
    p = Point("Alarm", 7, "bit", bit=bit)
    assert decode(p, [word]) == value
    others = Point("Other", 7, "bit", bit=(bit + 1) % 16)
    (block,) = Profile("t", "meter", "", "", (p, others), {}).read_blocks()
    assert block.count == 1  # bits of one register share it
    assert compile_block(block)([word]) == decode_block(block, [word])
    assert encode(p, 1, check_access=False) == [1 << bit]


def test_coils_and_discrete_inputs_are_0_or_1() -> None:
    coil = Point("R1", 0, "bool", table="coil", access="rw")
    assert decode(coil, [1]) == 1.0 and decode(coil, [0]) == 0.0 and decode(coil, [True]) == 1.0
    assert encode(coil, 1) == [1] and encode(coil, 0.0) == [0] and encode(coil, True) == [1]
    with pytest.raises(CodecError, match="'R1' at 0: 2 is not 0 or 1"):
        encode(coil, 2)
    with pytest.raises(CodecError, match="read-only"):
        encode(Point("DI1", 0, "bool", table="discrete"), 1)
    with pytest.raises(CodecError, match="not a coil/discrete bit"):
        decode(coil, [2])
    pts = tuple(Point(f"R{i}", i, "bool", table="coil") for i in (0, 1, 5))
    (block,) = Profile("t", "relay", "", "", pts, {}).read_blocks()
    bits = [1, 0, 0, 0, 0, 1, 0, 0]  # pymodbus pads a bit answer to whole bytes
    assert compile_block(block)(bits) == decode_block(block, bits) == {"R0": 1.0, "R1": 0.0, "R5": 1.0}


# --- SunSpec scale factors (sunssf) ------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "sf", "value"),
    [(12345, -2, 123.45), (12345, 0, 12345.0), (12, 3, 12000.0), (-5, -1, -0.5), (7, -10, 7e-10)],
)
def test_scale_factors(raw: int, sf: int, value: float) -> None:
    assert scale_by_sf(raw, sf) == pytest.approx(value)
    p = Point("W", 0, "int16", scale_point="W_SF", access="rw")
    assert decode(p, [raw & 0xFFFF], sf) == pytest.approx(value)
    assert encode(p, value, sf=sf) == [raw & 0xFFFF]


@pytest.mark.parametrize("sf", [math.nan, None, 11, -11, 0.5])
def test_a_missing_or_invalid_scale_factor_makes_the_value_nan(sf: float | None) -> None:
    assert math.isnan(scale_by_sf(100, sf))
    p = Point("W", 0, "int16", scale_point="W_SF", access="rw")
    with pytest.raises(CodecError, match="scale factor 'W_SF' is"):
        encode(p, 1.0, sf=sf)


def test_scale_points_apply_after_every_block_is_decoded() -> None:
    w = Point("W", 0, "int16", scale_point="W_SF", unit="kW")
    sf = Point("W_SF", 10, "int16")
    profile = Profile("t", "meter", "", "", (w, sf), {})
    assert profile.scaled_by() == {"W": "W_SF"}
    values: dict[str, float] = {}
    for block in profile.read_blocks(max_gap=0):
        words = [12345] if block.start == 0 else [0xFFFE]  # sf -2
        values.update(compile_block(block)(words))  # type: ignore[arg-type]
    assert values == {"W": 12345, "W_SF": -2}  # raw until the factor is applied
    apply_scale_factors(values, profile.scaled_by())
    assert values["W"] == pytest.approx(123.45)
    values = {"W": 12345.0, "W_SF": math.nan}  # the factor itself "not implemented" (0x8000)
    apply_scale_factors(values, profile.scaled_by())
    assert math.isnan(values["W"])
    with pytest.raises(CodecError, match="scaled by 'W_SF'; pass its value as sf"):
        decode(w, [1])


def test_a_fixed_scale_multiplies_a_scale_factor() -> None:
    """A SunSpec W (sf 1: 10 W steps) read as kW: value = raw * 10 ** sf * 0.001."""
    w = Point("W", 0, "int16", scale=0.001, scale_point="W_SF", unit="kW", access="rw")
    sf = Point("W_SF", 10, "int16")
    profile = Profile("t", "pv", "", "", (w, sf), {})
    values: dict[str, float] = {}
    for block in profile.read_blocks(max_gap=0):
        values.update(compile_block(block)([1234] if block.start == 0 else [1]))  # type: ignore[arg-type]
    apply_scale_factors(values, profile.scaled_by())
    assert values["W"] == pytest.approx(12.34)
    assert decode(w, [1234], 1) == pytest.approx(12.34)
    assert encode(w, 12.34, sf=1) == [1234]
    with pytest.raises(CodecError, match="raw 40000 at scale factor 1"):
        encode(w, 400.0, sf=1)


# --- range checks of the new types ---------------------------------------------------------------


def rw(reg_type: str, **kw: Any) -> Point:
    return Point("P", 100, reg_type, access="rw", **kw)  # type: ignore[arg-type]


NEW_ENCODE_ERRORS: list[tuple[str, Point, float, str]] = [
    ("int64 too big", rw("int64"), 2.0**63, "outside int64"),
    ("uint64 negative", rw("uint64"), -1, "outside uint64 (0..18446744073709551614)"),
    ("float64 too big by scale", rw("float64", scale=1e-10), 1e300, "too large for float64"),
    ("above max, int64", rw("int64", unit="Wh", max=10), 11, "above its max 10"),
    ("sf-scaled raw too big", rw("int16", scale_point="SF"), 400, "raw 40000 at scale factor -2"),
]


@pytest.mark.parametrize(
    ("case", "point", "value", "text"), NEW_ENCODE_ERRORS, ids=[c[0] for c in NEW_ENCODE_ERRORS]
)
def test_new_types_refuse_what_they_cannot_hold(case: str, point: Point, value: float, text: str) -> None:
    with pytest.raises(CodecError) as info:
        encode(point, value, sf=-2 if point.scale_point else None)
    assert "'P' at 100" in str(info.value) and text in str(info.value)


ALL_NUMBERS = ["int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64"]


@settings(max_examples=400, deadline=None)
@given(
    st.sampled_from(ALL_NUMBERS),
    st.sampled_from(ORDERS),
    st.lists(st.integers(0, 0xFFFF), min_size=4, max_size=4),
)
def test_every_finite_reading_re_encodes_in_every_order(reg_type: str, order: str, words: list[int]) -> None:
    p = Point("P", 0, reg_type, order)  # type: ignore[arg-type]
    words = words[: p.count]
    value = decode(p, words)
    assert isinstance(value, float | int)
    if math.isfinite(value):
        assert encode(p, value, check_access=False) == words


@settings(max_examples=150, deadline=None)
@given(st.data())
def test_compiled_decoder_matches_for_mixed_types_and_orders(data: st.DataObject) -> None:
    """Random blocks of every type and order: the fast path decodes as point-by-point does."""
    points, address = [], 0
    for i in range(data.draw(st.integers(1, 12))):
        reg_type = data.draw(st.sampled_from([*ALL_NUMBERS, "string", "bit"]))
        kw: dict[str, Any] = {}
        if reg_type == "string":
            kw = {
                "length": data.draw(st.integers(1, 4)),
                "word_order": data.draw(st.sampled_from(["ABCD", "BADC"])),
            }
        elif reg_type == "bit":
            kw = {"bit": data.draw(st.integers(0, 15))}
        else:
            kw = {
                "word_order": data.draw(st.sampled_from(ORDERS)),
                "scale": data.draw(st.sampled_from([1, 0.1, -2])),
            }
        p = Point(f"P{i}", address, reg_type, **kw)  # type: ignore[arg-type]
        points.append(p)
        address = p.end + data.draw(st.integers(0, 3))
    for block in Profile("t", "meter", "", "", tuple(points), {}).read_blocks():
        words = data.draw(st.lists(st.sampled_from([0, 0x7FFF, 0x8000, 0xFFFF]) | st.integers(0, 0xFFFF),
                                   min_size=block.count, max_size=block.count))  # fmt: skip
        want, got = decode_block(block, words), compile_block(block)(words)
        assert want.keys() == got.keys()
        for k in want:
            assert want[k] == got[k] or (want[k] != want[k] and got[k] != got[k])  # NaN == NaN here
