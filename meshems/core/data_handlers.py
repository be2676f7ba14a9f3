"""The data kinds of logic payloads in the zone: a `policy` payload's file, checked with the
rules of `policy set`, becomes the zone's policy once its deployment is done (every target
verified) through `deploy_apply`, at most once per deployment, so a later `policy set` is
never undone; a rollback deploys the older version again and so applies its file again, and
the fields only the newer file set go back to their values before it. The
forecast models and device profiles each node holds are `held` (`node.payload_stage` acts).
Pure (rules of `core.cluster`): the file's bytes are read and parsed by `node.payload_data`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from meshems.core.commands import Command
from meshems.core.deploy_records import Deployment
from meshems.core.errors import PayloadDataError
from meshems.core.policy import Policy, policy_problems
from meshems.core.zone_handlers import _ok, _refuse, set_policy
from meshems.core.zone_records import Result

if TYPE_CHECKING:
    from meshems.core.cluster import ZoneState

#: the kinds whose files a node checks before it says verified (`node.payload_data`)
DATA_KINDS = ("policy", "forecast-model", "profiles")


def policy_values(doc: object, path: str, state: ZoneState | None = None) -> dict[str, Any]:
    """The policy fields of a policy payload's file `path` (a map of fields as `policy set`
    takes them, or the config's form `policy: {...}`), checked by the same rules; with the
    zone `state`, also against it (the relays of shed_order). PayloadDataError naming the
    file and the key."""
    where = f"files/{path}"
    if isinstance(doc, Mapping) and set(doc) == {"policy"}:
        doc, where = doc["policy"], f"{where}: policy"
    if not isinstance(doc, Mapping) or not doc or not all(isinstance(k, str) for k in doc):
        msg = f"{where}: a policy file is a non-empty map of fields, as `meshems policy set` takes them"
        raise PayloadDataError(msg, file=path)
    values = dict(doc)
    problems = policy_problems(values)
    if problems:
        raise PayloadDataError(f"{where}: {'; '.join(problems)}", file=path)
    if state is not None:
        _, result = set_policy(state, Command("set_policy", "", {"values": values}), 0, 0)
        if not result.ok:
            raise PayloadDataError(f"{where}: {result.message}", file=path)
    return values


def policy_due(state: ZoneState) -> Deployment | None:
    """The policy deployment the zone still has to apply: the newest one that is done, when
    it was not applied yet (None: nothing to do)."""
    done = sorted((d for d in state.deployments.values() if d.kind == "policy" and d.state == "done"),
                  key=lambda d: d.index)  # fmt: skip
    return done[-1] if done and not done[-1].applied else None


def rolled_back_from(state: ZoneState, dep: Deployment) -> dict[str, Any]:
    """For a rollback, the values before the policy payload it rolls back from (the newest one
    of that name applied before it) was applied: a field only that one set goes back too."""
    if not dep.rollback:
        return {}
    same = (d for d in state.deployments.values() if d.name == dep.name and d.kind == "policy")
    applied = [d for d in same if d.applied == "OK" and d.index < dep.index]
    return dict(max(applied, key=lambda d: d.index).before) if applied else {}


def deploy_apply(state: ZoneState, cmd: Command, term: int, index: int) -> tuple[dict, Result]:
    """Make a done policy deployment's file the zone's policy, as `set_policy` would; a
    refusal (a shed_order load the zone does not have) fails the deployment, nothing applied."""
    f = cmd.fields
    dep = state.deployments.get(f["deployment_id"])
    if dep is None:
        return {}, _refuse("E_UNKNOWN_DEPLOYMENT", f"no deployment {f['deployment_id']!r}", term, index)
    if dep.applied:
        return {}, _ok(term, index, f"deployment {dep.id} was applied already ({dep.applied[:80]})")
    due = policy_due(state)
    if due is None or due.id != dep.id:
        msg = f"deployment {dep.id} is not the zone's newest done policy deployment; nothing applied"
        return {}, _refuse("E_DEPLOY_STATE", msg, term, index)
    values = {**rolled_back_from(state, dep), **f["values"]}
    changes, result = set_policy(state, Command("set_policy", cmd.rid, {"values": values}), term, index)
    mark = "OK" if result.ok else f"{result.code}: {result.message}"[:300]
    prior = (state.policy or Policy()).to_dict()
    before = {k: prior[k] for k in sorted(values)} if result.ok else {}
    changes["deployments"] = {**state.deployments, dep.id: replace(dep, applied=mark, before=before)}
    if result.ok:
        result = _ok(term, index, f"policy of {dep.name} {dep.version} applied (deployment {dep.id})")
    return changes, result


def held(state: ZoneState, node_id: str, kind: str) -> dict[str, Deployment]:
    """The data payloads of `kind` in effect on `node_id`, by payload name: for each name, the
    newest deployment (a rollback is a newer one) that targets this node, was not aborted and
    whose copy here is verified."""
    out: dict[str, Deployment] = {}
    for d in sorted(state.deployments.values(), key=lambda d: d.index):
        if d.kind == kind and not d.aborted and node_id in d.targets and d.status_of(node_id) == "verified":
            out[d.name] = d
    return out
