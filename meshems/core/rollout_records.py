"""The replicated state of one controller payload's rollout: each target's phase (waiting,
shadow, healthy, watch, active, failed, rolled_back) with the health figures it was reported
with, when the rollout started (the proposer's clock), and how it ended (done, failed,
rolled_back, aborted). Pure: no I/O; `core.rollout` moves it, `core.rollout_plan` reads it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

PHASES = ("waiting", "shadow", "healthy", "watch", "active", "failed", "rolled_back")
#: the phases in which a node runs the payload's worker
RUNNING = frozenset({"shadow", "healthy", "watch"})
#: promoted: the new version is (or was about to be) the node's active controller
PROMOTED = frozenset({"watch", "active"})
OUTCOMES = ("done", "failed", "rolled_back", "aborted")
#: the health figures a step may carry (`core.payload_shadow.Verdict`)
FIGURES = ("cycles", "ok", "errors", "timeouts", "crashes", "start_failures", "refused", "p50_ms",
           "p99_ms", "max_diff_kw")  # fmt: skip


@dataclass(frozen=True, slots=True)
class NodePhase:
    """Where one target is, since (term, index), with the figures and reason of that step."""

    phase: str
    figures: tuple[tuple[str, float], ...] = ()
    code: str = "OK"
    reason: str = ""
    term: int = 0
    index: int = 0

    def to_row(self) -> list[Any]:
        return [self.phase, [list(f) for f in self.figures], self.code, self.reason, self.term, self.index]


@dataclass(frozen=True, slots=True)
class Rollout:
    """`outcome` is empty while the rollout runs; `started_s` is set by its first step."""

    started_s: float | None = None
    outcome: str = ""
    code: str = "OK"
    reason: str = ""
    phases: Mapping[str, NodePhase] = field(default_factory=dict)

    def phase_of(self, node_id: str) -> str:
        p = self.phases.get(node_id)
        return p.phase if p is not None else "waiting"

    def to_row(self) -> list[Any]:
        phases = [[n, *p.to_row()] for n, p in sorted(self.phases.items())]
        return [self.started_s, self.outcome, self.code, self.reason, phases]


def rollout_from_row(row: list[Any] | None) -> Rollout:
    """A rollout from its row (`Rollout.to_row`); None (an older snapshot) is a fresh one."""
    if row is None:
        return Rollout()
    started_s, outcome, code, reason, phases = row
    return Rollout(started_s, outcome, code, reason, {
        p[0]: NodePhase(p[1], tuple((k, v) for k, v in p[2]), p[3], p[4], p[5], p[6]) for p in phases
    })  # fmt: skip


def phase_view(r: Rollout, node_id: str) -> dict[str, Any]:
    """One target's phase as JSON types (status and history)."""
    p = r.phases.get(node_id)
    if p is None:
        return {"phase": "waiting", "figures": {}, "phase_code": "OK", "reason": ""}
    return {"phase": p.phase, "figures": dict(p.figures), "phase_code": p.code, "reason": p.reason}
