"""The node's rollout duty with a stand-in sandbox: as leader it proposes the steps the state
asks for; as a target in shadow it runs one cycle per step, proposes healthy after the shadow
count, and on a crash stops the worker before it proposes failed (again, until the zone takes
it); a worker whose rollout moved on is stopped."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, ClassVar

import pytest

from meshems.adapters.payload_store import PayloadStore
from meshems.adapters.sandbox import Outcome
from meshems.core.cluster import ZoneState, apply
from meshems.core.node_events import RaftChanged
from meshems.node import rollout_duty
from meshems.node.rollout_duty import RolloutDuty
from tests.core.test_deploy_handlers import DIGEST, run
from tests.core.test_rollout import deployed, healthy_node, lead, phases


class FakeSandbox:
    outcomes: ClassVar[list[Outcome]] = []
    stopped: ClassVar[list[str]] = []

    def __init__(self, spec: Any) -> None:
        self.spec = spec

    def cycle(self, image: dict[str, Any], policy: dict[str, Any]) -> Outcome:
        assert "batteries" in image and "import_limit_kw" in policy
        return self.outcomes.pop(0) if self.outcomes else Outcome("ok", (), 1.0)

    def stop(self) -> None:
        FakeSandbox.stopped.append(self.spec.name)


class Zone:
    """The replicated state as the duty sees it: commits apply at once (or fail)."""

    def __init__(self, state: ZoneState, role: str = "follower") -> None:
        self.state, self.role, self.down = state, role, False
        self.proposed: list[str] = []

    def view(self) -> RaftChanged:
        return RaftChanged(self.role, 2, "n1", True, True)

    async def commit(self, data: bytes) -> dict[str, Any]:
        if self.down:
            return {"ok": False, "code": "E_NO_QUORUM", "message": "down"}
        self.state, res = apply(self.state, data, 2, self.state.last_index + 1)
        self.proposed.append(res.message)
        return {"ok": res.ok, "code": res.code, "message": res.message}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeSandbox]:
    monkeypatch.setattr(rollout_duty, "Sandbox", FakeSandbox)
    FakeSandbox.outcomes, FakeSandbox.stopped = [], []
    return FakeSandbox


def in_shadow(**over: object) -> ZoneState:
    state, res = run(deployed(**over), "set_policy", values={"import_limit_kw": 30.0})
    assert res.ok, res
    state, _ = lead(state)
    assert phases(state)["n1"] == "shadow"
    return state


def duty(z: Zone, tmp_path: Path, node_id: str = "n1") -> RolloutDuty:
    return RolloutDuty(node_id, PayloadStore(tmp_path), lambda: z.state, z.view, z.commit)


def test_a_node_in_shadow_proposes_healthy_after_the_shadow_count(fake: Any, tmp_path: Path) -> None:
    z = Zone(in_shadow())
    d = duty(z, tmp_path)
    for _ in range(29):  # the manifest's default: 30 shadow cycles
        asyncio.run(d.step())
    assert phases(z.state)["n1"] == "shadow"
    asyncio.run(d.step())
    assert phases(z.state)["n1"] == "healthy"
    assert dict(z.state.deployments["d1"].rollout.phases["n1"].figures)["cycles"] == 30.0


def test_the_deployments_shadow_and_watch_cycles_override_the_manifests(fake: Any, tmp_path: Path) -> None:
    z = Zone(in_shadow(shadow_cycles=2, watch_cycles=1))
    d = duty(z, tmp_path)
    asyncio.run(d.step())
    assert phases(z.state)["n1"] == "shadow"
    asyncio.run(d.step())
    assert phases(z.state)["n1"] == "healthy"
    z.state, _ = lead(z.state)
    assert phases(z.state)["n1"] == "watch"
    asyncio.run(d.step())
    assert phases(z.state)["n1"] == "active"
    assert dict(z.state.deployments["d1"].rollout.phases["n1"].figures)["cycles"] == 1.0


def test_a_crash_stops_the_worker_first_and_failed_is_proposed_until_taken(fake: Any, tmp_path: Path) -> None:
    z = Zone(in_shadow())
    d = duty(z, tmp_path)
    fake.outcomes = [Outcome("crash", (), 3.0, "E_PAYLOAD_CRASH", "worker exited with 3")]
    z.down = True
    asyncio.run(d.step())
    assert fake.stopped == ["peak-guard"] and phases(z.state)["n1"] == "shadow"
    z.down = False
    asyncio.run(d.step())  # proposed again, no new worker
    dep = z.state.deployments["d1"]
    assert phases(z.state)["n1"] == "failed" and dep.state == "failed"
    assert dep.rollout.code == "E_PAYLOAD_CRASH" and fake.stopped == ["peak-guard"]


def test_the_leader_proposes_the_steps_and_a_halted_worker_is_stopped(fake: Any, tmp_path: Path) -> None:
    state, _ = run(deployed(), "set_policy", values={"import_limit_kw": 30.0})
    z = Zone(state, role="leader")
    d = duty(z, tmp_path)
    asyncio.run(d.step())  # the leader starts n1's shadow, then n1 (itself) runs a cycle
    assert phases(z.state)["n1"] == "shadow" and "n1" in d.node_id
    z.state, _ = run(z.state, "deploy_abort", deployment_id="d1", by="bob")
    asyncio.run(d.step())
    assert fake.stopped == ["peak-guard"] and d.runs == {}


def test_the_leader_hands_the_active_payloads_decisions_to_its_dispatch(fake: Any, tmp_path: Path) -> None:
    state, _ = run(deployed(), "set_policy", values={"import_limit_kw": 30.0})
    for node in ("n1", "n2", "n3"):
        state, _ = lead(state)
        state = healthy_node(state, node)
    assert state.deployments["d1"].state == "done"
    (tmp_path / "payloads" / DIGEST).mkdir(parents=True)
    (tmp_path / "payloads" / DIGEST / "bundle.mpkg").write_bytes(b"x")  # stored here
    given: list[Any] = []
    z = Zone(state, role="leader")
    d = RolloutDuty("n1", PayloadStore(tmp_path), lambda: z.state, z.view, z.commit, given.append)
    fake.outcomes = [Outcome("ok", ({"device_id": "nope", "kw": 1.0},), 1.0),
                     Outcome("crash", (), 2.0, "E_PAYLOAD_CRASH", "died")]  # fmt: skip
    asyncio.run(d.step())
    assert given[-1].name == "peak-guard" and given[-1].setpoints == ()  # an unknown device: refused
    asyncio.run(d.step())
    assert given[-1] is None and d.active_failures == 1  # this cycle dispatches built-in
    z.role = "follower"
    asyncio.run(d.step())
    assert given[-1] is None and d.runs == {} and fake.stopped
