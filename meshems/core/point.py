"""One value of a Modbus device as data: `Point` (its table, address, type, byte and word
order, scale or scale point, access) and the facts of the four Modbus tables.

Owns what a point is and the checks a point makes of itself; not how words are decoded
(`core.registers`), how points are grouped into requests (`core.block_plan`) nor what a
profile maps (`core.register_map`). Pure: no I/O, no clocks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

Table = Literal["holding", "input", "coil", "discrete"]
RegType = Literal[
    "int16", "uint16", "int32", "uint32", "float32", "int64", "uint64", "float64", "string", "bit", "bool"
]
#: byte and word order of a multi-byte value, as the letters of its bytes on the wire
Order = Literal["ABCD", "CDAB", "BADC", "DCBA"]
#: what `Point.word_order` accepts: an `Order`, or the older big (= ABCD) / little (= CDAB)
WordOrder = Literal["big", "little", "ABCD", "CDAB", "BADC", "DCBA"]
Access = Literal["r", "rw"]

TABLES: tuple[Table, ...] = ("holding", "input", "coil", "discrete")
BIT_TABLES = frozenset({"coil", "discrete"})
#: the tables a master can write: holding registers (06/16) and coils (05/15)
WRITABLE_TABLES = frozenset({"holding", "coil"})
#: the most one read may ask for: 125 registers (03/04) or 2000 bits (01/02)
READ_LIMIT: Mapping[str, int] = MappingProxyType(
    {"holding": 125, "input": 125, "coil": 2000, "discrete": 2000}
)
#: read function code per table
READ_FC: Mapping[str, int] = MappingProxyType({"coil": 1, "discrete": 2, "holding": 3, "input": 4})
#: registers per value of the fixed-size register types (a string's size is its `length`)
WORDS: Mapping[str, int] = MappingProxyType(
    {"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2, "int64": 4, "uint64": 4, "float64": 4,
     "bit": 1}
)  # fmt: skip
REGISTER_TYPES = frozenset(WORDS) | {"string"}
NUMBER_TYPES = frozenset(WORDS) - {"bit"}
LAST_ADDRESS = 0xFFFF
ORDER_OF: Mapping[str, Order] = MappingProxyType(
    {"big": "ABCD", "little": "CDAB", "ABCD": "ABCD", "CDAB": "CDAB", "BADC": "BADC", "DCBA": "DCBA"}
)


@dataclass(frozen=True, slots=True)
class Point:
    """One value in one of a device's four Modbus tables.

    `address` is the 0-based address as sent on the wire (a register, or a bit for coils
    and discrete inputs). `word_order` is the byte and word order as the profile wrote it:
    ABCD (big-endian words and bytes, the Modbus/SunSpec default), CDAB (low word first),
    BADC (bytes swapped in each word), DCBA (fully reversed), or the older big/little (=
    ABCD/CDAB); `order` gives it in the four-letter form. One-register types follow only the
    byte half of it (BADC and DCBA swap their two bytes). Engineering value = raw * `scale`,
    times 10 ** sf when sf is read from the int16 point `scale_point` (SunSpec sunssf; a
    `scale` of 0.001 with it turns a SunSpec W into kW).
    A string is `length` registers; a `bit` point is bit `bit` (0 = least significant) of one
    register; coils and discrete inputs are type `bool`. `min`/`max` are engineering units.
    """

    name: str
    address: int
    type: RegType
    word_order: WordOrder = "big"
    scale: float = 1.0
    unit: str = ""
    access: Access = "r"
    min: float | None = None
    max: float | None = None
    description: str = ""
    table: Table = "holding"
    length: int = 0
    bit: int | None = None
    scale_point: str | None = None

    def __post_init__(self) -> None:
        problem = point_problem(self)
        if problem is not None:
            raise ValueError(f"{self.name}: {problem}")

    @property
    def count(self) -> int:
        """Registers the point occupies (1 to 125), or 1 for a coil or discrete input."""
        if self.type == "string":
            return self.length
        return WORDS.get(self.type, 1)

    @property
    def end(self) -> int:
        """One past the last register (or bit) of the point."""
        return self.address + self.count

    @property
    def writable(self) -> bool:
        return self.access == "rw"

    @property
    def order(self) -> Order:
        """The byte and word order in the four-letter form (big = ABCD, little = CDAB)."""
        return ORDER_OF[self.word_order]

    @property
    def bits(self) -> bool:
        """True for coils and discrete inputs (single bits), False for registers."""
        return self.table in BIT_TABLES

    @property
    def text(self) -> bool:
        """True for a string point: its value is a str, not a number."""
        return self.type == "string"


def point_problem(p: Point) -> str | None:
    """What is wrong with a point by itself (None when nothing is), for `Point` and the schema."""
    if p.table not in READ_LIMIT:
        return f"unknown table {p.table!r} (known: {', '.join(TABLES)})"
    if p.table in BIT_TABLES:
        if p.type != "bool":
            what = "discrete input" if p.table == "discrete" else "coil"
            return f"a {what} is a single bit: type bool (or no type), not {p.type}"
    elif p.type not in REGISTER_TYPES:
        return f"unknown register type {p.type!r}"
    if p.word_order not in ORDER_OF:
        return f"unknown order {p.word_order!r} (ABCD, CDAB, BADC or DCBA)"
    if p.type == "string" and not 1 <= p.length <= READ_LIMIT[p.table]:
        return f"a string needs a length of 1..{READ_LIMIT[p.table]} registers, not {p.length}"
    if p.type != "string" and p.length:
        return f"length is for strings, not {p.type}"
    if p.type == "bit" and (p.bit is None or not 0 <= p.bit <= 15):
        return f"a bit point needs bit 0..15, not {p.bit}"
    if p.type != "bit" and p.bit is not None:
        return f"bit is for type bit, not {p.type}"
    if not 0 <= p.address <= LAST_ADDRESS or p.end > LAST_ADDRESS + 1:
        return f"registers {p.address}.. do not fit in 0..{LAST_ADDRESS}"
    if p.scale == 0 or not math.isfinite(p.scale):
        return f"scale must be finite and not 0, not {p.scale}"
    if p.type not in NUMBER_TYPES and (p.scale != 1 or p.scale_point is not None):
        return f"a {p.type} is not scaled (scale 1, no scale_point)"
    if p.type in ("bit", "bool") and p.order != "ABCD":
        return f"a {p.type} has no byte or word order"
    if p.type == "string" and p.order not in ("ABCD", "BADC"):
        return "a string's bytes are ABCD (as sent) or BADC (swapped in each register), not reordered words"
    if p.access == "rw" and p.table not in WRITABLE_TABLES:
        what = "a discrete input" if p.table == "discrete" else "an input register"
        return f"{what} is read-only (access r)"
    if p.access == "rw" and p.type == "bit":
        return "a bit of a register is read-only here (writing it would rewrite the whole register)"
    return None
