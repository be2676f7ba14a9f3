"""The leader's part of every controller rollout, read from the replicated state alone (so a new
leader resumes where the last one was): start its deadline's clock (the first leader to see
it), end a rollout past its deadline, fail a node whose copy failed, and otherwise the next
step of its strategy (rolling: start the first waiting target, promote the healthy one;
all-at-once: start all once every copy is verified, promote all once all are healthy); and a
node's own step by its verdict. Pure: the clocks come in; `node.rollout_duty` proposes.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from meshems.core import commands
from meshems.core.cluster import ZoneState
from meshems.core.deploy_records import Deployment
from meshems.core.payload_shadow import Verdict
from meshems.core.rollout_records import FIGURES, PROMOTED, RUNNING


def next_steps(dep: Deployment, now_s: float, leader_id: str) -> list[dict[str, object]]:
    """The rollout_step fields the leader owes `dep` now (none: it waits for its nodes)."""
    r = dep.rollout
    if dep.kind != "controller" or dep.aborted or r.outcome:
        return []
    base = {"deployment_id": dep.id, "now_s": now_s}
    if r.started_s is None:  # the deadline's clock starts with the first leader that sees it
        return [{**base, "node_id": leader_id, "phase": "deadline"}, *_strategy_steps(dep, base)]
    if now_s >= r.started_s + dep.deadline_s:
        return [{**base, "node_id": leader_id, "phase": "deadline"}]
    return _strategy_steps(dep, base)


def _strategy_steps(dep: Deployment, base: dict[str, object]) -> list[dict[str, object]]:
    r = dep.rollout
    for t in dep.targets:
        copy = dep.nodes.get(t)
        if copy is not None and copy.status == "failed" and r.phase_of(t) != "failed":
            why = f"its copy failed: {copy.message}"[:300]
            return [{**base, "node_id": t, "phase": "failed", "code": copy.code, "reason": why}]
    verified = all(dep.status_of(t) == "verified" for t in dep.targets)
    phase = {t: r.phase_of(t) for t in dep.targets}
    if dep.strategy == "all-at-once":
        if not verified:
            return []
        if all(p in ("healthy", *PROMOTED) for p in phase.values()):
            return [{**base, "node_id": t, "phase": "watch"} for t, p in phase.items() if p == "healthy"]
        return [{**base, "node_id": t, "phase": "shadow"} for t, p in phase.items() if p == "waiting"]
    running = [t for t, p in phase.items() if p in RUNNING]
    if running:
        t = running[0]
        return [{**base, "node_id": t, "phase": "watch"}] if phase[t] == "healthy" else []
    nxt = next((t for t, p in phase.items() if p == "waiting"), None)
    if nxt is None or dep.status_of(nxt) != "verified":
        return []
    return [{**base, "node_id": nxt, "phase": "shadow"}]


def leader_steps(state: ZoneState, now_s: float, leader_id: str) -> list[bytes]:
    """Every rollout's next steps as encoded commands, oldest deployment first. A step's request
    id is that of the step and the state it was planned on: a leader's retry of it dedups."""
    out: list[bytes] = []
    for dep in sorted(state.deployments.values(), key=lambda d: d.index):
        for f in next_steps(dep, now_s, leader_id):
            key = f"{dep.id}/{f['node_id']}/{f['phase']}/{dep.index}/{state.last_index}"
            rid = "ro-" + hashlib.sha256(key.encode()).hexdigest()[:32]
            out.append(commands.encode("rollout_step", rid, **f))
    return out


def node_step(dep: Deployment, node_id: str, phase: str, figures: dict[str, float], now_s: float,
              code: str = "OK", reason: str = "") -> bytes:  # fmt: skip
    """A target node's own step (healthy, active, failed) as an encoded command; its request id
    is the same on every retry."""
    key = f"{dep.id}/{node_id}/{phase}/{dep.index}"
    rid = "rn-" + hashlib.sha256(key.encode()).hexdigest()[:32]
    return commands.encode("rollout_step", rid, deployment_id=dep.id, node_id=node_id, phase=phase,
                           figures=figures, code=code, reason=reason[:300], now_s=now_s)  # fmt: skip


def figures(v: Verdict) -> dict[str, float]:
    """A verdict's health figures as a rollout step carries them (`rollout_records.FIGURES`)."""
    d = v.to_dict()
    return {k: float(round(d[k], 3)) for k in FIGURES}


def node_verdict(phase: str, v: Verdict, codes: Sequence[str] = ()) -> tuple[str, str, str] | None:
    """What a node in `phase` (shadow or watch) proposes by its verdict so far: (the next phase,
    code, reason), or None while it is pending. `codes` are its cycles' failure codes in order
    (the first one names the failure: E_PAYLOAD_CRASH, E_PAYLOAD_TIMEOUT, E_LIMIT, ...)."""
    if v.state == "pending":
        return None
    if v.healthy:
        why = f"{v.cycles} cycles healthy, p99 {v.p99_ms:.1f} ms, largest difference {v.max_diff_kw:.2f} kW"
        return ("healthy" if phase == "shadow" else "active"), "OK", why
    code = next((c for c in codes if c), "E_PAYLOAD_UNHEALTHY")
    return "failed", code, f"{phase}: " + "; ".join(v.reasons)
