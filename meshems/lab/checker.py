"""The Jepsen-style checker of a lab run: a pure function of the client's history, the
nodes' apply/actuation traces, the partition windows and the final state hashes.

Owns the verdict (lost acknowledged writes, divergent nodes, stale-term actuations, commits
on a minority side; the rules are `check`'s). Pure: no clock, no I/O (the runner reads files).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Op:
    """One client operation: a setpoint write sent to one node."""

    op_id: int
    node: str
    digest: int  # CRC-32 of the framed entry bytes the node will append
    submit_s: float
    done_s: float
    outcome: str  # "ok" (acknowledged), "fail" (definitely not committed), "info" (unknown)
    term: int = 0
    index: int = 0
    code: str = ""


@dataclass(frozen=True)
class Window:
    """A partition in force from start_s to end_s; `minority` nodes could not commit."""

    start_s: float
    end_s: float
    minority: frozenset[str]


@dataclass
class Verdict:
    operations: int = 0
    acknowledged: int = 0
    failed: int = 0
    indeterminate: int = 0
    lost: int = 0
    divergent: int = 0
    stale_term_actuations: int = 0
    minority_commits: int = 0
    term_regressions: int = 0
    covered_by_snapshot: int = 0
    entries_checked: int = 0
    actuations_checked: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            self.lost == 0
            and self.divergent == 0
            and self.stale_term_actuations == 0
            and self.minority_commits == 0
            and self.term_regressions == 0
        )

    def note(self, text: str) -> None:
        if len(self.problems) < 50:
            self.problems.append(text)


def _lives(rows: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    lives: list[list[dict[str, Any]]] = []
    for r in rows:
        if r.get("k") == "start" or not lives:
            lives.append([])
        if r.get("k") != "start":
            lives[-1].append(r)
    return lives


def check(
    ops: list[Op],
    traces: dict[str, list[dict[str, Any]]],
    windows: list[Window],
    final: dict[str, tuple[int, str]],
) -> Verdict:
    """The verdict on one run; `final` maps node -> (applied index, state hash) from one sweep.

    What it checks, per node (a node's trace has one "life" per process start):
    - the entries it applied have strictly increasing indices within a life, with
      non-decreasing terms; an index applied twice (a replay after restart) has the same
      term and entry digest every time;
    - every index has the same (term, digest) on every node that applied it;
    - every acknowledged write is at the index and term its acknowledgement named, with the
      digest of the bytes the client sent, on every node (or under a snapshot it restored);
    - setpoints it actuated carry non-decreasing (term, index) per device;
    - nodes that answered the final sweep at the same applied index have the same state hash.
    A write acknowledged by a node on the minority side of a partition, sent after the
    partition was in force and answered before it healed, is a minority commit.
    """
    v = Verdict(operations=len(ops))
    outcomes = Counter(op.outcome for op in ops)
    v.acknowledged, v.failed, v.indeterminate = outcomes["ok"], outcomes["fail"], outcomes["info"]
    bad_nodes: set[str] = set()
    entries: dict[str, dict[int, tuple[int, int]]] = {}  # node -> index -> (term, digest)
    restored: dict[str, int] = {}  # node -> the highest index covered by a restored snapshot
    for node, rows in traces.items():
        entries[node], restored[node] = _applied(v, node, rows, bad_nodes)
    _check_agreement(v, entries, bad_nodes)
    _check_acknowledged(v, ops, entries, restored)
    _check_actuations(v, traces)
    _check_minority_commits(v, ops, windows)
    _check_final_hashes(v, final, bad_nodes)
    v.divergent = len(bad_nodes)
    return v


def _applied(
    v: Verdict, node: str, rows: list[dict[str, Any]], bad_nodes: set[str]
) -> tuple[dict[int, tuple[int, int]], int]:
    """One node's applied entries (index -> (term, digest)) and the highest index a restored
    snapshot covered; indices increase and terms never fall within a life, replays agree."""
    seen: dict[int, tuple[int, int]] = {}
    covered = 0
    for life in _lives(rows):
        last_i, last_t = 0, 0
        for r in life:
            if r["k"] == "restore":
                covered = max(covered, int(r["i"]))
                last_i, last_t = int(r["i"]), int(r["t"])
            elif r["k"] == "apply":
                i, t, d = int(r["i"]), int(r["t"]), int(r["d"])
                v.entries_checked += 1
                if i <= last_i:
                    v.note(f"{node}: applied index {i} after {last_i} in one life")
                    bad_nodes.add(node)
                if t < last_t:
                    v.term_regressions += 1
                    v.note(f"{node}: index {i} has term {t} after term {last_t}")
                last_i, last_t = i, t
                prev = seen.get(i)
                if prev is not None and prev != (t, d):
                    v.note(f"{node}: index {i} applied as {prev} and later as {(t, d)}")
                    bad_nodes.add(node)
                seen[i] = (t, d)
    return seen, covered


def _check_agreement(v: Verdict, entries: dict[str, dict[int, tuple[int, int]]], bad_nodes: set[str]) -> None:
    """The same entry at every index on every node (majority opinion wins the blame)."""
    by_index: dict[int, dict[str, tuple[int, int]]] = defaultdict(dict)
    for node, seen in entries.items():
        for i, td in seen.items():
            by_index[i][node] = td
    for i, opinions in by_index.items():
        if len(set(opinions.values())) > 1:
            common, _ = Counter(opinions.values()).most_common(1)[0]
            for node, td in opinions.items():
                if td != common:
                    bad_nodes.add(node)
                    v.note(f"{node}: index {i} is {td}, others have {common}")


def _check_acknowledged(
    v: Verdict, ops: list[Op], entries: dict[str, dict[int, tuple[int, int]]], restored: dict[str, int]
) -> None:
    """Every acknowledged write, where its acknowledgement said, on every node."""
    for op in ops:
        if op.outcome != "ok":
            continue
        if op.index <= 0:
            v.lost += 1
            v.note(f"op {op.op_id} was acknowledged by {op.node} without a log position")
            continue
        for node, seen in entries.items():
            got = seen.get(op.index)
            if got is None:
                if op.index <= restored[node]:
                    v.covered_by_snapshot += 1
                    continue
                v.lost += 1
                v.note(f"op {op.op_id} (acked by {op.node} at {op.term}/{op.index}) missing on {node}")
            elif got != (op.term, op.digest):
                v.lost += 1
                v.note(f"op {op.op_id} (acked at {op.term}/{op.index}) is {got} on {node}")


def _check_actuations(v: Verdict, traces: dict[str, list[dict[str, Any]]]) -> None:
    """Actuation tokens never go back, per node and device."""
    for node, rows in traces.items():
        best: dict[str, tuple[int, int]] = {}
        for r in rows:
            if r.get("k") != "act":
                continue
            v.actuations_checked += 1
            token = (int(r["t"]), int(r["i"]))
            dev = str(r["dev"])
            if dev in best and token < best[dev]:
                v.stale_term_actuations += 1
                v.note(f"{node}: actuated {dev} with {token} after {best[dev]}")
            best[dev] = max(best.get(dev, token), token)


def _check_minority_commits(v: Verdict, ops: list[Op], windows: list[Window]) -> None:
    """Nothing acknowledged from a minority side while the partition held."""
    for op in ops:
        if op.outcome != "ok":
            continue
        for w in windows:
            if op.node in w.minority and op.submit_s >= w.start_s and op.done_s <= w.end_s:
                v.minority_commits += 1
                v.note(f"op {op.op_id} acknowledged by minority node {op.node} during a partition")


def _check_final_hashes(v: Verdict, final: dict[str, tuple[int, str]], bad_nodes: set[str]) -> None:
    """Equal state hashes at equal applied indices."""
    by_final: dict[int, dict[str, str]] = defaultdict(dict)
    for node, (index, digest) in final.items():
        by_final[index][node] = digest
    for index, hashes in by_final.items():
        if len(set(hashes.values())) > 1:
            common, _ = Counter(hashes.values()).most_common(1)[0]
            for node, h in hashes.items():
                if h != common:
                    bad_nodes.add(node)
                    v.note(f"{node}: state hash {h[:12]} at index {index}, others {common[:12]}")
