"""Unit tests for `meshems.core.registers`: the Modbus register codec.

Known word values pin the codec to the wire (int32 -2 big-endian is FFFF FFFE, float32 1.5
is 3FC0 0000); hypothesis checks that every encodable value survives decode(encode(v)) and
every finite decoded value re-encodes to the same words; block decoding, also the compiled
fast path, gives the same values as decoding point by point.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshems.core.register_map import WORDS, Block, Point, Profile
from meshems.core.registers import (
    CodecError,
    compile_block,
    decode,
    decode_block,
    encode,
)
from tests.core.test_register_map import TYPES, profile_of

RAW = {
    "int16": (-0x7FFF, 0x7FFF),
    "uint16": (0, 0xFFFE),
    "int32": (-(2**31) + 1, 2**31 - 1),
    "uint32": (0, 2**32 - 2),
}


def pt(reg_type: str, order: str = "big", scale: float = 1.0, **kw: Any) -> Point:
    return Point("P", 100, reg_type, order, scale, **kw)  # type: ignore[arg-type]


# --- codec: known words ------------------------------------------------------------------


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


# --- codec: errors -----------------------------------------------------------------------


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


# --- codec: properties -------------------------------------------------------------------


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


# --- decoding read blocks ----------------------------------------------------------------


def test_decode_block() -> None:
    profile = profile_of(("W", 10, "int32"), ("Hz", 12, "uint16"), ("X", 15, "int16"))
    (block,) = profile.read_blocks()
    assert block == Block(10, 6, profile.points)
    values = decode_block(block, [0xFFFF, 0xFFFE, 5000, 0, 0, 0x8000])
    assert values["W"] == -2 and values["Hz"] == 5000 and math.isnan(values["X"])
    with pytest.raises(CodecError, match="block at 10: expected 6 words, got 5"):
        decode_block(block, [0] * 5)


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
    from meshems.core.register_map import Block, Point
    from meshems.core.registers import compile_block, decode_block

    pts = (Point("a", 0, "int32", word_order="little", scale=0.5), Point("b", 2, "uint16"))
    block = Block(0, 3, pts)
    assert (
        compile_block(block)([0xFFFE, 0xFFFF, 7])
        == decode_block(block, [0xFFFE, 0xFFFF, 7])
        == {"a": -1.0, "b": 7}
    )


# --- every type in every byte and word order ------------------------------------------------

ORDERS = ("ABCD", "CDAB", "BADC", "DCBA")
# (type, value, {order: words on the wire}), written out by hand from the big-endian bytes:
# ABCD as is, CDAB words reversed, BADC bytes swapped in each word, DCBA both.
VECTORS: list[tuple[str, float, dict[str, list[int]]]] = [
    ("int16", -2, {"ABCD": [0xFFFE], "CDAB": [0xFFFE], "BADC": [0xFEFF], "DCBA": [0xFEFF]}),
    ("uint16", 0x1234, {"ABCD": [0x1234], "CDAB": [0x1234], "BADC": [0x3412], "DCBA": [0x3412]}),
    ("int32", 0x12345678, {"ABCD": [0x1234, 0x5678], "CDAB": [0x5678, 0x1234],
                           "BADC": [0x3412, 0x7856], "DCBA": [0x7856, 0x3412]}),
    ("int32", -2, {"ABCD": [0xFFFF, 0xFFFE], "CDAB": [0xFFFE, 0xFFFF],
                   "BADC": [0xFFFF, 0xFEFF], "DCBA": [0xFEFF, 0xFFFF]}),
    ("uint32", 65536, {"ABCD": [0x0001, 0x0000], "CDAB": [0x0000, 0x0001],
                       "BADC": [0x0100, 0x0000], "DCBA": [0x0000, 0x0100]}),
    ("float32", 123.456, {"ABCD": [0x42F6, 0xE979], "CDAB": [0xE979, 0x42F6],
                          "BADC": [0xF642, 0x79E9], "DCBA": [0x79E9, 0xF642]}),
    ("float32", 1.5, {"ABCD": [0x3FC0, 0x0000], "CDAB": [0x0000, 0x3FC0],
                      "BADC": [0xC03F, 0x0000], "DCBA": [0x0000, 0xC03F]}),
    ("int64", 0x0102030405060708, {"ABCD": [0x0102, 0x0304, 0x0506, 0x0708],
                                   "CDAB": [0x0708, 0x0506, 0x0304, 0x0102],
                                   "BADC": [0x0201, 0x0403, 0x0605, 0x0807],
                                   "DCBA": [0x0807, 0x0605, 0x0403, 0x0201]}),
    ("int64", -2, {"ABCD": [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE], "CDAB": [0xFFFE, 0xFFFF, 0xFFFF, 0xFFFF],
                   "BADC": [0xFFFF, 0xFFFF, 0xFFFF, 0xFEFF], "DCBA": [0xFEFF, 0xFFFF, 0xFFFF, 0xFFFF]}),
    ("uint64", 2**32, {"ABCD": [0x0000, 0x0001, 0x0000, 0x0000], "CDAB": [0x0000, 0x0000, 0x0001, 0x0000],
                       "BADC": [0x0000, 0x0100, 0x0000, 0x0000], "DCBA": [0x0000, 0x0000, 0x0100, 0x0000]}),
    ("float64", 1.5, {"ABCD": [0x3FF8, 0, 0, 0], "CDAB": [0, 0, 0, 0x3FF8],
                      "BADC": [0xF83F, 0, 0, 0], "DCBA": [0, 0, 0, 0xF83F]}),
    ("float64", -123.456, {"ABCD": [0xC05E, 0xDD2F, 0x1A9F, 0xBE77],
                           "CDAB": [0xBE77, 0x1A9F, 0xDD2F, 0xC05E],
                           "BADC": [0x5EC0, 0x2FDD, 0x9F1A, 0x77BE],
                           "DCBA": [0x77BE, 0x9F1A, 0x2FDD, 0x5EC0]}),
]  # fmt: skip
TYPE_ORDER = [(t, v, o, ws[o]) for t, v, ws in VECTORS for o in ORDERS]


@pytest.mark.parametrize(("reg_type", "value", "order", "words"), TYPE_ORDER)
def test_every_type_in_every_order(reg_type: str, value: float, order: str, words: list[int]) -> None:
    p = Point("P", 100, reg_type, order, access="rw")  # type: ignore[arg-type]
    assert encode(p, value) == words
    got = decode(p, words)
    assert got == (pytest.approx(value, rel=1e-7) if reg_type == "float32" else value)
    (block,) = Profile("t", "meter", "", "", (p,), {}).read_blocks()
    assert compile_block(block)(words) == decode_block(block, words) == {"P": got}


def test_the_old_word_orders_are_abcd_and_cdab() -> None:
    assert Point("P", 0, "float32", "big").order == "ABCD"
    assert Point("P", 0, "float32", "little").order == "CDAB"
    assert encode(Point("P", 0, "float32", "little", access="rw"), 123.456) == [0xE979, 0x42F6]


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize(
    ("reg_type", "marker"),
    [("int64", [0x8000, 0, 0, 0]), ("uint64", [0xFFFF] * 4), ("float64", [0x7FF8, 0, 0, 0]),
     ("int32", [0x8000, 0]), ("uint16", [0xFFFF])],
)  # fmt: skip
def test_not_implemented_markers_in_every_order(reg_type: str, marker: list[int], order: str) -> None:
    p = Point("P", 0, reg_type, order)  # type: ignore[arg-type]
    words = _reorder(marker, order)
    assert math.isnan(decode(p, words))
    (block,) = Profile("t", "meter", "", "", (p,), {}).read_blocks()
    assert math.isnan(compile_block(block)(words)["P"])


def _reorder(big_endian_words: list[int], order: str) -> list[int]:
    """Big-endian words as a device with `order` puts them on the wire."""
    words = [((w & 0xFF) << 8 | w >> 8) if order in ("BADC", "DCBA") else w for w in big_endian_words]
    return words[::-1] if order in ("CDAB", "DCBA") else words


def test_near_64_bit_markers_are_ordinary_values() -> None:
    assert decode(Point("P", 0, "int64"), [0x8000, 0, 0, 1]) == -(2**63) + 1
    assert decode(Point("P", 0, "uint64"), [0xFFFF, 0xFFFF, 0xFFFF, 0xFFFE]) == 2**64 - 2
    assert decode(Point("P", 0, "int64", "CDAB"), [0x8000, 0, 0, 0]) == 0x8000
