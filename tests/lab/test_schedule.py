"""The lab's seeded fault schedule and partition split: determinism per seed and per pick,
faults one after another within the run, every kind once before any repeats, hold and gap
bounds, kind validation, and partition sides (minority size, leader side, disjoint cover).
Pure: no root, no processes."""

from __future__ import annotations

import random
from itertools import combinations, pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshems.lab.schedule import KINDS, Fault, make_schedule, split

#: at_s is rounded to 0.01 s after the fit test `t + hold <= duration`, so a fault's recorded
#: end may pass the duration or its gap look shorter by up to half a hundredth
ROUND_S = 0.005 + 1e-9


def assert_schedule_invariants(
    faults: list[Fault],
    duration_s: float,
    kinds: tuple[str, ...] = KINDS,
    hold_s: tuple[float, float] = (2.0, 5.0),
    gap_s: tuple[float, float] = (1.5, 3.0),
    warmup_s: float = 3.0,
) -> None:
    if faults:
        assert faults[0].at_s == pytest.approx(warmup_s, abs=ROUND_S)
    for f in faults:
        assert f.kind in kinds
        assert hold_s[0] <= f.hold_s <= hold_s[1]
        assert f.hold_s == round(f.hold_s, 2)
        assert f.at_s == round(f.at_s, 2)
        assert f.at_s >= warmup_s - ROUND_S
        assert f.at_s + f.hold_s <= duration_s + ROUND_S
        assert 0 <= f.pick < 1 << 16
    for a, b in pairwise(faults):
        gap = b.at_s - (a.at_s + a.hold_s)
        assert gap_s[0] - 2 * ROUND_S <= gap <= gap_s[1] + 2 * ROUND_S, (a, b)
    # the bag: every full run of len(kinds) faults holds each kind once; the tail has no repeats
    n = len(kinds)
    for start in range(0, len(faults), n):
        chunk = [f.kind for f in faults[start : start + n]]
        if len(chunk) == n:
            assert sorted(chunk) == sorted(kinds), chunk
        else:
            assert len(set(chunk)) == len(chunk), chunk


# --- make_schedule --------------------------------------------------------------------------


def test_same_seed_gives_the_same_schedule() -> None:
    assert make_schedule(7, 120.0) == make_schedule(7, 120.0)
    assert len(make_schedule(7, 120.0)) >= 10


def test_schedule_ignores_and_keeps_the_global_random_state() -> None:
    random.seed(1)
    first = make_schedule(42, 90.0)
    random.seed(2)
    assert make_schedule(42, 90.0) == first
    random.seed(3)
    expected = random.random()
    random.seed(3)
    make_schedule(42, 90.0)
    assert random.random() == expected


def test_different_seeds_give_different_schedules() -> None:
    schedules = [tuple(make_schedule(seed, 120.0)) for seed in range(40)]
    assert len(set(schedules)) == 40
    orders = {tuple(f.kind for f in s) for s in schedules}
    assert len(orders) > 20  # the kind order itself depends on the seed, not only the picks


def test_first_fault_comes_after_the_warmup() -> None:
    assert make_schedule(3, 60.0)[0].at_s == 3.0
    assert make_schedule(3, 60.0, warmup_s=10.0)[0].at_s == 10.0


def test_faults_never_overlap_and_gaps_are_within_bounds() -> None:
    for seed in range(50):
        faults = make_schedule(seed, 300.0)
        for a, b in pairwise(faults):
            assert b.at_s >= a.at_s + a.hold_s + 1.5 - 0.01, (seed, a, b)
            assert b.at_s <= a.at_s + a.hold_s + 3.0 + 0.01, (seed, a, b)


@pytest.mark.parametrize("duration_s", [10.0, 30.0, 60.0, 120.0, 600.0])
def test_every_fault_ends_within_the_duration(duration_s: float) -> None:
    for seed in range(50):
        for f in make_schedule(seed, duration_s):
            assert f.at_s + f.hold_s <= duration_s, (seed, f)


def test_every_kind_comes_once_before_any_repeats() -> None:
    for seed in range(30):
        faults = make_schedule(seed, 600.0)
        assert len(faults) >= 3 * len(KINDS)
        assert_schedule_invariants(faults, 600.0)
        first = [f.kind for f in faults[: len(KINDS)]]
        assert sorted(first) == sorted(KINDS)


def test_a_subset_of_kinds_is_used_as_the_bag() -> None:
    kinds = ("kill_leader", "cut_link")
    faults = make_schedule(5, 200.0, kinds=kinds)
    assert {f.kind for f in faults} == set(kinds)
    for start in range(0, len(faults) - 1, 2):
        assert {faults[start].kind, faults[start + 1].kind} == set(kinds)


def test_a_single_kind_repeats() -> None:
    faults = make_schedule(5, 60.0, kinds=("pause_node",))
    assert len(faults) >= 5
    assert {f.kind for f in faults} == {"pause_node"}


def test_holds_are_within_the_given_bounds() -> None:
    for seed in range(30):
        for f in make_schedule(seed, 200.0):
            assert 2.0 <= f.hold_s <= 5.0
        for f in make_schedule(seed, 200.0, hold_s=(0.5, 0.75)):
            assert 0.5 <= f.hold_s <= 0.75


def test_custom_gap_and_hold_are_respected() -> None:
    faults = make_schedule(11, 100.0, hold_s=(1.0, 1.0), gap_s=(4.0, 4.0), warmup_s=0.0)
    assert [f.at_s for f in faults] == [5.0 * k for k in range(len(faults))]
    assert all(f.hold_s == 1.0 for f in faults)
    assert len(faults) == 20  # starts 0, 5, ..., 95; the one at 95 ends at 96 <= 100


def test_too_short_a_run_has_no_faults() -> None:
    assert make_schedule(1, 0.0) == []
    assert make_schedule(1, 4.99) == []  # warmup 3 s + the shortest hold 2 s does not fit


def test_a_fault_that_fits_exactly_is_kept() -> None:
    faults = make_schedule(1, 5.0, hold_s=(2.0, 2.0))
    assert [(f.at_s, f.hold_s) for f in faults] == [(3.0, 2.0)]


def test_unknown_kind_raises_naming_it() -> None:
    with pytest.raises(ValueError, match="'drop_disk'"):
        make_schedule(1, 60.0, kinds=("kill_leader", "drop_disk"))
    with pytest.raises(ValueError, match="unknown fault kind 'Kill_Leader'"):
        make_schedule(1, 60.0, kinds=("Kill_Leader",))


def test_unknown_kind_message_lists_the_known_ones() -> None:
    with pytest.raises(ValueError) as err:
        make_schedule(1, 60.0, kinds=("nope",))
    for k in KINDS:
        assert k in str(err.value)


def test_empty_kinds_raise() -> None:
    with pytest.raises(ValueError, match="no fault kinds"):
        make_schedule(1, 60.0, kinds=())


def test_kinds_are_validated_even_when_nothing_would_be_scheduled() -> None:
    with pytest.raises(ValueError, match="'bogus'"):
        make_schedule(1, 0.0, kinds=("bogus",))
    with pytest.raises(ValueError, match="no fault kinds"):
        make_schedule(1, 0.0, kinds=())


def test_rounded_start_can_push_a_fault_past_the_duration() -> None:
    faults = make_schedule(864, 9.999)
    assert all(f.at_s + f.hold_s <= 9.999 for f in faults), faults


@settings(max_examples=200, deadline=None)
@given(
    seed=st.integers(min_value=0, max_value=2**63),
    duration_s=st.floats(min_value=0.0, max_value=900.0, allow_nan=False),
    kinds=st.lists(st.sampled_from(KINDS), min_size=1, max_size=len(KINDS), unique=True).map(tuple),
)
def test_schedule_properties(seed: int, duration_s: float, kinds: tuple[str, ...]) -> None:
    faults = make_schedule(seed, duration_s, kinds=kinds)
    assert faults == make_schedule(seed, duration_s, kinds=kinds)
    assert_schedule_invariants(faults, duration_s, kinds=kinds)
    # each fault takes at most 5 s hold + 3 s gap and at least 2 s + 1.5 s: the count follows
    assert len(faults) >= int((duration_s - 3.0 - 5.0) // 8.0)
    assert len(faults) <= max(0.0, (duration_s - 3.0 - 2.0) / 3.5 + 1.0) + 1e-9
    if duration_s < 5.0:
        assert faults == []


# --- split ----------------------------------------------------------------------------------


def nodes_of(n: int) -> list[str]:
    return [f"n{k}" for k in range(1, n + 1)]


@pytest.mark.parametrize("n", [3, 4, 5, 7])
@pytest.mark.parametrize("leader_in_minority", [True, False])
def test_split_sides(n: int, leader_in_minority: bool) -> None:
    nodes = nodes_of(n)
    for leader in nodes:
        for pick in range(25):
            minority, majority = split(nodes, leader, leader_in_minority, pick)
            assert len(minority) == (n - 1) // 2
            assert len(majority) == n - (n - 1) // 2
            assert len(majority) > len(minority)
            assert set(minority).isdisjoint(majority)
            assert set(minority) | set(majority) == set(nodes)
            assert minority == sorted(minority)
            assert majority == sorted(majority)
            assert (leader in minority) is leader_in_minority
            assert (leader in majority) is not leader_in_minority


@pytest.mark.parametrize("n", [3, 4, 5, 7])
def test_split_is_deterministic_per_pick(n: int) -> None:
    nodes = nodes_of(n)
    for pick in range(30):
        for side in (True, False):
            assert split(nodes, "n2", side, pick) == split(nodes, "n2", side, pick)


@pytest.mark.parametrize("n", [3, 4, 5, 7])
def test_split_does_not_depend_on_the_order_of_nodes(n: int) -> None:
    nodes = nodes_of(n)
    shuffled = list(reversed(nodes))
    for pick in range(30):
        for side in (True, False):
            assert split(nodes, "n1", side, pick) == split(shuffled, "n1", side, pick)


def test_split_does_not_mutate_its_input() -> None:
    nodes = ["n3", "n1", "n2", "n5", "n4"]
    split(nodes, "n1", True, 9)
    assert nodes == ["n3", "n1", "n2", "n5", "n4"]


@pytest.mark.parametrize(
    ("n", "side", "expected"), [(3, False, 2), (5, True, 4), (5, False, 6), (7, True, 15)]
)
def test_split_picks_cover_the_possible_minorities(n: int, side: bool, expected: int) -> None:
    """Over many picks, every possible minority with the leader on the asked side shows up."""
    nodes = nodes_of(n)
    seen = {tuple(split(nodes, "n1", side, pick)[0]) for pick in range(400)}
    others = [x for x in nodes if x != "n1"]
    size = (n - 1) // 2
    if side:
        possible = {tuple(sorted(("n1", *c))) for c in combinations(others, size - 1)}
    else:
        possible = {tuple(sorted(c)) for c in combinations(others, size)}
    assert len(possible) == expected
    assert seen == possible


def test_three_nodes_leader_alone_in_the_minority() -> None:
    for pick in range(20):
        assert split(["n1", "n2", "n3"], "n2", True, pick) == (["n2"], ["n1", "n3"])


def test_tiny_clusters_have_no_minority() -> None:
    assert split(["n1"], "n1", True, 0) == ([], ["n1"])
    assert split(["n1", "n2"], "n1", True, 3) == ([], ["n1", "n2"])
    assert split(["n1", "n2"], "n2", False, 3) == ([], ["n1", "n2"])
