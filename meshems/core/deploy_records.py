"""The replicated record of one payload deployment: what was deployed (manifest, signatures,
digest), where (targets), how (strategy), each target's word about its copy, a controller's
rollout (`core.rollout_records`), and its rows in the zone snapshot. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshems.core.payload_manifest import Health
from meshems.core.rollout_records import Rollout, phase_view, rollout_from_row

#: a target's copy is final once verified or failed
FINAL = frozenset({"verified", "failed"})


@dataclass(frozen=True, slots=True)
class NodeCopy:
    """What a target node said about its copy of the bundle, at (term, index)."""

    status: str  # stored | verified | failed
    code: str
    message: str
    term: int
    index: int


@dataclass(frozen=True, slots=True)
class Deployment:
    id: str
    name: str
    version: str
    digest: str  # SHA-256 of the canonical manifest: the bundle in every store
    manifest: bytes
    signatures: bytes
    size: int  # the bundle's bytes
    targets: tuple[str, ...]
    strategy: str
    by: str
    origin: str  # the node that accepted it and stored the bundle first
    term: int
    index: int
    nodes: Mapping[str, NodeCopy] = field(default_factory=dict)
    aborted: bool = False
    kind: str = "controller"  # the manifest's: a controller rolls out, a data kind is done when verified
    deadline_s: int = 3600  # the manifest's: the rollout ends within this after its start
    rollback: bool = False  # an operator's `deploy rollback`: an older version may become active
    rollout: Rollout = field(default_factory=Rollout)
    shadow_cycles: int | None = None  # the operator's `deploy --shadow-cycles` (None: the manifest's)
    watch_cycles: int | None = None  # the operator's `deploy --watch-cycles` (None: the manifest's)
    #: a policy payload made the zone's policy (`core.data_handlers`): "" not yet, OK, or the
    #: refusal "E_...: why" (the deployment failed, nothing applied)
    applied: str = ""
    #: the zone policy's values, before this policy payload was applied, of the fields it set
    #: (what a rollback from it restores of the fields the older file does not set)
    before: Mapping[str, Any] = field(default_factory=dict)

    def cycles(self, phase: str, health: Health) -> int:
        """The cycles a node runs in `phase` (shadow or watch) before its verdict: this
        deployment's override, else the manifest's health criteria."""
        if phase == "shadow":
            return health.shadow_cycles if self.shadow_cycles is None else self.shadow_cycles
        return health.watch_cycles if self.watch_cycles is None else self.watch_cycles

    @property
    def state(self) -> str:
        """aborted | the rollout's outcome (done, failed, rolled_back) | failed (a target's copy
        failed) | done (a data kind verified everywhere) | active (still going)."""
        if self.aborted:
            return "aborted"
        if self.rollout.outcome:
            return self.rollout.outcome
        if self.applied.startswith("E_"):
            return "failed"
        if any(c.status == "failed" for c in self.nodes.values()):
            return "failed"
        if self.kind != "controller" and all(self.status_of(t) == "verified" for t in self.targets):
            return "done"
        return "active"

    def status_of(self, node_id: str) -> str:
        copy = self.nodes.get(node_id)
        return copy.status if copy is not None else "pending"

    @property
    def closed(self) -> bool:
        """Nothing more happens: aborted, the rollout ended, or (a data kind) every copy final."""
        if self.aborted or self.rollout.outcome:
            return True
        return self.kind != "controller" and all(self.status_of(t) in FINAL for t in self.targets)

    def to_row(self) -> list[Any]:
        nodes = [[n, c.status, c.code, c.message, c.term, c.index] for n, c in sorted(self.nodes.items())]
        head = [self.id, self.name, self.version, self.digest, self.manifest, self.signatures, self.size]
        return [
            *head,
            list(self.targets),
            self.strategy,
            self.by,
            self.origin,
            self.term,
            self.index,
            nodes,
            self.aborted,
            self.kind,
            self.deadline_s,
            self.rollback,
            self.rollout.to_row(),
            self.shadow_cycles,
            self.watch_cycles,
            self.applied,
            dict(self.before),
        ]


def from_row(row: list[Any]) -> Deployment:
    """A deployment from its snapshot row (`Deployment.to_row`)."""
    head, (targets, strategy, by, origin, term, index, nodes, aborted), more = row[:7], row[7:15], row[15:]
    kind, deadline_s, rollback, rollout = more[:4] if more else ("controller", 3600, False, None)
    shadow_cycles, watch_cycles = more[4:6] if len(more) >= 6 else (None, None)
    applied = more[6] if len(more) >= 7 else ""
    before = more[7] if len(more) >= 8 else {}
    return Deployment(*head, tuple(targets), strategy, by, origin, term, index,
                      {n[0]: NodeCopy(*n[1:]) for n in nodes}, bool(aborted), kind, deadline_s,
                      bool(rollback), rollout_from_row(rollout), shadow_cycles, watch_cycles,
                      applied, before)  # fmt: skip


def view(d: Deployment) -> dict[str, Any]:
    """A deployment as JSON types for status and history (no manifest bytes)."""
    nodes = {}
    for t in d.targets:
        copy = d.nodes.get(t)
        nodes[t] = {"status": d.status_of(t), "code": copy.code if copy else "",
                    "message": copy.message if copy else "", **phase_view(d.rollout, t)}  # fmt: skip
    r = d.rollout
    code, _, reason = d.applied.partition(": ") if d.applied.startswith("E_") else (r.code, "", r.reason)
    return {"id": d.id, "name": d.name, "version": d.version, "digest": d.digest, "size": d.size,
            "targets": list(d.targets), "strategy": d.strategy, "by": d.by, "origin": d.origin,
            "state": d.state, "term": d.term, "index": d.index, "nodes": nodes, "kind": d.kind,
            "rollback": d.rollback, "started_s": r.started_s, "code": code, "reason": reason,
            "shadow_cycles": d.shadow_cycles, "watch_cycles": d.watch_cycles,
            "applied": d.applied}  # fmt: skip
