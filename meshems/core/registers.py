"""Modbus value codec: the words (or bits) a device holds <-> engineering values, per `Point`.

Owns decode/encode of every type (int16 .. uint64, float32/64, string, bit of a register,
coil/discrete bit) in every byte and word order (ABCD, CDAB, BADC, DCBA), fixed scales and
SunSpec scale factors (sunssf), the "not implemented" markers, range checks naming the point,
and block decoding for the poller. Pure: no I/O, no clocks; points are `core.point`.
"""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Callable, Mapping, Sequence
from types import MappingProxyType

from meshems.core.block_plan import Block
from meshems.core.point import WORDS, Point

Value = float | str
# The raw value SunSpec uses for "not implemented", per type (as the unsigned wire value).
# SunSpec's accumulators (acc16/32/64) are profiled as uint16/32/64.
NOT_IMPLEMENTED: Mapping[str, int] = MappingProxyType(
    {"int16": 0x8000, "uint16": 0xFFFF, "int32": 0x8000_0000, "uint32": 0xFFFF_FFFF,
     "int64": 0x8000_0000_0000_0000, "uint64": 0xFFFF_FFFF_FFFF_FFFF}
)  # fmt: skip
# Raw values encode() may produce: the full range minus the "not implemented" marker, so that
# decode(encode(v)) == v always holds.
_RAW_RANGE: Mapping[str, tuple[int, int]] = MappingProxyType(
    {"int16": (-0x7FFF, 0x7FFF), "uint16": (0, 0xFFFE), "int32": (-0x7FFF_FFFF, 0x7FFF_FFFF),
     "uint32": (0, 0xFFFF_FFFE), "int64": (-(2**63) + 1, 2**63 - 1), "uint64": (0, 2**64 - 2)}
)  # fmt: skip
_FLOAT_MAX = {"float32": 3.4028234663852886e38, "float64": 1.7976931348623157e308}
_CODES = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "int64": "q", "uint64": "Q",
          "float32": "f", "float64": "d", "bit": "H"}  # fmt: skip
#: the scale factors SunSpec allows (sunssf, -10..10)
SF_RANGE = 10
#: integers a float cannot carry exactly: unscaled, they stay Python ints both ways
_EXACT = frozenset({"int64", "uint64"})


class CodecError(ValueError):
    """A value or word list that cannot be encoded or decoded for a point; names the point."""


def _where(point: Point) -> str:
    return f"point {point.name!r} at {point.address}"


def _layout(point: Point) -> tuple[bool, str]:
    """(read from the byte-swapped buffer?, struct byte order) that turns the point's words,
    packed big-endian ('>H' each) or byte-swapped ('<H' each), into its value."""
    order = point.order
    if point.count == 1 or point.text:
        return order in ("BADC", "DCBA"), ">"
    return {"ABCD": (False, ">"), "DCBA": (False, "<"), "CDAB": (True, "<"), "BADC": (True, ">")}[order]


def type_range(point: Point) -> tuple[float, float]:
    """The engineering values the point's type can carry at its fixed scale (min/max not
    applied); unbounded for a point scaled by a scale point, 0..1 for bits."""
    if point.bits or point.type == "bit":
        return 0.0, 1.0
    if point.scale_point is not None or point.text:
        return -math.inf, math.inf
    if point.type in _FLOAT_MAX:
        big = _FLOAT_MAX[point.type] * abs(point.scale)
        return -big, big
    raw_lo, raw_hi = _RAW_RANGE[point.type]
    lo, hi = sorted((raw_lo * point.scale, raw_hi * point.scale))
    return lo, hi


def raw_description(reg_type: str) -> str:
    """A type and the raw values encode may produce, for messages: "int16 (-32767..32767)"."""
    if reg_type not in _RAW_RANGE:
        return reg_type
    lo, hi = _RAW_RANGE[reg_type]
    return f"{reg_type} ({lo}..{hi})"


def scale_by_sf(raw: float, sf: float | None) -> float:
    """raw * 10 ** sf for a SunSpec scale factor; NaN when sf is missing, "not implemented"
    (NaN) or outside -10..10."""
    if sf is None or not math.isfinite(sf) or sf != int(sf) or abs(sf) > SF_RANGE:
        return math.nan
    e = int(sf)
    return raw * 10.0**e if e >= 0 else raw / 10.0**-e


def _check_words(point: Point, words: Sequence[int]) -> None:
    if len(words) != point.count:
        raise CodecError(f"{_where(point)}: {point.type} needs {point.count} word(s), got {len(words)}")
    top = 1 if point.bits else 0xFFFF
    for w in words:
        if not isinstance(w, int) or not 0 <= w <= top:
            kind = "coil/discrete bit" if point.bits else "16-bit register value"
            raise CodecError(f"{_where(point)}: {w!r} is not a {kind}")


def _unscaled(point: Point, words: Sequence[int]) -> Value:
    """The value before any scale: a number (NaN for "not implemented") or a str."""
    _check_words(point, words)
    if point.bits:
        return 1.0 if words[0] else 0.0
    swapped, endian = _layout(point)
    data = struct.pack(f"{'<' if swapped else '>'}{len(words)}H", *words)
    if point.text:
        return _text(data)
    if point.type == "bit":
        return float(words[0] >> (point.bit or 0) & 1)
    v = struct.unpack(endian + _CODES[point.type], data)[0]
    if point.type in NOT_IMPLEMENTED and v == _marker(point.type):
        return math.nan
    return v


def _text(data: bytes) -> str:
    """A string register value: up to the first NUL, trailing spaces dropped (SunSpec pads with NUL)."""
    return data.split(b"\x00", 1)[0].decode("utf-8", errors="replace").rstrip()


def _marker(reg_type: str) -> int:
    """The "not implemented" marker as struct decodes it (signed types: the most negative value)."""
    u = NOT_IMPLEMENTED[reg_type]
    return u if reg_type[0] == "u" else u - (1 << (16 * WORDS[reg_type]))


def decode(point: Point, words: Sequence[int], sf: float | None = None) -> Value:
    """Words (or bits) as read from the device -> engineering value: a float (math.nan for
    "not implemented"; 0.0/1.0 for bits) or, for a string point, a str.

    A point scaled by a scale point needs that point's decoded value as `sf`."""
    v = _unscaled(point, words)
    if isinstance(v, str) or point.bits or point.type == "bit":
        return v
    if point.scale_point is not None:
        if sf is None:
            raise CodecError(f"{_where(point)}: scaled by {point.scale_point!r}; pass its value as sf")
        return scale_by_sf(v, sf) * point.scale
    return v * _factor(point)


def _factor(point: Point) -> float:
    """The fixed scale as a multiplier; an unscaled 64-bit integer keeps its exact int (* 1)."""
    return 1 if point.type in _EXACT and point.scale == 1 else point.scale


def encode(point: Point, value: Value, *, check_access: bool = True, sf: float | None = None) -> list[int]:
    """Engineering value -> words (or bits) to write (round(value / scale) for integer types).

    Refuses read-only points (unless `check_access=False`, as the simulator does to publish
    measurements), non-finite values, values outside min/max and raw values the type cannot
    hold. A point scaled by a scale point needs that point's value as `sf`.
    """
    if check_access and not point.writable:
        raise CodecError(f"{_where(point)}: read-only (access r); it cannot be written")
    if point.text:
        return _encode_text(point, value)
    original = value
    try:
        value = float(value)
    except (OverflowError, TypeError, ValueError):
        raise CodecError(f"{_where(point)}: {value!r} is not a number it can hold") from None
    if not math.isfinite(value):
        raise CodecError(f"{_where(point)}: {value} is not a finite number")
    if point.bits or point.type == "bit":
        if value not in (0.0, 1.0):
            raise CodecError(f"{_where(point)}: {value:g} is not 0 or 1 (a {point.type} is one bit)")
        return [int(value) << (point.bit or 0)] if point.type == "bit" else [int(value)]
    unit = f" {point.unit}" if point.unit else ""
    if point.min is not None and value < point.min:
        raise CodecError(f"{_where(point)}: {value}{unit} is below its min {point.min}{unit}")
    if point.max is not None and value > point.max:
        raise CodecError(f"{_where(point)}: {value}{unit} is above its max {point.max}{unit}")
    if point.scale_point is not None:
        factor = scale_by_sf(1.0, sf) * point.scale
        if math.isnan(factor) or factor == 0:
            raise CodecError(
                f"{_where(point)}: its scale factor {point.scale_point!r} is {sf} (not read yet?)"
            )
        quotient = value / factor
        scale_text = f"scale factor {int(sf or 0)}"
    else:
        quotient = value / point.scale
        scale_text = f"scale {point.scale}"
    if point.type in _FLOAT_MAX:
        if not abs(quotient) <= _FLOAT_MAX[point.type]:
            raise CodecError(f"{_where(point)}: {value}{unit} is too large for {point.type}")
        return _words(point, struct.pack(">" + _CODES[point.type], quotient))
    lo, hi = _RAW_RANGE[point.type]
    raw = round(quotient) if math.isfinite(quotient) else None
    exact = point.scale_point is None and _factor(point) == 1
    if exact and isinstance(original, int) and not isinstance(original, bool):
        raw = original  # an int written to an unscaled integer point goes on the wire exactly
    if raw is None or not lo <= raw <= hi:
        raise CodecError(
            f"{_where(point)}: {value}{unit} is raw {raw if raw is not None else quotient} at {scale_text}, "
            f"outside {raw_description(point.type)}"
        )
    return _words(point, struct.pack(">" + _CODES[point.type], raw))


def _words(point: Point, big_endian: bytes) -> list[int]:
    """A value's big-endian bytes -> the words on the wire in the point's order."""
    order = point.order
    swap = order in ("BADC", "DCBA")
    words = [
        int.from_bytes(big_endian[i : i + 2], "little" if swap else "big")
        for i in range(0, len(big_endian), 2)
    ]
    if len(words) > 1 and order in ("CDAB", "DCBA"):
        words.reverse()
    return words


def _encode_text(point: Point, value: Value) -> list[int]:
    if not isinstance(value, str):
        raise CodecError(f"{_where(point)}: a string point takes a str, not {value!r}")
    data = value.encode("utf-8")
    if len(data) > 2 * point.length:
        raise CodecError(
            f"{_where(point)}: {len(data)} bytes do not fit its {point.length} registers "
            f"({2 * point.length} bytes)"
        )
    data = data.ljust(2 * point.length, b"\x00")
    swap = point.order in ("BADC", "DCBA")
    return [int.from_bytes(data[i : i + 2], "little" if swap else "big") for i in range(0, len(data), 2)]


# --- read blocks ----------------------------------------------------------------------------


def decode_block(block: Block, words: Sequence[int]) -> dict[str, Value]:
    """The words (or bits) of one block read -> point name -> value. Points scaled by a scale
    point come out unscaled here: `apply_scale_factors` finishes them once every block is in."""
    if len(words) < block.count or (len(words) > block.count and not block.bits):
        raise CodecError(f"block at {block.start}: expected {block.count} words, got {len(words)}")
    out: dict[str, Value] = {}
    for p in block.points:
        part = words[p.address - block.start : p.end - block.start]
        out[p.name] = _unscaled(p, [int(w) for w in part]) if p.bits else _scaled_or_raw(p, part)
    return out


def _scaled_or_raw(p: Point, words: Sequence[int]) -> Value:
    v = _unscaled(p, words)
    if isinstance(v, str) or p.type == "bit":
        return v
    return v * _factor(p)  # times 10 ** sf later for a point with a scale_point


def apply_scale_factors(values: dict[str, float], scaled_by: Mapping[str, str]) -> None:
    """Scale, in place, each point read raw by the scale factor read in the same poll."""
    for name, sf_name in scaled_by.items():
        if name in values:
            values[name] = scale_by_sf(values[name], values.get(sf_name))


def compile_block(block: Block) -> Callable[[Sequence[int]], dict[str, Value]]:
    """A faster `decode_block` for one block (the poller's hot path): the words are packed once
    (and once byte-swapped if a point needs it), and the numbers of each byte layout come out
    of one struct unpack. Same results as `decode_block`."""
    if block.bits:
        return _compile_bits(block)
    n = block.count
    groups: dict[tuple[bool, str], list[Point]] = {}
    texts: list[tuple[str, bool, int, int]] = []
    bits = tuple((p.name, p.address - block.start, p.bit or 0) for p in block.points if p.type == "bit")
    for p in block.points:
        swapped, endian = _layout(p)
        if p.text:
            texts.append((p.name, swapped, 2 * (p.address - block.start), 2 * p.count))
        elif p.type != "bit":
            groups.setdefault((swapped, endian), []).append(p)
    plans = []
    for (swapped, endian), pts in groups.items():
        pts.sort(key=lambda p: p.address)
        fmt, at = endian, 0
        for p in pts:
            offset = 2 * (p.address - block.start)
            fmt += f"{offset - at}x{_CODES[p.type]}" if offset > at else _CODES[p.type]
            at = offset + 2 * p.count
        names = tuple(p.name for p in pts)
        scales = tuple(_factor(p) for p in pts)  # 10 ** sf comes after, for a scale_point
        markers = tuple((i, _marker(p.type)) for i, p in enumerate(pts) if p.type in NOT_IMPLEMENTED)
        plans.append((swapped, struct.Struct(fmt), names, scales, markers, frozenset(m for _, m in markers)))
    big, little = struct.Struct(f">{n}H"), struct.Struct(f"<{n}H")
    needs_swapped = any(plan[0] for plan in plans) or any(t[1] for t in texts)

    def decode_fast(words: Sequence[int]) -> dict[str, Value]:
        if len(words) != n:
            raise CodecError(f"block at {block.start}: expected {n} words, got {len(words)}")
        try:
            buffers = (big.pack(*words), little.pack(*words) if needs_swapped else b"")
        except struct.error:
            return decode_block(block, words)  # out-of-range words: let decode name the point
        out: dict[str, Value] = {}
        for swapped, st, names, scales, markers, marker_set in plans:
            values = st.unpack_from(buffers[swapped])
            out.update(zip(names, map(operator.mul, values, scales), strict=True))
            if not marker_set.isdisjoint(values):  # rare: some value may be "not implemented"
                for i, marker in markers:
                    if values[i] == marker:
                        out[names[i]] = math.nan
        for name, i, bit in bits:
            out[name] = float(words[i] >> bit & 1)
        for name, swapped, offset, size in texts:
            out[name] = _text(buffers[swapped][offset : offset + size])
        return out

    return decode_fast


def _compile_bits(block: Block) -> Callable[[Sequence[int]], dict[str, Value]]:
    rows = tuple((p.name, p.address - block.start) for p in block.points)
    n = block.count

    def decode_bits(bits: Sequence[int]) -> dict[str, Value]:
        if len(bits) < n:  # pymodbus pads bit answers to whole bytes
            raise CodecError(f"block at {block.start}: expected {n} bits, got {len(bits)}")
        return {name: 1.0 if bits[i] else 0.0 for name, i in rows}

    return decode_bits
