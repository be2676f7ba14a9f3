"""Unit tests for `meshems.core.register_map`: points, read-block planning (every point in
exactly one block, deterministic), profile lookups that name what is known, frozen profiles
and the role table."""

from __future__ import annotations

import copy
import itertools
import pickle

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshems.core.profile_schema import parse_profile
from meshems.core.register_map import ROLES, WORDS, Point, Profile
from tests.core.test_profile_schema import base

TYPES = ["int16", "uint16", "int32", "uint32", "float32"]


# --- points ------------------------------------------------------------------------------


def test_point_properties() -> None:
    p = Point("W", 40070, "int32")
    assert (p.count, p.end, p.writable, p.word_order, p.scale, p.access) == (2, 40072, False, "big", 1.0, "r")
    assert Point("S", 7, "uint16", access="rw").writable
    assert [WORDS[t] for t in TYPES] == [1, 1, 2, 2, 2]
    with pytest.raises(ValueError, match="scale"):
        Point("X", 0, "int16", scale=0)
    with pytest.raises(ValueError, match="do not fit"):
        Point("X", 65535, "int32")


# --- read blocks -------------------------------------------------------------------------


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


# --- profiles and roles ------------------------------------------------------------------


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
