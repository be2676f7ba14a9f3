"""The rollout state machine of a controller payload, as the leader and the nodes drive it
through `apply`: a healthy rolling rollout over three nodes, a failure on node 2 that rolls
back node 1, all-at-once, an abort, the deadline, the downgrade check and an explicit
rollback, and a new leader that resumes from the replicated state alone."""

from __future__ import annotations

from typing import Any

import pytest

from meshems.core.cluster import ZoneState, apply
from meshems.core.rollout_plan import leader_steps, next_steps
from meshems.core.snapshot import restore, snapshot
from tests.core.test_deploy_handlers import MANIFEST, deploy_fields, run, status, zone

NODES = ("n1", "n2", "n3")
FIG = {"cycles": 3.0, "ok": 3.0, "p99_ms": 1.5}


def deployed(strategy: str = "rolling", dep_id: str = "d1", **over: object) -> ZoneState:
    state, res = run(zone(), "deploy", **deploy_fields(dep_id, strategy=strategy, **over))
    assert res.ok, res
    for n in NODES:
        state, _ = status(state, n, "stored", dep_id=dep_id)
        state, _ = status(state, n, "verified", dep_id=dep_id)
    return state


def step(state: ZoneState, node: str, phase: str, dep_id: str = "d1", **more: Any) -> tuple[ZoneState, Any]:
    return run(state, "rollout_step", deployment_id=dep_id, node_id=node, phase=phase,
               now_s=more.pop("now_s", 100.0), **more)  # fmt: skip


def lead(state: ZoneState, now_s: float = 100.0) -> tuple[ZoneState, list[Any]]:
    """Apply every step the leader owes now, as the rollout duty does."""
    results = []
    for data in leader_steps(state, now_s, "n1"):
        state, res = apply(state, data, 2, state.last_index + 1)
        results.append(res)
    return state, results


def phases(state: ZoneState, dep_id: str = "d1") -> dict[str, str]:
    r = state.deployments[dep_id].rollout
    return {n: r.phase_of(n) for n in NODES}


def healthy_node(state: ZoneState, node: str) -> ZoneState:
    """The node's part: its shadow healthy; once promoted by the leader, its watch healthy."""
    state, res = step(state, node, "healthy", figures=FIG)
    assert res.ok, res
    state, _ = lead(state)
    assert phases(state)[node] == "watch"
    state, res = step(state, node, "active", figures=FIG)
    assert res.ok, res
    return state


def test_a_healthy_rolling_rollout_goes_one_node_at_a_time_and_ends_done() -> None:
    state = deployed()
    for i, node in enumerate(NODES):
        state, results = lead(state)
        assert results and all(r.ok for r in results)  # the first also starts the deadline's clock
        assert phases(state) == {n: ("active" if j < i else "shadow" if j == i else "waiting")
                                 for j, n in enumerate(NODES)}  # fmt: skip
        assert lead(state)[1] == [] or phases(lead(state)[0]) == phases(state)  # nothing more is due
        state = healthy_node(state, node)
    dep = state.deployments["d1"]
    assert dep.state == "done" and dep.closed and dep.rollout.started_s == 100.0
    assert dict(dep.rollout.phases["n2"].figures) == FIG
    assert lead(state)[1] == []


def test_a_node_cannot_start_out_of_turn_or_skip_a_phase() -> None:
    state = deployed()
    assert step(state, "n2", "shadow")[1].code == "E_DEPLOY_STATE"  # n1 goes first
    assert step(state, "n1", "watch")[1].code == "E_DEPLOY_STATE"  # not healthy yet
    assert step(state, "n1", "active")[1].code == "E_DEPLOY_STATE"
    assert step(state, "n9", "shadow")[1].code == "E_UNKNOWN_NODE"
    assert step(state, "n1", "shadow", dep_id="nope")[1].code == "E_UNKNOWN_DEPLOYMENT"
    unverified, _ = run(zone(), "deploy", **deploy_fields())
    assert step(unverified, "n1", "shadow")[1].code == "E_DEPLOY_STATE"


def test_a_failure_on_node_2_rolls_back_node_1_and_halts_the_rollout() -> None:
    state = deployed()
    state, _ = lead(state)
    state = healthy_node(state, "n1")
    state, _ = lead(state)
    assert phases(state) == {"n1": "active", "n2": "shadow", "n3": "waiting"}
    state, res = step(state, "n2", "failed", code="E_PAYLOAD_CRASH", reason="worker died",
                      figures={"cycles": 2.0, "crashes": 1.0})  # fmt: skip
    assert res.ok, res
    dep = state.deployments["d1"]
    assert phases(state) == {"n1": "rolled_back", "n2": "failed", "n3": "waiting"}
    assert dep.state == "rolled_back" and dep.rollout.code == "E_PAYLOAD_CRASH" and dep.closed
    assert dict(dep.rollout.phases["n2"].figures)["crashes"] == 1.0
    assert lead(state)[1] == []  # it ended: nothing more is due
    assert step(state, "n3", "shadow")[1].code == "E_DEPLOY_ENDED"


def test_a_failure_in_the_first_shadow_ends_failed_with_nothing_promoted() -> None:
    state = deployed()
    state, _ = lead(state)
    state, res = step(state, "n1", "failed", code="E_PAYLOAD_TIMEOUT", reason="past the budget")
    assert res.ok and state.deployments["d1"].state == "failed"
    assert phases(state) == {"n1": "failed", "n2": "waiting", "n3": "waiting"}


def test_all_at_once_starts_every_node_then_promotes_all_once_all_are_healthy() -> None:
    state = deployed("all-at-once")
    state, results = lead(state)
    assert len(results) == 4 and all(r.ok for r in results)  # the clock, then three shadows
    assert set(phases(state).values()) == {"shadow"}
    state, _ = step(state, "n1", "healthy")
    state, _ = step(state, "n2", "healthy")
    assert lead(state)[1] == []  # n3 is not healthy yet
    assert step(state, "n1", "watch")[1].code == "E_DEPLOY_STATE"
    state, _ = step(state, "n3", "healthy")
    state, results = lead(state)
    assert len(results) == 3 and set(phases(state).values()) == {"watch"}
    for n in NODES:
        state, _ = step(state, n, "active")
    assert state.deployments["d1"].state == "done"


@pytest.mark.parametrize("strategy", ["rolling", "all-at-once"])
def test_an_abort_always_ends_the_rollout_and_rolls_back_its_nodes(strategy: str) -> None:
    state = deployed(strategy)
    state, _ = lead(state)
    state, _ = step(state, "n1", "healthy")
    state, _ = lead(state)
    state, res = run(state, "deploy_abort", deployment_id="d1", by="bob")
    assert res.ok
    dep = state.deployments["d1"]
    assert dep.state == "aborted" and dep.rollout.outcome == "aborted" and dep.closed
    assert "waiting" not in phases(state).values() or strategy == "rolling"
    assert {p for p in phases(state).values()} <= {"rolled_back", "waiting"}
    assert step(state, "n1", "active")[1].code == "E_DEPLOY_ENDED"
    assert lead(state)[1] == []


def test_the_deadline_ends_a_rollout_by_the_proposers_clock() -> None:
    state = deployed()
    state, _ = lead(state, now_s=1000.0)
    state = healthy_node(state, "n1")
    assert step(state, "n1", "deadline", now_s=1000.0 + 3599)[1].code == "E_DEPLOY_NOT_DUE"
    assert [f["phase"] for f in next_steps(state.deployments["d1"], 1000.0 + 3600, "n1")] == ["deadline"]
    state, results = lead(state, now_s=1000.0 + 3600)
    assert [r.ok for r in results] == [True]
    dep = state.deployments["d1"]
    assert dep.state == "rolled_back" and dep.rollout.code == "E_PAYLOAD_DEADLINE"
    assert phases(state) == {"n1": "rolled_back", "n2": "waiting", "n3": "waiting"}


def test_a_new_leader_resumes_from_the_replicated_state() -> None:
    state = deployed()
    state, _ = lead(state)
    state = healthy_node(state, "n1")
    again = restore(snapshot(state))  # a node that took over with only the snapshot
    assert leader_steps(again, 100.0, "n2") != [] and phases(again) == phases(state)
    assert [f["phase"] for f in next_steps(again.deployments["d1"], 100.0, "n2")] == ["shadow"]
    assert next_steps(again.deployments["d1"], 100.0, "n2")[0]["node_id"] == "n2"
    a, _ = lead(state)
    b, _ = lead(again)
    assert phases(a) == phases(b) == {"n1": "active", "n2": "shadow", "n3": "waiting"}


def test_a_copy_that_failed_fails_its_node_and_ends_the_rollout() -> None:
    state, _ = run(zone(), "deploy", **deploy_fields())
    state, _ = status(state, "n1", "failed", code="E_PAYLOAD_HASH", message="controller.py")
    state, results = lead(state)
    assert results and all(r.ok for r in results)
    assert state.deployments["d1"].rollout.code == "E_PAYLOAD_HASH"


def test_the_deadline_counts_from_the_first_leader_that_saw_it_even_with_no_copy_verified() -> None:
    state, _ = run(zone(), "deploy", **deploy_fields())  # no target ever reports
    state, results = lead(state, now_s=50.0)
    assert [r.message for r in results] == ["deployment d1: 3600 s to finish"]
    assert lead(state, now_s=3649.0)[1] == []
    state, _ = lead(state, now_s=3650.0)
    assert state.deployments["d1"].state == "failed" and state.deployments["d1"].closed


def test_a_version_not_newer_than_the_active_one_is_refused_unless_a_rollback() -> None:
    state = deployed()
    for node in NODES:
        state, _ = lead(state)
        state = healthy_node(state, node)
    state, res = run(state, "deploy", **deploy_fields("d2", strategy="rolling"))  # the same 1.0.0
    assert res.ok
    for n in NODES:
        state, _ = status(state, n, "verified", dep_id="d2")
    state, _ = lead(state)
    dep = state.deployments["d2"]
    assert dep.state == "failed" and dep.rollout.code == "E_PAYLOAD_ROLLBACK", dep.rollout
    assert "deploy rollback --to 1.0.0" in dep.rollout.reason
    assert set(phases(state, "d2").values()) == {"waiting"}  # nothing ran


def test_deploy_rollback_needs_a_version_that_was_active_before() -> None:
    state = deployed()
    refused = run(state, "deploy_rollback", deployment_id="r1", name="peak-guard", by="bob")[1]
    assert refused.code == "E_PAYLOAD_ROLLBACK"  # nothing is active yet
    for node in NODES:
        state, _ = lead(state)
        state = healthy_node(state, node)
    same = run(state, "deploy_rollback", deployment_id="r1", name="peak-guard", to_version="1.0.0", by="b")[1]
    assert same.code == "E_PAYLOAD_ROLLBACK" and "is the active version" in same.message
    older = run(state, "deploy_rollback", deployment_id="r1", name="peak-guard", by="bob")[1]
    assert older.code == "E_PAYLOAD_ROLLBACK" and "older" in older.message
    never = run(state, "deploy_rollback", deployment_id="r1", name="peak-guard", to_version="0.9.0", by="b")
    assert never[1].code == "E_PAYLOAD_ROLLBACK" and "never active" in never[1].message


def test_an_explicit_rollback_deploys_the_old_manifest_and_may_become_active() -> None:
    import hashlib

    from meshems.core.payload_manifest import canonical_bytes, manifest_digest, parse_manifest

    v2 = canonical_bytes(parse_manifest({
        "name": "peak-guard", "version": "2.0.0", "kind": "controller", "entry_point": "controller.py",
        "expires_at": "2030-01-01T00:00:00Z",
        "files": [{"path": "controller.py", "sha256": hashlib.sha256(b"y").hexdigest(), "size": 1}],
    }))  # fmt: skip
    state = deployed()
    for node in NODES:
        state, _ = lead(state)
        state = healthy_node(state, node)
    state, res = run(
        state, "deploy", **deploy_fields("d2", manifest=v2, digest=manifest_digest(v2), strategy="rolling")
    )
    assert res.ok, res
    for n in NODES:
        state, _ = status(state, n, "verified", dep_id="d2")
    for node in NODES:
        state, _ = lead(state)
        state, _ = step(state, node, "healthy", dep_id="d2")
        state, _ = lead(state)
        state, res = step(state, node, "active", dep_id="d2")
        assert res.ok, (node, res)
    assert state.deployments["d2"].state == "done", state.deployments["d2"].rollout
    state, res = run(state, "deploy_rollback", deployment_id="r1", name="peak-guard", by="bob")
    assert res.ok, res
    back = state.deployments["r1"]
    assert (back.version, back.rollback, back.manifest, back.state) == ("1.0.0", True, MANIFEST, "active")
    for n in NODES:
        state, _ = status(state, n, "verified", dep_id="r1")
    state, results = lead(state)
    assert all(r.ok for r in results) and phases(state, "r1")["n1"] == "shadow"
