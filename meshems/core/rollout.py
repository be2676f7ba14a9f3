"""`apply` of a controller payload's rollout steps: the leader starts a node's shadow (rolling:
one node at a time, after the ones before it are active; all-at-once: every target once every
copy is verified), promotes a healthy one, starts the deadline's clock and ends a rollout past
it; a node says its shadow or watch was healthy, or that it failed. A failure halts the rollout
and rolls back every other node that runs or was promoted; an abort does the same. Pure (rules
of `core.cluster`): the time of a deadline comes in the command, from the proposer's clock.
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from meshems.core.commands import Command
from meshems.core.deploy_records import Deployment
from meshems.core.payload_manifest import newer
from meshems.core.rollout_records import PROMOTED, RUNNING, NodePhase
from meshems.core.zone_handlers import _ok, _refuse
from meshems.core.zone_records import Result

if TYPE_CHECKING:
    from meshems.core.cluster import ZoneState

#: a step from the phase on the left is allowed to the one on the right
_FROM = {"shadow": "waiting", "healthy": "shadow", "watch": "healthy", "active": "watch"}


def was_active(state: ZoneState, name: str) -> list[Deployment]:
    """The deployments of payload `name` that ended done (a controller's rollout; a data kind
    verified on every target, and a policy applied), oldest first."""
    done = [d for d in state.deployments.values() if d.name == name and _ended_done(d)]
    return sorted(done, key=lambda d: d.index)


def _ended_done(d: Deployment) -> bool:
    if d.kind == "controller":
        return d.rollout.outcome == "done"
    verified = all(d.status_of(t) == "verified" for t in d.targets)
    return verified and (d.kind != "policy" or d.applied == "OK")


def active_deployment(state: ZoneState, name: str, but: str = "") -> Deployment | None:
    """The deployment whose version of payload `name` is the zone's active one: the latest
    deployment of that name that ended done (none: the built-ins, or the configured policy)."""
    return next((d for d in reversed(was_active(state, name)) if d.id != but), None)


def halt(dep: Deployment, outcome: str, code: str, reason: str, term: int, index: int,
         failed: str = "") -> Deployment:  # fmt: skip
    """End the rollout: node `failed` fails, every other node that runs the payload or was
    promoted rolls back; a failure after a promotion ends rolled_back."""
    r = dep.rollout
    phases = dict(r.phases)
    promoted = False
    for node_id in dep.targets:
        now = r.phase_of(node_id)
        promoted |= now in PROMOTED
        if node_id == failed:
            old = r.phases.get(node_id)
            phases[node_id] = NodePhase("failed", old.figures if old else (), code, reason, term, index)
        elif now in RUNNING | PROMOTED:
            phases[node_id] = NodePhase("rolled_back", (), code, f"halted: {reason}"[:300], term, index)
    if outcome == "failed" and promoted:
        outcome = "rolled_back"
    return replace(dep, rollout=replace(r, outcome=outcome, code=code, reason=reason, phases=phases))


def _may_start(state: ZoneState, dep: Deployment, node_id: str) -> str:
    """Why the leader may not start `node_id`'s shadow now ("" when it may)."""
    if dep.status_of(node_id) != "verified":
        return f"{node_id}'s copy is {dep.status_of(node_id)}, not verified"
    r = dep.rollout
    if dep.strategy == "all-at-once":
        waiting = [t for t in dep.targets if dep.status_of(t) != "verified"]
        return f"copies not verified yet on {', '.join(waiting)}" if waiting else ""
    busy = [t for t in dep.targets if r.phase_of(t) in RUNNING]
    if busy:
        return f"rolling: {busy[0]} is in {r.phase_of(busy[0])}"
    before = dep.targets[: dep.targets.index(node_id)]
    behind = [t for t in before if r.phase_of(t) != "active"]
    return f"rolling: {behind[0]} goes first" if behind else ""


def _downgrade(state: ZoneState, dep: Deployment) -> str:
    """E_PAYLOAD_ROLLBACK's reason when `dep` would make an older version active ("" if not)."""
    active = active_deployment(state, dep.name, but=dep.id)
    if dep.rollback or active is None or newer(dep.version, active.version):
        return ""
    return (f"{dep.name} {dep.version} is not newer than the active {active.version} ({active.id}); "
            f"to go back: meshems deploy rollback --to {dep.version}")  # fmt: skip


def rollout_step(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    f = cmd.fields
    dep_id, node_id, phase = f["deployment_id"], f["node_id"], f["phase"]
    dep = state.deployments.get(dep_id)
    if dep is None:
        return {}, _refuse("E_UNKNOWN_DEPLOYMENT", f"no deployment {dep_id!r}", term, index)
    if dep.kind != "controller":
        return {}, _refuse("E_DEPLOY_STATE", f"{dep_id} is a {dep.kind} payload: no rollout", term, index)
    r = dep.rollout
    if dep.aborted or r.outcome:
        return {}, _refuse("E_DEPLOY_ENDED", f"the rollout of {dep_id} ended ({dep.state})", term, index)
    if phase == "deadline":
        if r.started_s is None:  # the leader's first word about it starts its clock
            new = replace(dep, rollout=replace(r, started_s=f["now_s"]))
            return _put(state, new), _ok(term, index, f"deployment {dep_id}: {dep.deadline_s} s to finish")
        if f["now_s"] < r.started_s + dep.deadline_s:
            return {}, _refuse("E_DEPLOY_NOT_DUE", f"{dep_id}'s deadline is not past", term, index)
        reason = f"not done within its deadline of {dep.deadline_s} s"
        new = halt(dep, "failed", "E_PAYLOAD_DEADLINE", reason, term, index)
        return _put(state, new), _ok(term, index, f"deployment {dep_id}: {reason}")
    if node_id not in dep.targets:
        return {}, _refuse("E_UNKNOWN_NODE", f"{node_id} is not a target of {dep_id}", term, index)
    now = r.phase_of(node_id)
    if now == phase:
        return {}, _ok(term, index, f"{node_id} is in {phase} already")
    if phase == "failed":
        if now in ("failed", "rolled_back"):
            return {}, _refuse("E_DEPLOY_STATE", f"{node_id} is {now} already", term, index)
        new = halt(dep, "failed", f["code"], f"{node_id}: {f['reason']}"[:300], term, index, failed=node_id)
        new = _with_figures(new, node_id, f["figures"])
        return _put(state, new), _ok(term, index, f"deployment {dep_id}: {node_id} failed ({f['code']})")
    if _FROM[phase] != now:
        msg = f"{node_id} is in {now}; it cannot go to {phase}"
        return {}, _refuse("E_DEPLOY_STATE", msg, term, index)
    if phase == "shadow":
        why = _may_start(state, dep, node_id)
        if why:
            return {}, _refuse("E_DEPLOY_STATE", f"{node_id} cannot start its shadow: {why}", term, index)
        reason = _downgrade(state, dep) if not r.phases else ""  # checked when the first node starts
        if reason:
            new = halt(dep, "failed", "E_PAYLOAD_ROLLBACK", reason, term, index)
            return _put(state, new), _ok(term, index, f"deployment {dep_id} ended: {reason}")
    if phase == "watch" and dep.strategy == "all-at-once":
        behind = [t for t in dep.targets if r.phase_of(t) not in ("healthy", *PROMOTED)]
        if behind:
            return {}, _refuse("E_DEPLOY_STATE", f"all-at-once: {behind[0]} is not healthy yet", term, index)
    step = NodePhase(phase, tuple(f["figures"].items()), "OK", f["reason"], term, index)
    r = replace(r, phases={**r.phases, node_id: step})
    if all(r.phase_of(t) == "active" for t in dep.targets):
        r = replace(r, outcome="done", reason=f"{dep.name} {dep.version} active on every target")
    return _put(state, replace(dep, rollout=r)), _ok(term, index, f"deployment {dep_id}: {node_id} {phase}")


def _with_figures(dep: Deployment, node_id: str, figures: dict[str, float]) -> Deployment:
    if not figures:
        return dep
    p = dep.rollout.phases[node_id]
    phases = {**dep.rollout.phases, node_id: replace(p, figures=tuple(figures.items()))}
    return replace(dep, rollout=replace(dep.rollout, phases=phases))


def _put(state: ZoneState, dep: Deployment) -> dict:
    return {"deployments": {**state.deployments, dep.id: dep}}


def abort(dep: Deployment, by: str, term: int, index: int) -> Deployment:
    """An operator's abort: a running rollout ends aborted, its nodes roll back."""
    new = replace(dep, aborted=True)
    if dep.kind != "controller" or dep.rollout.outcome:
        return new
    return halt(new, "aborted", "E_DEPLOY_ABORTED", f"aborted by {by}", term, index)
