"""A policy payload in the replicated state: its file is checked by the rules of `policy set`
(the file and the key named), it becomes the zone's policy once every target verified it, once
only (a later `policy set` stays), a refusal fails the deployment with nothing applied, and a
rollback deploys the older version again and so restores its policy; kept through a snapshot."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from meshems.core import commands
from meshems.core.cluster import ZoneState, apply
from meshems.core.data_handlers import policy_due, policy_values
from meshems.core.errors import PayloadDataError
from meshems.core.payload_checks import signatures_doc
from meshems.core.payload_manifest import canonical_bytes, manifest_digest, parse_manifest
from meshems.core.snapshot import restore, snapshot


def manifest(version: str, kind: str = "policy") -> bytes:
    return canonical_bytes(parse_manifest({
        "name": "site-policy", "version": version, "kind": kind, "entry_point": "policy.yaml",
        "expires_at": "2030-01-01T00:00:00Z",
        "files": [{"path": "policy.yaml", "sha256": hashlib.sha256(version.encode()).hexdigest(), "size": 9}],
    }))  # fmt: skip


def run(state: ZoneState, type_: str, **fields: object) -> tuple[ZoneState, Any]:
    index = state.last_index + 1
    return apply(state, commands.encode(type_, f"r{index}", **fields), 1, index)


def zone() -> ZoneState:
    state = ZoneState()
    for n in ("n1", "n2"):
        state, res = run(state, "declare_node", node_id=n, raft=f"{n}:1", api=f"{n}:2", devices=[])
        assert res.ok
    state, res = run(state, "set_policy", values={"import_limit_kw": 50.0})
    assert res.ok
    return state


def deployed(state: ZoneState, dep_id: str, version: str, kind: str = "policy") -> ZoneState:
    state, res = deploy(state, dep_id, version, kind)
    assert res.ok, res
    return verified(state, dep_id)


def deploy(state: ZoneState, dep_id: str, version: str, kind: str = "policy") -> tuple[ZoneState, Any]:
    m = manifest(version, kind)
    sigs = signatures_doc({"ab" * 32: b"s" * 64})
    return run(state, "deploy", deployment_id=dep_id, manifest=m, signatures=sigs, digest=manifest_digest(m),
               size=4096, targets=[], strategy="all-at-once", by="alice", origin="n1")  # fmt: skip


def verified(state: ZoneState, dep_id: str) -> ZoneState:
    for n in ("n1", "n2"):
        for st in ("stored", "verified"):
            state, res = run(state, "deploy_status", deployment_id=dep_id, node_id=n, status=st)
            assert res.ok, res
    return state


def test_a_policy_file_is_checked_by_the_policy_set_rules_naming_the_file_and_the_key() -> None:
    assert policy_values({"import_limit_kw": 40, "mode": "peak"}, "policy.yaml") == {
        "import_limit_kw": 40,
        "mode": "peak",
    }
    assert policy_values({"policy": {"import_limit_kw": 40}}, "p.yaml") == {"import_limit_kw": 40}
    cases = [
        ({"import_limt_kw": 40}, "files/policy.yaml: import_limt_kw: unknown policy field"),
        ({"mode": "turbo"}, "files/policy.yaml: mode: one of"),
        (
            {"policy": {"soc_floor_pct": 90, "soc_ceiling_pct": 80}},
            "files/policy.yaml: policy: soc_floor_pct",
        ),
        ([1, 2], "files/policy.yaml: a policy file is a non-empty map"),
        ({}, "files/policy.yaml: a policy file is a non-empty map"),
    ]
    for doc, start in cases:
        with pytest.raises(PayloadDataError) as exc:
            policy_values(doc, "policy.yaml")
        assert exc.value.code == "E_PAYLOAD_DATA" and exc.value.message.startswith(start), exc.value.message
    with pytest.raises(PayloadDataError, match="shed_order: 'r1:1' is not a load of a relay device"):
        policy_values({"shed_order": ["r1:1"]}, "policy.yaml", zone())


def test_a_done_policy_deployment_is_applied_once_and_a_rollback_restores_the_older_policy() -> None:
    state = deployed(zone(), "p1", "1.0.0")
    assert policy_due(state) is state.deployments["p1"]
    state, res = run(state, "deploy_apply", deployment_id="p1", values={"import_limit_kw": 40.0})
    assert res.ok and state.policy.import_limit_kw == 40.0 and policy_due(state) is None
    assert state.deployments["p1"].applied == "OK" and state.deployments["p1"].state == "done"
    state, res = run(state, "set_policy", values={"import_limit_kw": 45.0})  # an operator's, later
    again, res = run(state, "deploy_apply", deployment_id="p1", values={"import_limit_kw": 40.0})
    assert res.ok and "applied already" in res.message and again.policy.import_limit_kw == 45.0

    state = deployed(state, "p2", "1.1.0")
    _, res = run(state, "deploy_apply", deployment_id="p1", values={"import_limit_kw": 40.0})
    assert res.ok  # p1 was applied; the newest due is p2
    state, res = run(
        state, "deploy_apply", deployment_id="p2", values={"import_limit_kw": 30.0, "margin_kw": 1.0}
    )
    assert res.ok and (state.policy.import_limit_kw, state.policy.margin_kw) == (30.0, 1.0)
    assert state.deployments["p2"].before == {"import_limit_kw": 45.0, "margin_kw": 2.0}

    state, res = run(
        state, "deploy_rollback", deployment_id="p3", name="site-policy", to_version="", by="cli"
    )
    assert res.ok, res
    back = state.deployments["p3"]
    assert (back.version, back.rollback, back.applied, back.state) == ("1.0.0", True, "", "active")
    state = verified(state, "p3")
    assert policy_due(state) is state.deployments["p3"]
    state, res = run(state, "deploy_apply", deployment_id="p3", values={"import_limit_kw": 40.0})
    # the older file again; margin_kw, which only the newer file set, goes back to its value before
    assert res.ok and (state.policy.import_limit_kw, state.policy.margin_kw) == (40.0, 2.0)
    assert restore(snapshot(state)).deployments == state.deployments  # applied kept through a snapshot


def test_an_apply_the_zone_refuses_fails_the_deployment_and_changes_no_policy() -> None:
    state = zone()
    state, res = deploy(state, "p1", "1.0.0")
    _, res = run(state, "deploy_apply", deployment_id="p1", values={"import_limit_kw": 40.0})
    assert res.code == "E_DEPLOY_STATE"  # not verified everywhere yet: not due
    state = verified(state, "p1")
    state, res = run(state, "deploy_apply", deployment_id="p1", values={"shed_order": ["r1:1"]})
    assert not res.ok and res.code == "E_POLICY"
    dep = state.deployments["p1"]
    assert dep.state == "failed" and dep.applied.startswith("E_POLICY: shed_order")
    assert state.policy.import_limit_kw == 50.0 and policy_due(state) is None
    _, res = run(state, "deploy_apply", deployment_id="p1", values={"mode": "turbo"})
    assert res.code == "E_POLICY"  # the command's own check, as for set_policy
    _, res = run(state, "deploy_rollback", deployment_id="p2", name="site-policy", to_version="", by="cli")
    assert res.code == "E_PAYLOAD_ROLLBACK"  # a failed policy was never active


def test_data_kinds_other_than_policy_are_not_applied_by_the_zone() -> None:
    state = deployed(zone(), "f1", "1.0.0", kind="forecast-model")
    assert state.deployments["f1"].state == "done" and policy_due(state) is None
    _, res = run(state, "deploy_apply", deployment_id="f1", values={"import_limit_kw": 40.0})
    assert res.code == "E_DEPLOY_STATE"
