"""Unit tests for `meshems.core.point`: sizes per type and table, the four-letter order of the
old word orders, and the points a `Point` refuses by itself (the schema names file and key)."""

from __future__ import annotations

from typing import Any

import pytest

from meshems.core.point import WORDS, Point


@pytest.mark.parametrize(
    ("kw", "count", "bits", "text"),
    [
        ({"type": "int64"}, 4, False, False),
        ({"type": "uint64"}, 4, False, False),
        ({"type": "float64"}, 4, False, False),
        ({"type": "string", "length": 10}, 10, False, True),
        ({"type": "bit", "bit": 15}, 1, False, False),
        ({"type": "bool", "table": "coil"}, 1, True, False),
        ({"type": "bool", "table": "discrete"}, 1, True, False),
        ({"type": "float32", "table": "input"}, 2, False, False),
    ],
)
def test_sizes(kw: dict[str, Any], count: int, bits: bool, text: bool) -> None:
    p = Point("P", 10, **kw)
    assert (p.count, p.end, p.bits, p.text) == (count, 10 + count, bits, text)
    assert WORDS["int64"] == WORDS["float64"] == 4


@pytest.mark.parametrize(("written", "order"), [("big", "ABCD"), ("little", "CDAB"), ("BADC", "BADC")])
def test_orders(written: str, order: str) -> None:
    p = Point("P", 0, "float32", written)  # type: ignore[arg-type]
    assert (p.word_order, p.order) == (written, order)


@pytest.mark.parametrize(
    ("kw", "text"),
    [
        ({"type": "int16", "table": "coil"}, "a coil is a single bit"),
        ({"type": "bool"}, "unknown register type 'bool'"),
        ({"type": "int16", "table": "tables"}, "unknown table"),
        ({"type": "string"}, "a string needs a length of 1..125"),
        ({"type": "int16", "length": 2}, "length is for strings"),
        ({"type": "bit"}, "a bit point needs bit 0..15"),
        ({"type": "bit", "bit": 16}, "a bit point needs bit 0..15"),
        ({"type": "int16", "bit": 1}, "bit is for type bit"),
        ({"type": "int16", "access": "rw", "table": "input"}, "an input register is read-only"),
        ({"type": "bool", "access": "rw", "table": "discrete"}, "a discrete input is read-only"),
        ({"type": "bit", "bit": 1, "access": "rw"}, "a bit of a register is read-only"),
        ({"type": "string", "length": 2, "scale_point": "SF"}, "a string is not scaled"),
        ({"type": "bool", "table": "coil", "word_order": "DCBA"}, "no byte or word order"),
        ({"type": "string", "length": 2, "word_order": "CDAB"}, "a string's bytes are ABCD"),
        ({"type": "uint64", "address": 65533}, "do not fit"),
        ({"type": "float32", "word_order": "middle"}, "unknown order"),
    ],
)
def test_points_refuse_what_cannot_be(kw: dict[str, Any], text: str) -> None:
    kw = {"address": 0, **kw}
    with pytest.raises(ValueError, match=r"^P: ") as info:
        Point("P", **kw)
    assert text in str(info.value)
