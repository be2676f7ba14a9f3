"""Zone control on one node: leader dispatch, survival without quorum, local protection.

Owns the loops and their timing; every decision comes from the pure core (`dispatch`,
`protection`). The leader commits one `dispatch` command per cycle; a node without quorum
for SURVIVAL_AFTER_S runs the same dispatch on its own site inside its last committed
envelope; protection reacts to every site-meter reading at once, with no one to ask.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any

from meshems.actuation import Actuator
from meshems.adapters.consensus import RaftNode
from meshems.adapters.poller import DeviceRuntime, Poller
from meshems.core import commands
from meshems.core.config import ClusterConfig, NodeConfig
from meshems.core.dispatch import command_fields, dispatch
from meshems.core.errors import RETRYABLE_CODES
from meshems.core.policy import Policy
from meshems.core.process_image import DeviceInfo, build_image, image_from_readings
from meshems.core.protection import LoadState, protect
from meshems.logs import log

SURVIVAL_AFTER_S = 1.5
LEADER_TICK_S = 0.05
STALE_REPORT_S = 3.0


class ZoneControl:
    def __init__(
        self,
        cfg: ClusterConfig,
        node: NodeConfig,
        raft: RaftNode,
        poller: Poller | None,
        actuator: Actuator | None,
        propose: Callable[[bytes], Awaitable[dict[str, Any]]],
    ) -> None:
        self.cfg = cfg
        self.node = node
        self.raft = raft
        self.poller = poller
        self.actuator = actuator
        self.propose = propose
        self.mode = "normal"  # normal | survival
        self._no_quorum_since: float | None = None
        self.trips: list[dict[str, Any]] = []
        self.last_cycle_result: dict[str, Any] = {}
        self._report_seen: dict[str, tuple[int, float]] = {}
        self._refused_in_a_row = 0
        #: the node's own forecast battery reserve (kWh), for survival; set by the daemon
        self.local_reserve_kwh: Callable[[], float] = lambda: 0.0

    # --- leader dispatch ----------------------------------------------------------------

    async def leader_loop(self) -> None:
        """Dispatch once per cycle while leading; a new leader dispatches at once, so the
        control gap at a leader change is the election plus one round trip."""
        last_dispatch = last_orphans = 0.0
        was_leader = False
        while True:
            await asyncio.sleep(LEADER_TICK_S)
            st = self.raft.status()
            if st.role != "leader" or not st.has_quorum:
                was_leader = False
                continue
            state = self.raft.state
            if state.shared and time.monotonic() - last_orphans >= 1.0:
                last_orphans = time.monotonic()
                await self._move_orphans(self._stale_nodes(), st.term)
            if state.policy is None:
                if (
                    self.cfg.policy is not None
                    and time.monotonic() - last_dispatch >= 1.0
                    and self._shed_loads_declared(state)
                ):
                    last_dispatch = time.monotonic()
                    values = self.cfg.policy.model_dump()
                    values["shed_order"] = list(values["shed_order"])
                    res = await self.propose(
                        commands.encode("set_policy", f"policy-init-{st.term}", values=values)
                    )
                    log("info", "I_POLICY", "committed the configured zone policy", result=res.get("code"))
                continue
            now = time.monotonic()
            if not state.reports or (was_leader and now - last_dispatch < state.policy.cycle_s):
                continue
            was_leader = True
            last_dispatch = now
            await self._dispatch_once(state.policy, st.term)

    def _shed_loads_declared(self, state: Any) -> bool:
        """The configured policy names loads on relays of initial nodes: commit it once the
        zone knows them all (every replica refuses a policy with an unknown load)."""
        assert self.cfg.policy is not None
        return all(load.rpartition(":")[0] in state.devices for load in self.cfg.policy.shed_order)

    def _stale_nodes(self) -> frozenset[str]:
        """Nodes whose report has not advanced for STALE_REPORT_S (their gateway is gone)."""
        now = time.monotonic()
        stale = set()
        for node, rep in self.raft.state.reports.items():
            seen = self._report_seen.get(node)
            if seen is None or seen[0] != rep.seq:
                self._report_seen[node] = (rep.seq, now)
            elif now - seen[1] > STALE_REPORT_S:
                stale.add(node)
        return frozenset(stale)

    async def _move_orphans(self, stale: frozenset[str], term: int) -> None:
        """Bus ownership: a shared device whose owner stopped reporting moves to another
        gateway that can reach it and still reports."""
        state = self.raft.state
        connected = self.raft.status().partners  # Raft's own view: is the owner's gateway there?
        for dev_id, nodes in sorted(state.shared.items()):
            dev = state.devices.get(dev_id)
            # both: its reports stopped, and the leader has lost its connection to it (a
            # slow report alone must not move a single-master device back and forth)
            if dev is None or dev.owner not in stale or connected.get(dev.owner, dev.owner == self.node.id):
                continue
            heir = next((n for n in nodes if n != dev.owner and n not in stale and n in state.reports), None)
            if heir is None:
                continue
            rid = f"transfer-{dev_id}-{heir}-{term}-{state.last_index}"
            res = await self.propose(commands.encode("transfer_device", rid, device_id=dev_id, node_id=heir))
            log(
                "info",
                "I_OWNERSHIP",
                f"{dev_id}: owner {dev.owner} is gone, moved to {heir}",
                result=res.get("code"),
            )

    async def _dispatch_once(self, policy: Policy, term: int) -> None:
        stale = self._stale_nodes()
        state = self.raft.state
        image = build_image(state, stale_nodes=stale)
        if not image.nodes:
            return
        shed_kw = {k: r.expected_kw for k, r in state.relays.items() if not r.closed}
        reserve = sum(
            v
            for rep in state.reports.values()
            for r in rep.readings
            for k, v in r.values
            if k == "reserve_kwh"
        )
        result = dispatch(image, policy, reserve_kwh=reserve, shed_kw=shed_kw)
        cycle = (state.last_dispatch.cycle + 1) if state.last_dispatch else 1
        data = commands.encode("dispatch", f"dispatch-{term}-{cycle}", **command_fields(result, cycle))
        res = await self.propose(data)
        self.last_cycle_result = {"cycle": cycle, **res}
        code = res.get("code")
        # one stale cycle happens when an old leader's dispatch commits late; a run of them
        # means dispatch is not getting through, and that must be visible
        ok = bool(res.get("ok"))
        self._refused_in_a_row = 0 if ok or code in RETRYABLE_CODES else self._refused_in_a_row + 1
        unexpected = not ok and code not in RETRYABLE_CODES and code != "E_STALE_DISPATCH"
        if unexpected or self._refused_in_a_row in (3, 30, 300):
            log("warning", code or "E_DISPATCH", f"dispatch refused: {res.get('message')}",
                in_a_row=self._refused_in_a_row)  # fmt: skip

    # --- survival -----------------------------------------------------------------------

    async def survival_loop(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            st = self.raft.status()
            now = time.monotonic()
            if st.has_quorum and st.leader is not None:
                self._no_quorum_since = None
                if self.mode == "survival":
                    self.mode = "normal"
                    if self.actuator is not None:
                        self.actuator.leave_survival()
                    log("info", "I_SURVIVAL_END", "quorum is back: following the leader's setpoints again")
                continue
            if self._no_quorum_since is None:
                self._no_quorum_since = now
            if now - self._no_quorum_since < SURVIVAL_AFTER_S:
                continue
            if self.mode != "survival":
                self.mode = "survival"
                log("warning", "E_QUORUM", "no quorum: survival mode inside the last committed envelope")
            await self._survival_step()

    async def _survival_step(self) -> None:
        if self.poller is None or self.actuator is None:
            return
        state = self.raft.state
        envelope = state.envelopes.get(self.node.id)
        base = state.policy or Policy()
        if envelope is None:
            return  # never received an envelope: protection alone keeps the site safe
        policy = Policy(
            import_limit_kw=envelope.import_limit_kw,
            export_limit_kw=envelope.export_limit_kw,
            soc_floor_pct=max(base.soc_floor_pct, envelope.soc_reserve_pct),
            soc_ceiling_pct=base.soc_ceiling_pct,
            shed_order=envelope.shed,
            margin_kw=base.margin_kw,
            restore_margin_kw=base.restore_margin_kw,
            reserve_forecast=False,
        )
        devices = [DeviceInfo(d.id, d.kind, self.node.id, d.min_kw, d.max_kw) for d in self.node.devices]
        readings = {d["id"]: (d["state"], d["values"]) for d in self.poller.snapshot()}
        image = image_from_readings(devices, readings)
        shed_kw = self.actuator.survival_shed_kw()
        reserve = self.local_reserve_kwh() if base.reserve_forecast else 0.0
        result = dispatch(
            image,
            dataclasses.replace(policy, reserve_forecast=base.reserve_forecast),
            reserve_kwh=reserve,
            shed_kw=shed_kw,
        )
        await self.actuator.apply_survival(result)

    # --- protection ---------------------------------------------------------------------

    def on_poll(self, dev: DeviceRuntime) -> None:
        """Poller callback (loop thread): check the site meter's reading at once."""
        prot = self.node.protection
        if (
            prot is None
            or dev.cfg.kind != "meter"
            or dev.failures
            or self.poller is None
            or self.actuator is None
        ):
            return
        grid = dev.values.get(dev.profile.roles.get("power_kw", ""), None)
        if grid is None:
            return
        loads = []
        for rt in self.poller.devices.values():
            if rt.cfg.kind != "relay":
                continue
            v = rt.role_values()
            ch = 1
            while f"relay_{ch}" in v:
                loads.append(
                    LoadState(f"{rt.cfg.id}:{ch}", v[f"relay_{ch}"] >= 0.5, v.get(f"load_{ch}_kw", 0.0))
                )
                ch += 1
        shed_order = self.raft.state.policy.shed_order if self.raft.state.policy else ()
        loads = [ld for ld in loads if not self.actuator.locked_out(ld.id)]
        pv_ids = [d.id for d in self.node.devices if d.kind == "pv" and d.id in self.poller.devices]
        trips = protect(grid, prot.max_import_kw, prot.max_export_kw, loads, shed_order, pv_ids)
        if trips:
            detected = time.monotonic()
            for t in trips:
                self.actuator.lock_out(t.target, prot.hold_s)
            asyncio.get_running_loop().create_task(self._trip(trips, grid, detected))

    async def _trip(self, trips: tuple, grid_kw: float, detected: float) -> None:
        assert self.actuator is not None
        for t in trips:
            res = await self.actuator.protective_write(t)
            event = {
                "t": time.time(),
                "kind": t.kind,
                "target": t.target,
                "reason": t.reason,
                "grid_kw": grid_kw,
                "ok": res.get("ok"),
                "ms": round(1000 * (time.monotonic() - detected), 1),
            }
            self.trips = [*self.trips[-49:], event]
            log("warning", "I_PROTECTION_TRIP", f"{t.kind} {t.target}: {t.reason}", **event)
