"""`apply` handlers of the deployment commands: a deploy records a new deployment (its id new,
its targets members; the zone's members when it names none), a node's status moves its own
copy forward only (pending -> stored -> verified, or failed), an abort ends a deployment. At
most MAX_DEPLOYMENTS are kept: the oldest closed ones go first. Pure (rules of `core.cluster`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from meshems.core.commands import Command
from meshems.core.deploy_records import FINAL, Deployment, NodeCopy
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
    kept = dict(state.deployments)
    if len(kept) >= MAX_DEPLOYMENTS:
        closed = sorted((d for d in kept.values() if d.closed), key=lambda d: d.index)
        if len(kept) - len(closed) >= MAX_DEPLOYMENTS:
            msg = f"{MAX_DEPLOYMENTS} deployments are open; let one finish or abort one"
            return {}, _refuse("E_DEPLOY_FULL", msg, term, index)
        for d in closed[: len(kept) - MAX_DEPLOYMENTS + 1]:
            del kept[d.id]
    record = Deployment(dep_id, f["name"], f["version"], f["digest"], f["manifest"], f["signatures"],
                        f["size"], targets, f["strategy"], f["by"], f["origin"], term, index)  # fmt: skip
    kept[dep_id] = record
    msg = f"deployment {dep_id}: {f['name']} {f['version']} to {', '.join(targets)}"
    return {"deployments": kept}, _ok(term, index, msg)


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
    new = replace(dep, aborted=True)
    return {"deployments": {**state.deployments, dep_id: new}}, _ok(
        term, index, f"deployment {dep_id} aborted"
    )
