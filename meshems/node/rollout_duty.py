"""The node's part of controller rollouts. As leader (with quorum) it proposes the steps
`core.rollout_plan` reads from the replicated state, with its own wall clock for deadlines. As a
target it runs the payload in its sandbox while its phase says so (shadow, then watch once
promoted), once per policy cycle next to the built-in controllers: the decisions are checked
(`core.payload_decisions`) and compared with the committed setpoints; by the verdict
(`core.payload_shadow`) it proposes healthy / active, or stops the worker at once and proposes
failed. As leader it also runs the zone's active payload (`core.payload_dispatch`) and hands
its checked decisions to the dispatch (`advise`); a cycle without them (timeout, crash) is
counted and dispatches built-in. A worker no phase asks for is stopped.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from meshems.adapters.payload_store import PayloadStore
from meshems.adapters.sandbox import Sandbox, SandboxSpec
from meshems.core.cluster import ZoneState
from meshems.core.deploy_records import Deployment
from meshems.core.errors import MeshemsError
from meshems.core.node_events import RaftChanged
from meshems.core.payload_cycle import image_doc, policy_doc
from meshems.core.payload_decisions import Checked, check_decisions
from meshems.core.payload_dispatch import Advice, active_payload
from meshems.core.payload_manifest import Manifest, from_canonical
from meshems.core.payload_shadow import ShadowCycle, shadow_cycle, verdict
from meshems.core.process_image import build_image
from meshems.core.rollout_plan import figures, leader_steps, node_step, node_verdict
from meshems.logs import log

#: how often the duty looks at the state when no policy gives a cycle
IDLE_S = 1.0


class _Run:
    """One payload's worker on this node and the cycles of its current phase."""

    def __init__(self, manifest: Manifest, sandbox: Sandbox) -> None:
        self.manifest, self.sandbox = manifest, sandbox
        self.phase = ""
        self.cycles: list[ShadowCycle] = []
        self.codes: list[str] = []


class RolloutDuty:
    def __init__(
        self,
        node_id: str,
        store: PayloadStore,
        state: Callable[[], ZoneState],
        view: Callable[[], RaftChanged],
        commit: Callable[[bytes], Awaitable[dict[str, Any]]],
        advise: Callable[[Advice | None], None] = lambda _: None,
        **sandbox_options: Any,
    ) -> None:
        self.node_id, self.store, self.state, self.view, self.commit = node_id, store, state, view, commit
        self.advise, self.sandbox_options = advise, sandbox_options
        self.active_failures = 0  # leader cycles the active payload gave no decisions
        self.runs: dict[str, _Run] = {}
        self.failed: dict[str, bytes] = {}  # a failed step proposed again until the zone takes it

    async def loop(self) -> None:
        """Work the rollouts until cancelled; the workers are stopped on the way out."""
        try:
            while True:
                started = time.monotonic()
                try:
                    await self.step()
                except Exception as exc:  # a bug must not end the duty: logged, tried next cycle
                    log("error", "E_ROLLOUT_DUTY", f"{type(exc).__name__}: {exc}")
                policy = self.state().policy
                every_s = policy.cycle_s if policy is not None else IDLE_S
                await asyncio.sleep(max(0.05, every_s - (time.monotonic() - started)))
        finally:
            for dep_id in list(self.runs):
                self.runs.pop(dep_id).sandbox.stop()

    async def step(self) -> None:
        state = self.state()
        view = self.view()
        leads = view.role == "leader" and view.has_quorum
        if leads:
            for data in leader_steps(state, time.time(), self.node_id):
                res = await self.commit(data)
                log("info" if res.get("ok") else "debug", "I_ROLLOUT_STEP", str(res.get("message", "")),
                    result=res.get("code"))  # fmt: skip
        state = self.state()  # with the steps just committed
        mine = {d.id: d for d in state.deployments.values() if self._runs_here(d)}
        active = active_payload(state, self.node_id) if leads else None
        if active is not None and active.digest in self.store.digests():
            mine[active.id] = active
        else:
            active = None
        for dep_id in [k for k in self.runs if k not in mine]:
            run = self.runs.pop(dep_id)
            await asyncio.to_thread(run.sandbox.stop)
            log("info", "I_PAYLOAD_STOPPED", f"deployment {dep_id}: worker stopped (its rollout moved on)")
        self.failed = {k: v for k, v in self.failed.items() if k in mine}
        advice = None
        for dep in mine.values():
            if dep.id in self.failed:
                await self._propose(dep, self.failed[dep.id], "failed")
                continue
            checked = await self._cycle(state, dep)
            if active is not None and dep.id == active.id and checked is not None:
                advice = Advice(dep.name, checked.accepted, time.monotonic())
        if active is not None and advice is None and state.policy is not None:
            self.active_failures += 1  # this cycle dispatches built-in
            log("warning", "W_PAYLOAD_SKIPPED", f"{active.name}: no decisions this cycle; built-in dispatch",
                failures=self.active_failures)  # fmt: skip
        self.advise(advice)

    def _runs_here(self, dep: Deployment) -> bool:
        return (dep.kind == "controller" and not dep.aborted and not dep.rollout.outcome
                and dep.rollout.phase_of(self.node_id) in ("shadow", "healthy", "watch"))  # fmt: skip

    async def _cycle(self, state: ZoneState, dep: Deployment) -> Checked | None:
        """One cycle of `dep`'s worker: its checked decisions (None: it gave none)."""
        phase = dep.rollout.phase_of(self.node_id)
        run = self.runs.get(dep.id)
        if run is None:
            manifest = from_canonical(dep.manifest)
            spec = SandboxSpec.of(manifest, self.store.path(dep.digest), **self.sandbox_options)
            run = self.runs[dep.id] = _Run(manifest, Sandbox(spec))
        if run.phase != phase:
            run.phase, run.cycles, run.codes = phase, [], []
        if phase == "healthy" or state.policy is None:
            return None  # promoted by the leader next; the worker stays up
        image = image_doc(build_image(state), state.devices)
        out = await asyncio.to_thread(run.sandbox.cycle, image, policy_doc(state.policy))
        checked = check_decisions(list(out.decisions), state.devices) if out.status == "ok" else None
        builtin = [(d, sp.kw) for d, sp in state.setpoints.items()]
        run.cycles.append(shadow_cycle(out.status, out.elapsed_ms, checked, builtin, out.message))
        run.codes.append(out.code or (checked.refused[0].code if checked and checked.refused else ""))
        if phase not in ("shadow", "watch"):
            return checked  # the active payload after its rollout: no verdict any more
        h = run.manifest.health
        v = verdict(run.cycles, dep.cycles(phase, h), run.manifest.cycle_budget_ms, h.max_timeouts)
        decided = node_verdict(phase, v, run.codes)
        if decided is None:
            return checked
        next_phase, code, reason = decided
        data = node_step(dep, self.node_id, next_phase, figures(v), time.time(), code, reason)
        if next_phase == "failed":  # roll back by itself at once: the built-in controllers stay
            self.runs.pop(dep.id, None)
            self.failed[dep.id] = data
            await asyncio.to_thread(run.sandbox.stop)
            log("warning", code, f"deployment {dep.id}: {reason}", deployment=dep.id)
        if not await self._propose(dep, data, next_phase) and next_phase != "failed":
            run.cycles = run.cycles[:-1]  # the verdict is proposed again next cycle
        return checked if next_phase != "failed" else None

    async def _propose(self, dep: Deployment, data: bytes, phase: str) -> bool:
        try:
            res = await self.commit(data)
        except MeshemsError as exc:
            res = {"ok": False, "code": exc.code, "message": exc.message}
        log("info", "I_ROLLOUT_NODE", f"deployment {dep.id}: {self.node_id} {phase}: {res.get('code')}",
            deployment=dep.id)  # fmt: skip
        code = str(res.get("code", ""))
        if res.get("ok") or code in ("E_DEPLOY_ENDED", "E_DEPLOY_STATE") or code.startswith("E_CMD_"):
            self.failed.pop(dep.id, None)
            return True
        return False
