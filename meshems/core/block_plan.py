"""The read plan of a device: its points grouped into as few Modbus requests as allowed.

Owns `Block` (one request: a table, a start, a count and the points it holds) and
`plan_blocks`: neighbouring points of the same table share a request up to the table's
limit (or a device's lower `max_read`) and unless more than `max_gap` unused addresses lie
between them. Deterministic; every point lands in exactly one block. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from meshems.core.point import TABLES, Point, Table


@dataclass(frozen=True, slots=True)
class Block:
    """Registers (or bits) read with one request: `count` from `start` of `table`, holding `points`."""

    start: int
    count: int
    points: tuple[Point, ...]
    table: Table = "holding"

    @property
    def end(self) -> int:
        return self.start + self.count

    @property
    def bits(self) -> bool:
        return self.table in ("coil", "discrete")


def plan_blocks(points: Iterable[Point], max_gap: int, limits: Mapping[str, int]) -> tuple[Block, ...]:
    """`points` merged into read requests, table by table (holding, input, coil, discrete),
    each table's blocks by address.

    The next point (by address) joins the current block when at most `max_gap` unused
    addresses lie between them and the block stays within `limits[table]` registers or bits.
    A point larger than its table's limit cannot be read at all: ValueError naming it.
    """
    by_table: dict[str, list[Point]] = {t: [] for t in TABLES}
    for p in points:
        by_table[p.table].append(p)
    blocks: list[Block] = []
    for table in TABLES:
        selected = sorted(by_table[table], key=lambda p: (p.address, p.count, p.name))
        if not selected:
            continue
        limit = limits[table]
        current: list[Point] = []
        start = end = 0
        for p in selected:
            if p.count > limit:
                raise ValueError(
                    f"point {p.name!r} ({p.count} registers) is larger than one read of {limit} allows"
                )
            if current and p.address - end <= max_gap and max(end, p.end) - start <= limit:
                current.append(p)
                end = max(end, p.end)
                continue
            if current:
                blocks.append(Block(start, end - start, tuple(current), table))
            current, start, end = [p], p.address, p.end
        blocks.append(Block(start, end - start, tuple(current), table))
    return tuple(blocks)
