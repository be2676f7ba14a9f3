"""The lab's Jepsen-style checker on small synthetic histories and traces: a clean run passes
with the right counts; lost acknowledged writes, divergent nodes (across nodes, across lives,
within a life, final hashes), term regressions, snapshot coverage, stale actuations and minority
commits are each counted exactly; a property test feeds random consistent logs and corruptions.
Pure: no root, no processes."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshems.lab.checker import Op, Verdict, Window, check

Row = dict[str, Any]

#: (term, digest) of indices 1, 2, 3, ...
LOG: list[tuple[int, int]] = [(1, 101), (1, 102), (2, 103), (2, 104), (3, 105)]
NODES = ("n1", "n2", "n3")


def start() -> Row:
    return {"k": "start"}


def apply(i: int, t: int, d: int) -> Row:
    return {"k": "apply", "t": t, "i": i, "c": "OK", "d": d}


def restore(i: int, t: int) -> Row:
    return {"k": "restore", "i": i, "t": t}


def act(dev: str, t: int, i: int, kw: float = 1.0) -> Row:
    return {"k": "act", "dev": dev, "kw": kw, "t": t, "i": i}


def applies(first: int, last: int, log: list[tuple[int, int]] = LOG) -> list[Row]:
    """Apply rows for indices first..last (1-based, inclusive) of `log`."""
    return [apply(i, *log[i - 1]) for i in range(first, last + 1)]


def life(last: int) -> list[Row]:
    return [start(), *applies(1, last)]


def acked(op_id: int, index: int, node: str = "n1", submit_s: float = 0.0, done_s: float = 1.0) -> Op:
    """An op acknowledged at `index` with the log's term and digest there."""
    term, digest = LOG[index - 1]
    return Op(op_id, node, digest, submit_s, done_s, "ok", term, index)


def clean_traces(last: int = len(LOG)) -> dict[str, list[Row]]:
    return {n: life(last) for n in NODES}


def same_final(index: int = len(LOG), state_hash: str = "f00d" * 8) -> dict[str, tuple[int, str]]:
    return {n: (index, state_hash) for n in NODES}


# --- a clean run ----------------------------------------------------------------------------


def test_clean_history_passes_with_the_right_counts() -> None:
    ops = [
        acked(1, 2),
        Op(2, "n2", 999, 0.5, 1.5, "fail", code="E_NOT_LEADER"),
        Op(3, "n3", 998, 0.6, 4.0, "info", code="E_TIMEOUT"),
        acked(4, 4, node="n3"),
        acked(5, 5, node="n2"),
        Op(6, "n1", 997, 1.0, 2.0, "info", code="E_UNREACHABLE"),
    ]
    v = check(ops, clean_traces(), [], same_final())
    assert v.ok
    assert (v.operations, v.acknowledged, v.failed, v.indeterminate) == (6, 3, 1, 2)
    assert (v.lost, v.divergent, v.stale_term_actuations, v.minority_commits) == (0, 0, 0, 0)
    assert (v.term_regressions, v.covered_by_snapshot) == (0, 0)
    assert v.entries_checked == 3 * len(LOG)
    assert v.actuations_checked == 0
    assert v.problems == []


def test_empty_run_passes() -> None:
    v = check([], {}, [], {})
    assert v.ok
    assert v == Verdict()


def test_trace_without_a_start_row_is_one_life() -> None:
    traces = {n: applies(1, 5) for n in NODES}
    v = check([acked(1, 3)], traces, [], same_final())
    assert v.ok
    assert v.entries_checked == 15


def test_failed_and_indeterminate_ops_are_not_checked_for_loss() -> None:
    ops = [Op(1, "n1", 555, 0.0, 1.0, "fail", 9, 40), Op(2, "n1", 556, 0.0, 1.0, "info", 9, 41)]
    v = check(ops, clean_traces(), [], same_final())
    assert v.ok
    assert (v.lost, v.failed, v.indeterminate) == (0, 1, 1)


@pytest.mark.parametrize(
    "counter",
    ["lost", "divergent", "stale_term_actuations", "minority_commits", "term_regressions"],
)
def test_each_failure_counter_alone_makes_the_verdict_not_ok(counter: str) -> None:
    v = Verdict()
    assert v.ok
    setattr(v, counter, 1)
    assert not v.ok


def test_snapshot_coverage_alone_keeps_the_verdict_ok() -> None:
    assert Verdict(covered_by_snapshot=3, entries_checked=10, actuations_checked=2).ok


def test_problems_are_capped_at_fifty() -> None:
    ops = [Op(k, "n1", 1, 0.0, 1.0, "ok", 9, 100 + k) for k in range(30)]
    v = check(ops, clean_traces(), [], same_final())
    assert v.lost == 90  # 30 ops missing on each of 3 nodes
    assert len(v.problems) == 50


# --- lost acknowledged writes ---------------------------------------------------------------


def test_acked_op_missing_on_one_node_is_lost() -> None:
    traces = clean_traces()
    traces["n3"] = life(3)
    v = check([acked(1, 2), acked(7, 4)], traces, [], {"n1": (5, "a"), "n2": (5, "a"), "n3": (3, "b")})
    assert v.lost == 1
    assert v.divergent == 0
    assert not v.ok
    assert any(p.startswith("op 7 ") and "missing on n3" in p for p in v.problems), v.problems


def test_acked_op_missing_on_two_nodes_counts_once_per_node() -> None:
    traces = clean_traces()
    traces["n2"] = life(3)
    traces["n3"] = life(3)
    v = check([acked(1, 5)], traces, [], {})
    assert v.lost == 2
    assert v.divergent == 0


def test_acked_op_missing_everywhere_is_lost_on_every_node() -> None:
    op = Op(9, "n1", 4242, 0.0, 1.0, "ok", 3, 6)
    v = check([op], clean_traces(), [], same_final())
    assert v.lost == 3
    assert sum("op 9 " in p for p in v.problems) == 3


def test_acked_op_with_a_different_digest_is_lost() -> None:
    term, digest = LOG[2]
    op = Op(3, "n2", digest + 1, 0.0, 1.0, "ok", term, 3)
    v = check([op], clean_traces(), [], same_final())
    assert v.lost == 3  # present at index 3 on every node, but not the bytes the client sent
    assert v.divergent == 0
    assert any("op 3 (acked at 2/3)" in p for p in v.problems), v.problems


def test_acked_op_with_a_different_term_is_lost() -> None:
    term, digest = LOG[2]
    op = Op(3, "n2", digest, 0.0, 1.0, "ok", term + 1, 3)
    v = check([op], clean_traces(), [], same_final())
    assert v.lost == 3
    assert v.divergent == 0


def test_acked_op_replaced_on_one_node_is_lost_there_and_that_node_divergent() -> None:
    traces = clean_traces()
    traces["n2"] = [start(), *applies(1, 2), apply(3, 2, 777), *applies(4, 5)]
    v = check([acked(1, 3)], traces, [], same_final())
    assert v.lost == 1
    assert v.divergent == 1
    assert any(p.startswith("n2: index 3 is (2, 777)") for p in v.problems), v.problems


# --- divergence -----------------------------------------------------------------------------


def test_different_entry_at_one_index_blames_the_minority_node() -> None:
    traces = clean_traces()
    traces["n3"] = [start(), *applies(1, 1), apply(2, 1, 999), *applies(3, 5)]
    v = check([], traces, [], same_final())
    assert v.divergent == 1
    assert v.lost == 0
    assert not v.ok
    assert [p for p in v.problems if "index 2" in p] == ["n3: index 2 is (1, 999), others have (1, 102)"]


def test_different_term_at_one_index_is_divergent() -> None:
    traces = clean_traces()
    traces["n1"] = [start(), *applies(1, 3), apply(4, 3, 104), *applies(5, 5)]
    v = check([], traces, [], same_final())
    assert v.divergent == 1
    assert any(p.startswith("n1: index 4 is (3, 104)") for p in v.problems)


def test_two_nodes_each_wrong_at_different_indices_are_both_divergent() -> None:
    traces = clean_traces()
    traces["n1"] = [start(), apply(1, 1, 1), *applies(2, 5)]
    traces["n2"] = [start(), *applies(1, 4), apply(5, 3, 5)]
    v = check([], traces, [], same_final())
    assert v.divergent == 2


def test_a_node_wrong_at_many_indices_counts_once() -> None:
    traces = clean_traces()
    traces["n3"] = [start(), *(apply(i, t, d + 1000) for i, (t, d) in enumerate(LOG, start=1))]
    v = check([], traces, [], same_final())
    assert v.divergent == 1
    assert sum(p.startswith("n3: index") for p in v.problems) == 5


def test_replay_in_a_second_life_with_the_same_entries_is_fine() -> None:
    traces = clean_traces()
    traces["n2"] = [*life(3), *life(5)]
    traces["n3"] = [*life(5), *life(5)]
    v = check([acked(1, 4)], traces, [], same_final())
    assert v.ok
    assert v.entries_checked == 5 + 8 + 10
    assert v.problems == []


def test_replay_in_a_second_life_with_a_different_entry_is_divergent() -> None:
    traces = clean_traces()
    traces["n2"] = [*life(4), start(), *applies(1, 2), apply(3, 2, 333), *applies(4, 5)]
    v = check([], traces, [], same_final())
    assert v.divergent == 1
    assert any(p == "n2: index 3 applied as (2, 103) and later as (2, 333)" for p in v.problems), v.problems


def test_replay_alone_on_a_single_node_is_checked_against_itself() -> None:
    traces = {"n1": [*life(3), start(), *applies(1, 1), apply(2, 1, 5)]}
    v = check([], traces, [], {})
    assert v.divergent == 1


def test_index_going_back_within_one_life_is_divergent() -> None:
    traces = clean_traces()
    traces["n1"] = [start(), *applies(1, 2), *applies(1, 1), *applies(3, 5)]  # all of term 1 up to 2
    v = check([], traces, [], same_final())
    assert v.divergent == 1
    assert v.term_regressions == 0
    assert v.problems == ["n1: applied index 1 after 2 in one life"]


def test_same_index_twice_within_one_life_is_divergent() -> None:
    traces = clean_traces()
    traces["n2"] = [start(), *applies(1, 3), *applies(3, 5)]
    v = check([], traces, [], same_final())
    assert v.divergent == 1
    assert "n2: applied index 3 after 3 in one life" in v.problems


def test_gaps_in_indices_within_one_life_are_not_divergence() -> None:
    traces = {"n1": [start(), *applies(1, 1), *applies(3, 5)]}
    v = check([], traces, [], {})
    assert v.ok


def test_applying_below_a_restored_snapshot_in_the_same_life_is_divergent() -> None:
    traces = clean_traces()
    traces["n3"] = [start(), restore(3, 2), *applies(2, 5)]
    v = check([], traces, [], same_final())
    assert v.divergent == 1
    assert "n3: applied index 2 after 3 in one life" in v.problems


# --- terms ----------------------------------------------------------------------------------


def test_term_decreasing_within_a_life_is_a_term_regression() -> None:
    log = [(1, 11), (3, 12), (2, 13), (3, 14)]
    traces = {"n1": [start(), *applies(1, 4, log)]}
    v = check([], traces, [], {})
    assert v.term_regressions == 1
    assert v.divergent == 0
    assert not v.ok
    assert v.problems == ["n1: index 3 has term 2 after term 3"]


def test_term_regression_counts_once_per_node() -> None:
    log = [(2, 11), (1, 12)]
    traces = {n: [start(), *applies(1, 2, log)] for n in NODES}
    v = check([], traces, [], {})
    assert v.term_regressions == 3
    assert v.divergent == 0


def test_term_after_restore_must_not_go_below_the_snapshot_term() -> None:
    traces = {"n1": [start(), restore(5, 4), apply(6, 3, 66)]}
    v = check([], traces, [], {})
    assert v.term_regressions == 1
    assert v.problems == ["n1: index 6 has term 3 after term 4"]


def test_terms_start_over_in_a_new_life() -> None:
    traces = {"n1": [*life(5), *life(5)]}  # term 3 at the end of life one, term 1 at the start of two
    v = check([], traces, [], {})
    assert v.term_regressions == 0
    assert v.ok


# --- snapshots ------------------------------------------------------------------------------


def test_acked_op_under_a_restored_snapshot_is_covered_not_lost() -> None:
    traces = clean_traces()
    traces["n3"] = [start(), restore(3, 2), *applies(4, 5)]
    v = check([acked(1, 2), acked(2, 3), acked(3, 4)], traces, [], same_final())
    assert v.ok
    assert v.lost == 0
    assert v.covered_by_snapshot == 2  # ops at 2 and 3 on n3
    assert v.entries_checked == 5 + 5 + 2


def test_snapshot_coverage_holds_across_lives() -> None:
    traces = clean_traces()
    traces["n3"] = [start(), restore(4, 2), *applies(5, 5), start(), *applies(5, 5)]
    v = check([acked(1, 1), acked(2, 5)], traces, [], same_final())
    assert v.ok
    assert v.covered_by_snapshot == 1


def test_coverage_is_the_highest_snapshot_ever_restored() -> None:
    traces = clean_traces()
    traces["n3"] = [start(), restore(4, 2), start(), restore(2, 1)]
    v = check([acked(1, 3)], traces, [], {})
    assert v.covered_by_snapshot == 1
    assert v.lost == 0


def test_acked_op_above_the_restored_snapshot_and_missing_is_lost() -> None:
    traces = clean_traces()
    traces["n3"] = [start(), restore(2, 1), *applies(3, 3)]
    v = check([acked(1, 2), acked(2, 4)], traces, [], {})
    assert v.covered_by_snapshot == 1
    assert v.lost == 1
    assert any("op 2 " in p and "missing on n3" in p for p in v.problems)


def test_acked_op_present_with_a_wrong_digest_is_lost_even_under_a_snapshot() -> None:
    traces = clean_traces()
    traces["n3"] = [start(), apply(1, 1, 1), start(), restore(3, 2), *applies(4, 5)]
    v = check([acked(1, 1)], traces, [], same_final())
    assert v.lost == 1
    assert v.covered_by_snapshot == 0


def test_acked_op_without_a_position_is_not_covered_by_a_snapshot_nobody_restored() -> None:
    op = Op(1, "n1", 4242, 0.0, 1.0, "ok")  # term 0, index 0
    v = check([op], clean_traces(), [], same_final())
    assert v.covered_by_snapshot == 0
    assert not v.ok


# --- actuations -----------------------------------------------------------------------------


def test_actuation_tokens_going_forward_are_fine() -> None:
    traces = clean_traces()
    traces["n1"] = [*traces["n1"], act("n1-bat", 1, 2), act("n1-bat", 1, 5), act("n1-bat", 2, 3)]
    v = check([], traces, [], same_final())
    assert v.ok
    assert v.actuations_checked == 3
    assert v.stale_term_actuations == 0


def test_actuation_token_going_back_is_stale() -> None:
    traces = clean_traces()
    traces["n1"] = [*traces["n1"], act("n1-bat", 2, 3), act("n1-bat", 1, 9)]
    v = check([], traces, [], same_final())
    assert v.stale_term_actuations == 1
    assert not v.ok
    assert v.problems == ["n1: actuated n1-bat with (1, 9) after (2, 3)"]


def test_actuation_index_going_back_in_the_same_term_is_stale() -> None:
    traces = {"n1": [act("n1-bat", 2, 7), act("n1-bat", 2, 6)]}
    v = check([], traces, [], {})
    assert v.stale_term_actuations == 1


def test_equal_actuation_tokens_are_a_refresh() -> None:
    traces = {"n1": [act("n1-bat", 2, 3, 1.0), act("n1-bat", 2, 3, 1.0), act("n1-bat", 2, 3, 1.0)]}
    v = check([], traces, [], {})
    assert v.stale_term_actuations == 0
    assert v.actuations_checked == 3
    assert v.ok


def test_every_actuation_below_the_best_token_is_stale() -> None:
    traces = {"n1": [act("n1-bat", 3, 1), act("n1-bat", 2, 1), act("n1-bat", 2, 5), act("n1-bat", 3, 1)]}
    v = check([], traces, [], {})
    assert v.stale_term_actuations == 2


def test_devices_are_checked_independently() -> None:
    traces = {"n1": [act("n1-bat", 2, 5), act("n1-pv", 1, 1), act("n1-bat", 2, 6), act("n1-pv", 1, 2)]}
    v = check([], traces, [], {})
    assert v.stale_term_actuations == 0
    assert v.actuations_checked == 4


def test_nodes_are_checked_independently() -> None:
    traces = {"n1": [act("bat", 2, 5)], "n2": [act("bat", 1, 1)]}
    v = check([], traces, [], {})
    assert v.stale_term_actuations == 0


def test_stale_actuation_across_lives_is_counted() -> None:
    traces = {"n1": [start(), act("n1-bat", 2, 5), start(), act("n1-bat", 1, 9), act("n1-bat", 2, 5)]}
    v = check([], traces, [], {})
    assert v.stale_term_actuations == 1
    assert v.actuations_checked == 3


def test_actuation_rows_do_not_disturb_the_apply_checks() -> None:
    traces = clean_traces()
    traces["n2"] = [start(), apply(1, 1, 101), act("n2-bat", 9, 99), *applies(2, 5)]
    v = check([acked(1, 3)], traces, [], same_final())
    assert v.ok
    assert v.entries_checked == 15


# --- minority commits -----------------------------------------------------------------------

WINDOW = Window(10.0, 20.0, frozenset({"n3"}))


def test_op_acked_by_a_minority_node_inside_the_window_is_a_minority_commit() -> None:
    v = check([acked(1, 3, node="n3", submit_s=11.0, done_s=12.0)], clean_traces(), [WINDOW], same_final())
    assert v.minority_commits == 1
    assert not v.ok
    assert v.problems == ["op 1 acknowledged by minority node n3 during a partition"]


def test_window_bounds_are_inclusive() -> None:
    v = check([acked(1, 3, node="n3", submit_s=10.0, done_s=20.0)], clean_traces(), [WINDOW], same_final())
    assert v.minority_commits == 1


@pytest.mark.parametrize(("submit_s", "done_s"), [(9.99, 12.0), (11.0, 20.01), (5.0, 25.0), (21.0, 22.0)])
def test_op_not_wholly_inside_the_window_is_not_a_minority_commit(submit_s: float, done_s: float) -> None:
    op = acked(1, 3, node="n3", submit_s=submit_s, done_s=done_s)
    v = check([op], clean_traces(), [WINDOW], same_final())
    assert v.minority_commits == 0
    assert v.ok


def test_op_acked_by_a_majority_node_inside_the_window_is_fine() -> None:
    v = check([acked(1, 3, node="n1", submit_s=11.0, done_s=12.0)], clean_traces(), [WINDOW], same_final())
    assert v.minority_commits == 0
    assert v.ok


@pytest.mark.parametrize("outcome", ["fail", "info"])
def test_unacknowledged_minority_op_is_not_a_minority_commit(outcome: str) -> None:
    op = Op(1, "n3", 12345, 11.0, 12.0, outcome, code="E_TIMEOUT")
    v = check([op], clean_traces(), [WINDOW], same_final())
    assert v.minority_commits == 0
    assert v.ok


def test_minority_commits_are_counted_per_op_and_window() -> None:
    windows = [WINDOW, Window(30.0, 40.0, frozenset({"n1", "n2"}))]
    ops = [
        acked(1, 1, node="n3", submit_s=11.0, done_s=12.0),
        acked(2, 2, node="n3", submit_s=13.0, done_s=19.0),
        acked(3, 3, node="n3", submit_s=31.0, done_s=32.0),  # n3 is the majority in window two
        acked(4, 4, node="n2", submit_s=31.0, done_s=32.0),
        acked(5, 5, node="n2", submit_s=11.0, done_s=12.0),  # n2 is the majority in window one
    ]
    v = check(ops, clean_traces(), windows, same_final())
    assert v.minority_commits == 3
    assert v.lost == 0


# --- final state hashes ---------------------------------------------------------------------


def test_equal_index_with_a_different_hash_is_divergent() -> None:
    final = {"n1": (5, "a" * 64), "n2": (5, "a" * 64), "n3": (5, "b" * 64)}
    v = check([], clean_traces(), [], final)
    assert v.divergent == 1
    assert not v.ok
    assert v.problems == [f"n3: state hash {'b' * 12} at index 5, others {'a' * 12}"]


def test_different_indices_are_not_compared() -> None:
    final = {"n1": (5, "a" * 64), "n2": (5, "a" * 64), "n3": (4, "b" * 64)}
    v = check([], clean_traces(), [], final)
    assert v.divergent == 0
    assert v.ok


def test_final_hashes_are_compared_per_index() -> None:
    final = {"n1": (5, "a"), "n2": (4, "c"), "n3": (4, "d"), "n4": (5, "b"), "n5": (5, "a")}
    v = check([], {}, [], final)
    assert v.divergent == 2  # n4 against n1/n5 at 5; one of n2/n3 at 4


def test_a_node_divergent_twice_counts_once() -> None:
    traces = clean_traces()
    traces["n3"] = [start(), *applies(1, 1), apply(2, 1, 999), *applies(3, 5)]
    final = {"n1": (5, "a"), "n2": (5, "a"), "n3": (5, "b")}
    v = check([], traces, [], final)
    assert v.divergent == 1


# --- property: random consistent logs -------------------------------------------------------


@st.composite
def consistent_runs(draw: st.DrawFn) -> tuple[list[tuple[int, int]], dict[str, list[Row]], list[Op]]:
    """A random log; each of three nodes applies a prefix of it, maybe restarting (replay from
    the start, or a snapshot restore then the rest); acked ops at indices every node has or
    has under a snapshot."""
    n = draw(st.integers(min_value=1, max_value=25))
    steps = draw(st.lists(st.integers(min_value=0, max_value=2), min_size=n, max_size=n))
    digests = draw(st.lists(st.integers(min_value=0, max_value=2**32 - 1), min_size=n, max_size=n))
    terms, term = [], 1
    for s in steps:
        term += s
        terms.append(term)
    log = list(zip(terms, digests, strict=True))

    traces: dict[str, list[Row]] = {}
    has: dict[str, set[int]] = {}
    for node in NODES:
        p = draw(st.integers(min_value=0, max_value=n))
        rows = [start(), *applies(1, p, log)]
        present = set(range(1, p + 1))
        mode = draw(st.sampled_from(["none", "replay", "restore"]))
        if mode == "replay":
            q = draw(st.integers(min_value=p, max_value=n))
            rows += [start(), *applies(1, q, log)]
            present |= set(range(1, q + 1))
        elif mode == "restore":
            k = draw(st.integers(min_value=1, max_value=n))
            q = draw(st.integers(min_value=k, max_value=n))
            rows += [start(), restore(k, log[k - 1][0]), *applies(k + 1, q, log)]
            present |= set(range(1, q + 1))  # below k: applied or under the snapshot
        traces[node] = rows
        has[node] = present

    common = sorted(set.intersection(*has.values()))
    chosen = draw(st.lists(st.sampled_from(common), max_size=8)) if common else []
    ops = [
        Op(k, draw(st.sampled_from(NODES)), log[i - 1][1], float(k), float(k) + 0.5, "ok", log[i - 1][0], i)
        for k, i in enumerate(chosen)
    ]
    return log, traces, ops


@settings(max_examples=300, deadline=None)
@given(run=consistent_runs(), data=st.data())
def test_consistent_runs_pass_and_a_corrupted_entry_is_divergent(
    run: tuple[list[tuple[int, int]], dict[str, list[Row]], list[Op]], data: st.DataObject
) -> None:
    _log, traces, ops = run
    finals = {
        node: max((r["i"] for r in rows if r["k"] in ("apply", "restore")), default=0)
        for node, rows in traces.items()
    }
    final = {node: (i, f"hash-{i}") for node, i in finals.items()}
    v = check(ops, traces, [], final)
    assert v.ok, v.problems
    assert v.lost == 0
    assert v.divergent == 0
    assert v.acknowledged == len(ops)
    assert v.entries_checked == sum(r["k"] == "apply" for rows in traces.values() for r in rows)
    applied = {n: {r["i"] for r in rows if r["k"] == "apply"} for n, rows in traces.items()}
    assert v.covered_by_snapshot == sum(op.index not in applied[n] for op in ops for n in NODES)

    # corrupt one applied entry whose index some other row also applied (another node, or
    # this node in another life), so there is something to disagree with
    count: dict[int, int] = {}
    for rows in traces.values():
        for r in rows:
            if r["k"] == "apply":
                count[r["i"]] = count.get(r["i"], 0) + 1
    candidates = [
        (node, pos)
        for node, rows in traces.items()
        for pos, r in enumerate(rows)
        if r["k"] == "apply" and count[r["i"]] >= 2
    ]
    if not candidates:
        return
    node, pos = data.draw(st.sampled_from(candidates))
    bad = {n: list(rows) for n, rows in traces.items()}
    row = bad[node][pos]
    bad[node][pos] = {**row, "d": (row["d"] + 1) % 2**32}
    v2 = check(ops, bad, [], final)
    assert v2.divergent >= 1
    assert not v2.ok
