"""Modbus register codec: the words a device holds <-> engineering values, per `Point`.

Owns decode/encode (int16 .. float32, both word orders, fixed scale, SunSpec "not
implemented" markers, range checks naming the point) and block decoding for the poller.
Pure: no I/O, no clocks; register maps are `core.register_map`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from meshems.core.register_map import Block, Point

# The raw word value SunSpec uses for "not implemented", per type (as the unsigned wire value).
NOT_IMPLEMENTED: Mapping[str, int] = MappingProxyType(
    {"int16": 0x8000, "uint16": 0xFFFF, "int32": 0x8000_0000, "uint32": 0xFFFF_FFFF}
)
# Raw values encode() may produce: the full range minus the "not implemented" marker, so that
# decode(encode(v)) == v always holds.
_RAW_RANGE: Mapping[str, tuple[int, int]] = MappingProxyType(
    {
        "int16": (-0x7FFF, 0x7FFF),
        "uint16": (0, 0xFFFE),
        "int32": (-0x7FFF_FFFF, 0x7FFF_FFFF),
        "uint32": (0, 0xFFFF_FFFE),
    }
)
_FLOAT32_MAX = 3.4028234663852886e38


class CodecError(ValueError):
    """A value or word list that cannot be encoded or decoded for a point; names the point."""


def _where(point: Point) -> str:
    return f"point {point.name!r} at {point.address}"


def type_range(point: Point) -> tuple[float, float]:
    """The engineering values the point's type can carry at its scale (min/max not applied)."""
    if point.type == "float32":
        lo, hi = -_FLOAT32_MAX * abs(point.scale), _FLOAT32_MAX * abs(point.scale)
    else:
        raw_lo, raw_hi = _RAW_RANGE[point.type]
        lo, hi = sorted((raw_lo * point.scale, raw_hi * point.scale))
    return lo, hi


def raw_description(reg_type: str) -> str:
    """A type and the raw values encode may produce, for messages: "int16 (-32767..32767)"."""
    if reg_type == "float32":
        return "float32"
    lo, hi = _RAW_RANGE[reg_type]
    return f"{reg_type} ({lo}..{hi})"


def decode(point: Point, words: Sequence[int]) -> float:
    """Words as read from the device -> engineering value; `math.nan` for "not implemented"."""
    if len(words) != point.count:
        raise CodecError(f"{_where(point)}: {point.type} needs {point.count} word(s), got {len(words)}")
    for w in words:
        if not isinstance(w, int) or not 0 <= w <= 0xFFFF:
            raise CodecError(f"{_where(point)}: {w!r} is not a 16-bit register value")
    if point.count == 1:
        u = words[0]
    else:
        hi, lo = (words[0], words[1]) if point.word_order == "big" else (words[1], words[0])
        u = hi << 16 | lo
    if point.type == "float32":
        return struct.unpack(">f", u.to_bytes(4, "big"))[0] * point.scale
    if u == NOT_IMPLEMENTED[point.type]:
        return math.nan
    raw = u
    if point.type == "int16" and u & 0x8000:
        raw = u - 0x1_0000
    elif point.type == "int32" and u & 0x8000_0000:
        raw = u - 0x1_0000_0000
    return raw * point.scale


def encode(point: Point, value: float, *, check_access: bool = True) -> list[int]:
    """Engineering value -> words to write (round(value / scale) for integer types).

    Refuses read-only points (unless `check_access=False`, as the simulator does to publish
    measurements), non-finite values, values outside min/max and raw values the type cannot hold.
    """
    if check_access and not point.writable:
        raise CodecError(f"{_where(point)}: read-only (access r); it cannot be written")
    try:
        value = float(value)
    except (OverflowError, TypeError, ValueError):
        raise CodecError(f"{_where(point)}: {value!r} is not a number it can hold") from None
    if not math.isfinite(value):
        raise CodecError(f"{_where(point)}: {value} is not a finite number")
    unit = f" {point.unit}" if point.unit else ""
    if point.min is not None and value < point.min:
        raise CodecError(f"{_where(point)}: {value}{unit} is below its min {point.min}{unit}")
    if point.max is not None and value > point.max:
        raise CodecError(f"{_where(point)}: {value}{unit} is above its max {point.max}{unit}")
    quotient = value / point.scale
    if point.type == "float32":
        if not abs(quotient) <= _FLOAT32_MAX:
            raise CodecError(f"{_where(point)}: {value}{unit} is too large for float32")
        u = int.from_bytes(struct.pack(">f", quotient), "big")
    else:
        lo, hi = _RAW_RANGE[point.type]
        raw = round(quotient) if math.isfinite(quotient) else None
        if raw is None or not lo <= raw <= hi:
            raise CodecError(
                f"{_where(point)}: {value}{unit} is raw {raw if raw is not None else quotient} at scale "
                f"{point.scale}, outside {raw_description(point.type)}"
            )
        u = raw & (0xFFFF if point.count == 1 else 0xFFFF_FFFF)
    if point.count == 1:
        return [u]
    hi_word, lo_word = u >> 16, u & 0xFFFF
    return [hi_word, lo_word] if point.word_order == "big" else [lo_word, hi_word]


# --- read blocks ----------------------------------------------------------------------------


def decode_block(block: Block, words: Sequence[int]) -> dict[str, float]:
    """The words of one block read -> point name -> engineering value."""
    if len(words) != block.count:
        raise CodecError(f"block at {block.start}: expected {block.count} words, got {len(words)}")
    return {p.name: decode(p, words[p.address - block.start : p.end - block.start]) for p in block.points}


_STRUCT_CODES = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f"}
_MASK = {"int16": 0xFFFF, "int32": 0xFFFF_FFFF}


def compile_block(block: Block) -> Callable[[Sequence[int]], dict[str, float]]:
    """A faster `decode_block` for one block (the poller's hot path): one struct unpack for
    all big-word-order points; other points fall back to `decode`. Same results."""
    fast = [p for p in block.points if p.word_order == "big" or p.count == 1]
    slow = [p for p in block.points if p not in fast]
    offsets = [
        (p.name, (p.address - block.start) * 2, struct.Struct(">" + _STRUCT_CODES[p.type]), p) for p in fast
    ]
    words_struct = struct.Struct(f">{block.count}H")

    def decode_fast(words: Sequence[int]) -> dict[str, float]:
        if len(words) != block.count:
            raise CodecError(f"block at {block.start}: expected {block.count} words, got {len(words)}")
        try:
            raw_bytes = words_struct.pack(*words)
        except struct.error:
            return decode_block(block, words)  # out-of-range words: let decode name the point
        out: dict[str, float] = {}
        for name, offset, st, p in offsets:
            v = st.unpack_from(raw_bytes, offset)[0]
            if (
                p.type != "float32"
                and (v if p.type[0] == "u" else v & _MASK[p.type]) == NOT_IMPLEMENTED[p.type]
            ):
                out[name] = math.nan
            else:
                out[name] = v * p.scale
        for p in slow:
            out[p.name] = decode(p, words[p.address - block.start : p.end - block.start])
        return out

    return decode_fast
