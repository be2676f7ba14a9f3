"""The four Modbus tables of a simulated device as pymodbus keeps them: the SimData blocks
that cover a profile's points (coils, discrete inputs, holding, input registers), placing
a point's words into a table's registers (bits packed 16 to a register) and finding the
points a write request sets. Pure data handling for `sim.sim_site`: no sockets, no clocks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pymodbus.simulator import DataType, SimData

from meshems.core.point import BIT_TABLES, LAST_ADDRESS, TABLES, Point
from meshems.core.register_map import Profile

#: every simulated device also serves these holding registers (the flat built-in maps live here)
SIM_BLOCK_START = 40000
SIM_BLOCK_COUNT = 300
#: function code -> the table it reads or writes
TABLE_OF_FC = {1: "coil", 5: "coil", 15: "coil", 2: "discrete", 3: "holding", 6: "holding", 16: "holding",
               22: "holding", 23: "holding", 4: "input"}  # fmt: skip

SimBlocks = tuple[list[SimData], list[SimData], list[SimData], list[SimData]]


def sim_blocks(profile: Profile, image: Mapping[int, int] | None = None) -> SimBlocks:
    """One SimData per table covering the profile's points of it (holding also covers
    40000-40299 and every address of `image`, a static holding-register image such as a
    SunSpec chain, which it starts with); a table without points gets one address so pymodbus
    can build it."""
    out: list[list[SimData]] = []
    for table in ("coil", "discrete", "holding", "input"):  # pymodbus' order of the tuple
        pts = [p for p in profile.points if p.table == table]
        spans = [(p.address, p.end) for p in pts]
        if table == "holding":
            spans.append((SIM_BLOCK_START, SIM_BLOCK_START + SIM_BLOCK_COUNT))
            if image:
                spans.append((min(image), max(image) + 1))
        if not spans:
            spans = [(LAST_ADDRESS, LAST_ADDRESS + 1)]
        lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
        if table in BIT_TABLES:
            out.append([SimData(lo, count=hi - lo, values=False, datatype=DataType.BITS)])
        elif table == "holding" and image:
            values = [image.get(a, 0) for a in range(lo, hi)]
            out.append([SimData(lo, values=values, datatype=DataType.REGISTERS)])
        else:
            out.append([SimData(lo, count=hi - lo, values=0, datatype=DataType.REGISTERS)])
    return out[0], out[1], out[2], out[3]


def points_by_table(profile: Profile) -> dict[str, list[Point]]:
    return {t: sorted((p for p in profile.points if p.table == t), key=lambda p: p.address) for t in TABLES}


def touched(points: Sequence[Point], bits: bool, address: int, count: int) -> list[Point]:
    """The points a request of `count` (registers, or 16-bit groups of bits) at `address` covers."""
    end = address + count * (16 if bits else 1)
    return [p for p in points if p.address < end and p.end > address]


def put(point: Point, words: Sequence[int], start: int, regs: list[int]) -> None:
    """Place a point's encoded words (or its one bit) into a table's registers starting at
    `start` (for bit tables `start` counts 16-bit groups, as pymodbus' block does)."""
    if point.bits:
        i, mask = point.address // 16 - start, 1 << (point.address % 16)
        if 0 <= i < len(regs):
            regs[i] = regs[i] | mask if words[0] else regs[i] & ~mask
        return
    off = point.address - start
    if point.type == "bit":  # one bit of a register other bit points may share
        if 0 <= off < len(regs):
            mask = 1 << (point.bit or 0)
            regs[off] = regs[off] | mask if words[0] & mask else regs[off] & ~mask
        return
    if off >= 0 and off + len(words) <= len(regs):
        regs[off : off + len(words)] = words


def written(
    points: Sequence[Point], address: int, values: Sequence[int | bool]
) -> list[tuple[Point, list[int]]]:
    """The points a write of `values` at `address` sets wholly, with their new words (or bit);
    a partial write of a multi-register point is left out (pymodbus stores it as sent)."""
    end = address + len(values)
    return [
        (p, [int(w) for w in values[p.address - address : p.end - address]])
        for p in points
        if address <= p.address and p.end <= end
    ]
