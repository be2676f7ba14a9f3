"""`raft_append.trim_append`: appendEntries that pysyncobj would apply by deleting entries
the follower already holds become Raft's equivalent; everything else passes unchanged."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from meshems.adapters.raft_append import trim_append


def log_of(terms: list[int], first: int = 1) -> list[tuple[bytes, int, int]]:
    return [(b"c%d" % (first + i), first + i, t) for i, t in enumerate(terms)]


def append(prev: int, prev_term: int, entries: list[tuple[bytes, int, int]], term: int = 2) -> dict[str, Any]:
    return {"type": "append_entries", "term": term, "commit_index": 40, "prevLogIdx": prev,
            "prevLogTerm": prev_term, "entries": entries}  # fmt: skip


def test_a_shorter_resend_of_the_leader_s_own_entries_keeps_the_log_whole() -> None:
    log = log_of([1] * 10 + [2] * 40)  # 1..50, the leader's term 2 from 11
    out = trim_append(append(30, 2, log[30:35]), log)  # 31..35 again
    assert out is not None and (out["prevLogIdx"], out["prevLogTerm"], out["entries"]) == (50, 2, [])
    assert out["commit_index"] == 40  # the rest of the message as it was
    heartbeat = trim_append(append(30, 2, []), log)
    assert heartbeat is not None and heartbeat["prevLogIdx"] == 50


def test_a_conflict_starts_the_message_at_it() -> None:
    log = log_of([1] * 20)
    new = [(b"c19", 19, 1), (b"x20", 20, 2), (b"x21", 21, 2)]  # 19 held, 20 conflicts
    out = trim_append(append(18, 1, new), log)
    assert out is not None and (out["prevLogIdx"], out["prevLogTerm"]) == (19, 1)
    assert out["entries"] == new[1:]  # pysyncobj deletes from 20, as Raft does


def test_older_entries_after_the_held_ones_are_left_to_pysyncobj_to_delete() -> None:
    log = log_of([1] * 10 + [2] * 10)  # 11..20 of term 2, from a leader before the message's (3)
    out = trim_append(append(10, 1, log[10:15], term=3), log)
    # 16..20 may not be that leader's: pysyncobj deletes them (it would commit what it keeps)
    assert out is not None and (out["prevLogIdx"], out["entries"]) == (15, [])
    assert trim_append(append(10, 1, [], term=3), log) is None


def test_what_is_not_a_plain_append_of_held_entries_passes_as_it_is() -> None:
    log = log_of([1] * 10)
    assert trim_append({"type": "request_vote", "term": 2}, log) is None
    assert trim_append(append(10, 1, []), log) is None  # at the log's end: nothing to delete
    assert trim_append(append(5, 2, []), log) is None  # prevLogTerm differs: pysyncobj refuses
    assert trim_append(append(12, 1, []), log) is None  # beyond the log
    assert trim_append(append(3, 1, [(b"y", 4, 2)]), log) is None  # the first entry conflicts
    assert trim_append({**append(3, 1, []), "transmission": "start"}, log) is None
    assert trim_append(append(3, 1, []), []) is None
    compacted = log_of([1] * 5, first=6)  # 6..10 after a compaction
    assert trim_append(append(3, 1, []), compacted) is None


@settings(max_examples=2000, deadline=None)
@given(
    first=st.integers(1, 5),
    terms=st.lists(st.integers(1, 4), max_size=8).map(sorted),
    prev=st.integers(0, 15),
    prev_term=st.integers(0, 5),
    new_terms=st.lists(st.integers(1, 5), max_size=5).map(sorted),
    term=st.integers(1, 6),
)
def test_a_rewrite_only_skips_entries_the_log_holds(
    first: int, terms: list[int], prev: int, prev_term: int, new_terms: list[int], term: int
) -> None:
    log = log_of(terms, first)
    entries = [(b"c%d" % (prev + 1 + i), prev + 1 + i, t) for i, t in enumerate(new_terms)]
    msg = append(prev, prev_term, entries, term)
    out = trim_append(msg, log)
    if out is None:
        return
    held = {(e[1], e[2]) for e in log}
    skipped = [e for e in entries if e[1] <= out["prevLogIdx"]]
    assert all((e[1], e[2]) in held for e in skipped)  # nothing dropped that the log lacks
    assert out["entries"] == entries[len(skipped) :]  # the rest as sent
    assert (out["prevLogIdx"], out["prevLogTerm"]) in held and out["prevLogIdx"] >= prev
    beyond = [t for _, i, t in log if i > (entries[-1][1] if entries else prev)]
    if out["prevLogIdx"] > (entries[-1][1] if entries else prev):  # moved past the message's end
        assert all(t == term for t in beyond)  # only over entries of the sender's own term
    assert {k: v for k, v in out.items() if k not in ("prevLogIdx", "prevLogTerm", "entries")} == {
        k: v for k, v in msg.items() if k not in ("prevLogIdx", "prevLogTerm", "entries")
    }
