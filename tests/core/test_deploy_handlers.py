"""Payload deployments in the replicated state: a deploy is checked for shape and digest on every
replica, recorded with its targets, moved forward by each target's status, ended by an abort,
trimmed to MAX_DEPLOYMENTS, kept through a snapshot; the duties a node owes follow from it."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from meshems.core import commands
from meshems.core.cluster import ZoneState, apply
from meshems.core.deploy_duties import duties
from meshems.core.deploy_handlers import MAX_DEPLOYMENTS
from meshems.core.payload_checks import signatures_doc
from meshems.core.payload_manifest import canonical_bytes, manifest_digest, parse_manifest
from meshems.core.snapshot import restore, snapshot, state_hash

MANIFEST = canonical_bytes(parse_manifest({
    "name": "peak-guard", "version": "1.0.0", "kind": "controller", "entry_point": "controller.py",
    "expires_at": "2030-01-01T00:00:00Z",
    "files": [{"path": "controller.py", "sha256": hashlib.sha256(b"x").hexdigest(), "size": 1}],
}))  # fmt: skip
SIGS = signatures_doc({"ab" * 32: b"s" * 64})
DIGEST = manifest_digest(MANIFEST)


def run(state: ZoneState, type_: str, **fields: object) -> tuple[ZoneState, Any]:
    index = state.last_index + 1
    return apply(state, commands.encode(type_, f"r{index}", **fields), 1, index)


def deploy_fields(dep_id: str = "d1", **over: object) -> dict[str, Any]:
    return {"deployment_id": dep_id, "manifest": MANIFEST, "signatures": SIGS, "digest": DIGEST,
            "size": 4096, "targets": [], "strategy": "all-at-once", "by": "alice", "origin": "n1",
            **over}  # fmt: skip


def zone() -> ZoneState:
    state = ZoneState()
    for n in ("n1", "n2", "n3"):
        state, res = run(state, "declare_node", node_id=n, raft=f"{n}:1", api=f"{n}:2", devices=[])
        assert res.ok
    return state


def status(state: ZoneState, node: str, st: str, dep_id: str = "d1", **more: object) -> tuple[ZoneState, Any]:
    return run(state, "deploy_status", deployment_id=dep_id, node_id=node, status=st, **more)


def test_a_deploy_to_the_zone_targets_every_member_and_rolls_out_when_all_verified() -> None:
    state, res = run(zone(), "deploy", **deploy_fields())
    assert res.ok, res
    dep = state.deployments["d1"]
    assert (dep.name, dep.version, dep.targets, dep.state) == (
        "peak-guard",
        "1.0.0",
        ("n1", "n2", "n3"),
        "active",
    )
    for n in ("n1", "n2", "n3"):
        state, res = status(state, n, "stored")
        assert res.ok
        state, res = status(state, n, "verified")
        assert res.ok
    # a controller is not done when verified: its rollout comes next (tests/core/test_rollout.py)
    assert state.deployments["d1"].state == "active" and not state.deployments["d1"].closed
    same, res = status(state, "n1", "verified")  # said again: nothing changes
    assert res.ok and same.deployments == state.deployments
    _, res = status(state, "n1", "stored")
    assert res.code == "E_DEPLOY_STATE"


@pytest.mark.parametrize(
    ("over", "code"),
    [
        ({"digest": "0" * 64}, "E_PAYLOAD_HASH"),
        ({"manifest": MANIFEST.replace(b'"1.0.0"', b'"1.0.1" ')}, "E_PAYLOAD_MANIFEST"),
        ({"signatures": b'{"format":1,"signatures":[]}'}, "E_PAYLOAD_SIGNATURE"),
        ({"signatures": b"junk"}, "E_PAYLOAD_SIGNATURE"),
        ({"strategy": "yolo"}, "E_CMD_MALFORMED"),
        ({"targets": ["n1", "n1"]}, "E_CMD_MALFORMED"),
        ({"size": 0}, "E_CMD_MALFORMED"),
        ({"manifest": b"x" * (49 * 1024)}, "E_CMD_MALFORMED"),
        ({"targets": ["n9"]}, "E_UNKNOWN_NODE"),
    ],
)
def test_a_malformed_deploy_is_refused_the_same_way_and_changes_nothing(over: dict, code: str) -> None:
    before = zone()
    state, res = run(before, "deploy", **deploy_fields(**over))
    assert res.code == code and state.deployments == {}


def test_status_needs_a_target_an_open_deployment_and_a_code_when_failed() -> None:
    state, _ = run(zone(), "deploy", **deploy_fields(targets=["n2"]))
    assert status(state, "n1", "verified")[1].code == "E_UNKNOWN_NODE"
    assert status(state, "n2", "verified", dep_id="nope")[1].code == "E_UNKNOWN_DEPLOYMENT"
    assert status(state, "n2", "failed")[1].code == "E_CMD_MALFORMED"
    failed, res = status(state, "n2", "failed", code="E_PAYLOAD_HASH", message="controller.py altered")
    assert res.ok and failed.deployments["d1"].state == "failed"
    assert failed.deployments["d1"].nodes["n2"].code == "E_PAYLOAD_HASH"
    assert status(failed, "n2", "verified")[1].code == "E_DEPLOY_STATE"
    aborted, res = run(state, "deploy_abort", deployment_id="d1", by="alice")
    assert res.ok and aborted.deployments["d1"].state == "aborted"
    assert run(aborted, "deploy_abort", deployment_id="d1", by="alice")[1].ok  # always ends
    assert status(aborted, "n2", "verified")[1].code == "E_DEPLOY_ABORTED"
    assert run(state, "deploy", **deploy_fields())[1].code == "E_DEPLOY_EXISTS"


def test_at_most_max_deployments_are_kept_the_oldest_closed_going_first() -> None:
    state = zone()
    for i in range(MAX_DEPLOYMENTS):
        state, res = run(state, "deploy", **deploy_fields(f"d{i}", targets=["n1"]))
        assert res.ok
    state, res = run(state, "deploy", **deploy_fields("extra", targets=["n1"]))
    assert res.code == "E_DEPLOY_FULL"
    state, _ = run(state, "deploy_abort", deployment_id="d3", by="bob")
    state, _ = status(state, "n1", "verified", dep_id="d1")
    for phase in ("shadow", "healthy", "watch", "active"):  # its rollout ends done: closed
        state, res = run(state, "rollout_step", deployment_id="d1", node_id="n1", phase=phase, now_s=0.0)
        assert res.ok, res
    state, res = run(state, "deploy", **deploy_fields("extra", targets=["n1"]))
    assert res.ok and "d1" not in state.deployments and "d3" in state.deployments
    assert len(state.deployments) == MAX_DEPLOYMENTS


def test_deployments_survive_a_snapshot_and_count_in_the_state_hash() -> None:
    base = zone()
    state, _ = run(base, "deploy", **deploy_fields())
    state, _ = status(state, "n2", "failed", code="E_PAYLOAD_EXPIRED", message="expired")
    back = restore(snapshot(state))
    assert back.deployments == state.deployments and state_hash(back) == state_hash(state)
    assert state_hash(state) != state_hash(run(base, "deploy", **deploy_fields("other"))[0])


def test_a_node_fetches_what_targets_it_then_reports_and_an_offline_one_catches_up() -> None:
    state, _ = run(zone(), "deploy", **deploy_fields(targets=["n2", "n3"]))
    assert duties(state, "n1", frozenset(), frozenset()) == []  # not a target
    [duty] = duties(state, "n2", frozenset(), frozenset())
    assert duty.kind == "fetch" and duty.sources == ("n1", "n3")
    state, _ = status(state, "n3", "verified")
    assert duties(state, "n2", frozenset(), frozenset())[0].sources == ("n1", "n3")
    assert duties(state, "n2", frozenset(), frozenset({"d1"})) == []  # in flight
    assert duties(state, "n2", frozenset({DIGEST}), frozenset())[0].kind == "report"
    assert duties(state, "n3", frozenset({DIGEST}), frozenset()) == []  # final already
    # n2 was offline: on return the same state holds the same duty
    assert duties(restore(snapshot(state)), "n2", frozenset(), frozenset())[0].kind == "fetch"
    aborted, _ = run(state, "deploy_abort", deployment_id="d1", by="alice")
    assert duties(aborted, "n2", frozenset(), frozenset()) == []


def test_deploy_is_an_admin_operator_command_and_status_internal() -> None:
    assert {"deploy", "deploy_abort"} <= commands.OPERATOR_TYPES
    assert "deploy_status" in commands.INTERNAL_TYPES
    assert commands.ROLE_OF_TYPE["deploy"] == commands.ROLE_OF_TYPE["deploy_abort"] == "admin"


def test_a_deploy_may_override_the_shadow_and_watch_cycles_within_the_manifests_bounds() -> None:
    from meshems.core.payload_manifest import Health

    state, res = run(zone(), "deploy", **deploy_fields(shadow_cycles=3, watch_cycles=0))
    assert res.ok, res
    dep = state.deployments["d1"]
    health = Health(shadow_cycles=30, watch_cycles=60)
    assert (dep.cycles("shadow", health), dep.cycles("watch", health)) == (3, 0)
    back = restore(snapshot(state))
    assert back.deployments == state.deployments and state_hash(back) == state_hash(state)
    plain, _ = run(zone(), "deploy", **deploy_fields())
    assert plain.deployments["d1"].cycles("shadow", health) == 30  # none given: the manifest's
    assert plain.deployments["d1"].cycles("watch", health) == 60
    assert state_hash(plain) != state_hash(state)
    for bad in ({"shadow_cycles": 0}, {"watch_cycles": -1}, {"shadow_cycles": 100_001},
                {"shadow_cycles": True}, {"watch_cycles": 2.5}):  # fmt: skip
        refused, res = run(zone(), "deploy", **deploy_fields(**bad))
        assert res.code == "E_CMD_MALFORMED" and "cycles" in res.message and refused.deployments == {}


def test_a_data_payload_refuses_a_cycle_override() -> None:
    data = canonical_bytes(parse_manifest({
        "name": "tariff", "version": "1.0.0", "kind": "policy", "expires_at": "2030-01-01T00:00:00Z",
        "files": [{"path": "policy.yaml", "sha256": hashlib.sha256(b"x").hexdigest(), "size": 1}],
    }))  # fmt: skip
    fields = deploy_fields(manifest=data, digest=manifest_digest(data), shadow_cycles=3)
    state, res = run(zone(), "deploy", **fields)
    assert res.code == "E_CMD_MALFORMED" and "policy payload" in res.message and state.deployments == {}
