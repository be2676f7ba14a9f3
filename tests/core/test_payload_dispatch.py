"""The active payload in the leader's dispatch: its fresh decisions replace the built-in
setpoints of the devices it decided and add the ones it alone decided; stale or absent advice
leaves the built-in result; which payload a leader runs follows the rollout state."""

from __future__ import annotations

from meshems.core.dispatch import DispatchResult
from meshems.core.payload_dispatch import Advice, active_payload, with_advice
from tests.core.test_deploy_handlers import run
from tests.core.test_rollout import deployed, healthy_node, lead, step

BUILTIN = DispatchResult(
    setpoints=(("n1-bat", 5.0, "balancing", "b"), ("n2-bat", 0.0, "balancing", "b")),
    relays=(("n1-relays:4", True, "shed", "r", 1.0),), envelopes=(), inputs={"grid_kw": 40.0},
)  # fmt: skip


def test_fresh_advice_replaces_the_builtin_setpoints_it_covers() -> None:
    advice = Advice("peak-guard", (("n2-bat", 7.5, "over"), ("n3-pv", -1.0, "cap")), made_s=10.0)
    out = with_advice(BUILTIN, advice, now_s=10.5, max_age_s=2.0)
    assert out.setpoints == (("n1-bat", 5.0, "balancing", "b"), ("n2-bat", 7.5, "payload:peak-guard", "over"),
                             ("n3-pv", -1.0, "payload:peak-guard", "cap"))  # fmt: skip
    assert (out.relays, out.envelopes, out.inputs) == (BUILTIN.relays, BUILTIN.envelopes, BUILTIN.inputs)


def test_stale_or_absent_or_empty_advice_keeps_the_builtin_result() -> None:
    advice = Advice("peak-guard", (("n2-bat", 7.5, "over"),), made_s=10.0)
    assert with_advice(BUILTIN, advice, now_s=12.5, max_age_s=2.0) is BUILTIN
    assert with_advice(BUILTIN, None, now_s=10.0, max_age_s=2.0) is BUILTIN
    assert with_advice(BUILTIN, Advice("p", (), 10.0), now_s=10.0, max_age_s=2.0) is BUILTIN


def test_the_leader_runs_a_payload_once_promoted_here_or_once_its_rollout_is_done() -> None:
    state = deployed()
    state, _ = lead(state)
    state, _ = step(state, "n1", "healthy")
    assert active_payload(state, "n1") is None  # shadow: not applied
    state, _ = lead(state)
    assert active_payload(state, "n1").id == "d1"  # type: ignore[union-attr]  # watched while active
    assert active_payload(state, "n2") is None
    state, _ = step(state, "n1", "active")
    for node in ("n2", "n3"):
        state, _ = lead(state)
        state = healthy_node(state, node)
    assert state.deployments["d1"].state == "done"
    assert active_payload(state, "n3").id == "d1"  # type: ignore[union-attr]
    state, _ = run(state, "deploy_abort", deployment_id="d1", by="bob")
    assert active_payload(state, "n1") is None  # aborted: the built-in controllers again


def test_a_halted_rollout_leaves_the_builtin_controllers() -> None:
    state = deployed()
    state, _ = lead(state)
    state, _ = step(state, "n1", "healthy")
    state, _ = lead(state)
    state, _ = step(state, "n1", "failed", code="E_PAYLOAD_CRASH", reason="died")
    assert active_payload(state, "n1") is None
