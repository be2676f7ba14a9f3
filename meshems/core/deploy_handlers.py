"""`apply` handlers of the deployment commands: a deploy records a new deployment (its id new,
its targets members; the zone's members when it names none), a node's status moves its own
copy forward only (pending -> stored -> verified, or failed), an abort ends a deployment (and
rolls back its rollout: `core.rollout`), a rollback deploys again the manifest of a version the
zone had active before. At most MAX_DEPLOYMENTS are kept: the oldest closed ones go first.
Pure (rules of `core.cluster`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from meshems.core.commands import Command
from meshems.core.deploy_records import FINAL, Deployment, NodeCopy
from meshems.core.payload_manifest import newer
from meshems.core.rollout import abort, active_deployment, was_active
from meshems.core.rollout_records import Rollout
from meshems.core.zone_handlers import _ok, _refuse
from meshems.core.zone_records import Result

if TYPE_CHECKING:
    from meshems.core.cluster import ZoneState

MAX_DEPLOYMENTS = 16
_ORDER = {"pending": 0, "stored": 1, "verified": 2, "failed": 2}


def deploy(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    f = cmd.fields
    dep_id = f["deployment_id"]
    if dep_id in state.deployments:
        return {}, _refuse("E_DEPLOY_EXISTS", f"deployment {dep_id!r} exists; choose a new id", term, index)
    targets = tuple(f["targets"]) or tuple(sorted(state.members))
    if not targets:
        return {}, _refuse("E_UNKNOWN_NODE", "the zone has no members to deploy to", term, index)
    unknown = [t for t in targets if t not in state.members]
    if unknown:
        return {}, _refuse("E_UNKNOWN_NODE", f"targets {', '.join(unknown)} are not members", term, index)
    record = Deployment(dep_id, f["name"], f["version"], f["digest"], f["manifest"], f["signatures"],
                        f["size"], targets, f["strategy"], f["by"], f["origin"], term, index,
                        kind=f["kind"], deadline_s=f["deadline_s"], shadow_cycles=f["shadow_cycles"],
                        watch_cycles=f["watch_cycles"])  # fmt: skip
    return _add(state, record, term, index)


def _add(state: ZoneState, record: Deployment, term: int, index: int) -> tuple[dict, Result]:
    """Record a new deployment, dropping the oldest closed ones past MAX_DEPLOYMENTS."""
    kept = dict(state.deployments)
    if len(kept) >= MAX_DEPLOYMENTS:
        closed = sorted((d for d in kept.values() if d.closed), key=lambda d: d.index)
        if len(kept) - len(closed) >= MAX_DEPLOYMENTS:
            msg = f"{MAX_DEPLOYMENTS} deployments are open; let one finish or abort one"
            return {}, _refuse("E_DEPLOY_FULL", msg, term, index)
        for d in closed[: len(kept) - MAX_DEPLOYMENTS + 1]:
            del kept[d.id]
    kept[record.id] = record
    msg = f"deployment {record.id}: {record.name} {record.version} to {', '.join(record.targets)}"
    return {"deployments": kept}, _ok(term, index, msg)


def deploy_rollback(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    """Deploy again, as a rollback, the manifest of a version of `name` that was active before:
    `to_version`, or the newest one older than the active version."""
    f = cmd.fields
    name, to, dep_id = f["name"], f["to_version"], f["deployment_id"]
    if dep_id in state.deployments:
        return {}, _refuse("E_DEPLOY_EXISTS", f"deployment {dep_id!r} exists; choose a new id", term, index)
    active = active_deployment(state, name)
    if active is None:
        return {}, _refuse("E_PAYLOAD_ROLLBACK", f"no version of {name} is active: nothing to roll back",
                           term, index)  # fmt: skip
    done = [d for d in was_active(state, name) if d.version != active.version]
    if to:
        found = [d for d in done if d.version == to]
        why = f"{name} {to} is the active version" if to == active.version else (
            f"{name} {to} was never active in this zone (the kept history)")  # fmt: skip
    else:
        found = [d for d in done if newer(active.version, d.version)]
        why = f"no version of {name} older than the active {active.version} was active before"
    if not found:
        return {}, _refuse("E_PAYLOAD_ROLLBACK", why, term, index)
    old = found[-1]
    targets = tuple(t for t in old.targets if t in state.members)
    if not targets:
        return {}, _refuse("E_UNKNOWN_NODE", f"no target of {old.id} is still a member", term, index)
    record = replace(old, id=dep_id, targets=targets, strategy="rolling", by=f["by"], term=term, index=index,
                     nodes={}, aborted=False, rollback=True, rollout=Rollout(), applied="")  # fmt: skip
    return _add(state, record, term, index)


def deploy_status(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    f = cmd.fields
    dep_id, node_id, status = f["deployment_id"], f["node_id"], f["status"]
    dep = state.deployments.get(dep_id)
    if dep is None:
        return {}, _refuse("E_UNKNOWN_DEPLOYMENT", f"no deployment {dep_id!r}", term, index)
    if node_id not in dep.targets:
        return {}, _refuse("E_UNKNOWN_NODE", f"{node_id} is not a target of {dep_id}", term, index)
    if dep.aborted:
        return {}, _refuse("E_DEPLOY_ABORTED", f"deployment {dep_id} was aborted", term, index)
    now = dep.status_of(node_id)
    if now == status:
        return {}, _ok(term, index, f"{node_id} is {status} already")
    if now in FINAL or _ORDER[status] < _ORDER[now]:
        msg = f"{node_id}'s copy of {dep_id} is {now}; it cannot become {status}"
        return {}, _refuse("E_DEPLOY_STATE", msg, term, index)
    copy = NodeCopy(status, f["code"], f["message"], term, index)
    new = replace(dep, nodes={**dep.nodes, node_id: copy})
    return {"deployments": {**state.deployments, dep_id: new}}, _ok(term, index, f"{node_id}: {status}")


def deploy_abort(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    dep_id = cmd.fields["deployment_id"]
    dep = state.deployments.get(dep_id)
    if dep is None:
        return {}, _refuse("E_UNKNOWN_DEPLOYMENT", f"no deployment {dep_id!r}", term, index)
    if dep.aborted:
        return {}, _ok(term, index, f"deployment {dep_id} was aborted already")
    new = abort(dep, cmd.fields["by"], term, index)
    return {"deployments": {**state.deployments, dep_id: new}}, _ok(
        term, index, f"deployment {dep_id} aborted"
    )
