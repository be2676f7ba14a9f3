"""Unit tests for `meshems.core.block_plan` (and `Profile.read_blocks` on top of it): points
of one table merge into one request up to the table's limit (125 registers, 2000 bits) or a
device's lower `max_read`, split across gaps wider than `max_gap`, never mix tables; scale
points always come along; a 60-point meter map reads in at most 2 requests at the Modbus limit."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshems.core.block_plan import plan_blocks
from meshems.core.point import READ_LIMIT, Point
from meshems.core.register_map import Profile


def plan(points: list[Point], max_gap: int = 8, **limits: int) -> list[tuple[str, int, int, int]]:
    return [
        (b.table, b.start, b.count, len(b.points))
        for b in plan_blocks(points, max_gap, {**READ_LIMIT, **limits})
    ]


def coils(n: int, start: int = 0, step: int = 1, table: str = "coil") -> list[Point]:
    return [Point(f"C{i}", start + i * step, "bool", table=table) for i in range(n)]  # type: ignore[arg-type]


def test_tables_never_share_a_request() -> None:
    pts = [
        Point("H", 0, "uint16"),
        Point("I", 1, "uint16", table="input"),
        Point("C", 0, "bool", table="coil"),
        Point("D", 1, "bool", table="discrete"),
        Point("H2", 1, "uint16"),
    ]
    assert plan(pts) == [("holding", 0, 2, 2), ("input", 1, 1, 1), ("coil", 0, 1, 1), ("discrete", 1, 1, 1)]


def test_coils_merge_up_to_2000_bits() -> None:
    assert plan(coils(2000)) == [("coil", 0, 2000, 2000)]
    assert plan(coils(2001)) == [("coil", 0, 2000, 2000), ("coil", 2000, 1, 1)]
    assert plan(coils(16, table="discrete"), coil=4) == [("discrete", 0, 16, 16)]  # the coil limit only
    assert plan(coils(16, table="discrete"), discrete=5) == [
        ("discrete", 0, 5, 5), ("discrete", 5, 5, 5), ("discrete", 10, 5, 5), ("discrete", 15, 1, 1)
    ]  # fmt: skip


def test_gaps_split_bits_and_registers_alike() -> None:
    assert plan(coils(3, step=9)) == [("coil", 0, 19, 3)]  # gaps of 8 merge
    assert plan(coils(3, step=10)) == [("coil", 0, 1, 1), ("coil", 10, 1, 1), ("coil", 20, 1, 1)]
    assert plan(coils(3, step=10), max_gap=9) == [("coil", 0, 21, 3)]
    regs = [Point("A", 0, "float64"), Point("B", 12, "float64"), Point("C", 16, "int64")]
    assert plan(regs) == [("holding", 0, 20, 3)]
    assert plan(regs, max_gap=7) == [("holding", 0, 4, 1), ("holding", 12, 8, 2)]


def test_max_read_of_a_device() -> None:
    pts = [Point(f"P{i}", 2 * i, "float32", table="input") for i in range(60)]  # 120 registers
    assert plan(pts) == [("input", 0, 120, 60)]
    assert plan(pts, input=80) == [("input", 0, 80, 40), ("input", 80, 40, 20)]
    assert plan(pts, input=50) == [("input", 0, 50, 25), ("input", 50, 50, 25), ("input", 100, 20, 10)]


def test_a_point_larger_than_one_read_is_refused() -> None:
    with pytest.raises(ValueError, match="point 'Sn' \\(16 registers\\) is larger than one read of 10"):
        plan([Point("Sn", 0, "string", length=16)], holding=10)


# A meter map with the gaps of a real one (SDM630-like: float32 parameters, holes between groups).
METER_60 = [
    *(Point(f"M{i}", 2 * i, "float32", table="input") for i in range(21)),  # 0x00-0x29
    *(Point(f"N{i}", 0x2A + 4 * i, "float32", table="input") for i in range(8)),  # every other parameter
    *(Point(f"E{i}", 0x50 + 2 * i, "float32", table="input") for i in range(6)),  # 0x50-0x5B
    *(Point(f"L{i}", 0xC8 + 2 * i, "float32", table="input") for i in range(25)),  # 0xC8-0xF9
]


def test_a_60_point_meter_reads_in_at_most_2_requests() -> None:
    assert len(METER_60) == 60
    profile = Profile("m60", "meter", "", "", tuple(METER_60), {})
    blocks = profile.read_blocks()
    assert [(b.start, b.count) for b in blocks] == [(0x00, 0x5C), (0xC8, 50)]
    assert sum(len(b.points) for b in blocks) == 60


def test_profile_limits_are_the_defaults_and_arguments_win() -> None:
    pts = tuple(Point(f"P{i}", 2 * i, "float32", table="input") for i in range(60))
    profile = Profile("m", "meter", "", "", pts, {}, max_read=50, max_gap=0)
    assert [b.count for b in profile.read_blocks()] == [50, 50, 20]
    assert [b.count for b in profile.read_blocks(max_count=125)] == [120]
    bits = Profile("c", "relay", "", "", tuple(coils(40)), {}, max_read_bits=16)
    assert [b.count for b in bits.read_blocks()] == [16, 16, 8]
    assert [b.count for b in bits.read_blocks(max_bits=2000)] == [40]
    with pytest.raises(ValueError, match="max_bits >= 1"):
        bits.read_blocks(max_bits=0)


def test_named_plans_bring_their_scale_points() -> None:
    pts = (
        Point("W", 0, "int16", scale_point="W_SF"),
        Point("Hz", 1, "uint16"),
        Point("W_SF", 40, "int16"),
    )
    profile = Profile("s", "meter", "", "", pts, {})
    assert [(b.start, [p.name for p in b.points]) for b in profile.read_blocks(names={"W"})] == [
        (0, ["W"]),
        (40, ["W_SF"]),
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["holding", "input", "coil", "discrete"]), st.integers(0, 3000), st.integers(1, 4)
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(0, 20),
    st.integers(2, 125),
    st.integers(1, 2000),
)
def test_every_point_in_exactly_one_block_of_its_table(
    raw: list[tuple[str, int, int]], max_gap: int, max_regs: int, max_bits: int
) -> None:
    points, used = [], set()
    for i, (table, address, size) in enumerate(raw):
        bits = table in ("coil", "discrete")
        count = 1 if bits else min(size, max_regs)
        span = {(table, a) for a in range(address, address + count)}
        if span & used:
            continue
        used |= span
        if bits:
            points.append(Point(f"P{i}", address, "bool", table=table))  # type: ignore[arg-type]
        else:
            points.append(Point(f"P{i}", address, "string", table=table, length=count))  # type: ignore[arg-type]
    limits = {"holding": max_regs, "input": max_regs, "coil": max_bits, "discrete": max_bits}
    blocks = plan_blocks(points, max_gap, limits)
    assert blocks == plan_blocks(list(reversed(points)), max_gap, limits)  # deterministic, order-free
    assert sorted(p.name for b in blocks for p in b.points) == sorted(p.name for p in points)
    for b in blocks:
        assert b.count <= limits[b.table]
        assert all(p.table == b.table and b.start <= p.address and p.end <= b.end for p in b.points)
        assert b.start == min(p.address for p in b.points) and b.end == max(p.end for p in b.points)
