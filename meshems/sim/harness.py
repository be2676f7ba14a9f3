"""A deterministic multi-node harness: N simulated gateways with site physics, a fake
consensus that replicates the real `core.cluster.apply`, and a fake clock, driven by a
scenario script. Everything runs in one thread in fixed 100 ms steps, so a scenario gives
the same trace every time (golden traces, as etcd-io/raft's testdata do).

The nodes follow the runtime's rules with the pure core: each reports its site about once
per second, the leader dispatches once per cycle, a node actuates only committed setpoints
whose (term, index) is newer than the last it applied, and a node without quorum for 1.5 s
runs survival dispatch inside its last committed envelope.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from meshems.core import commands
from meshems.core.cluster import ZoneState, apply
from meshems.core.dispatch import command_fields, dispatch
from meshems.core.fencing import newer
from meshems.core.policy import Policy
from meshems.core.process_image import DeviceInfo, build_image, image_from_readings
from meshems.sim.physics import Site

STEP_MS = 100
REPORT_MS = 1000
SURVIVAL_AFTER_MS = 1500
ELECTION_MS = 300  # a new leader is elected this long after the old one is lost
STALE_REPORT_MS = 3000
REVERT_S = 3.0  # the batteries revert an unrefreshed setpoint after this


def _with_revert(site: Site) -> Site:
    assert site.battery is not None
    return dataclasses.replace(site, battery=site.battery.write_revert_timeout(REVERT_S))


@dataclass
class SimNode:
    node_id: str
    site: Site
    alive: bool = True
    applied_index: int = 0  # how much of the committed log this replica has applied
    state: ZoneState = field(default_factory=ZoneState)
    actuated: dict[str, tuple[int, int]] = field(default_factory=dict)
    no_quorum_since_ms: int | None = None
    survival: bool = False
    report_seq: int = 0

    def devices(self) -> list[DeviceInfo]:
        n = self.node_id
        return [
            DeviceInfo(f"{n}-meter", "meter", n, 0, 0),
            DeviceInfo(f"{n}-bat", "battery", n, -50, 50),
            DeviceInfo(f"{n}-pv", "pv", n, 0, 40),
        ]

    def readings(self) -> dict[str, tuple[str, dict[str, float]]]:
        n, s, b = self.node_id, self.site, self.site.battery
        assert b is not None and s.pv is not None
        return {
            f"{n}-meter": ("ok", {"power_kw": round(s.meter.grid_kw, 3)}),
            f"{n}-bat": (
                "ok",
                {
                    "power_kw": round(b.power_kw, 3),
                    "soc_pct": round(b.soc_pct, 3),
                    "capacity_kwh": b.capacity_kwh,
                    "max_charge_kw": b.max_charge_kw,
                    "max_discharge_kw": b.max_discharge_kw,
                },
            ),
            f"{n}-pv": ("ok", {"power_kw": round(s.pv_kw, 3), "rated_kw": s.pv.rated_kw}),
        }


class Harness:
    """Nodes n1..nN, a fake consensus over the real `apply`, a scenario, a trace."""

    def __init__(self, nodes: int = 3, policy: Policy | None = None, seed: int = 1) -> None:
        self.t_ms = 0
        self.nodes = {
            f"n{i + 1}": SimNode(
                f"n{i + 1}", _with_revert(Site.demo(seed=seed + i, t_s=12 * 3600.0, soc_pct=60.0))
            )
            for i in range(nodes)
        }
        self._report_seen: dict[str, tuple[int, int]] = {}
        self.log: list[tuple[int, bytes]] = []  # committed entries: (term, data)
        self.term = 1
        self.leader: str | None = "n1"
        self.lost_leader_at: int | None = None
        self.groups: list[set[str]] = [set(self.nodes)]  # network partitions
        self.trace: list[str] = []
        self.violations: list[str] = []
        self.cycle = 0
        self._rid = 0
        self.policy = policy or Policy(import_limit_kw=30.0)
        for n in self.nodes.values():
            self._commit_from(
                n.node_id,
                commands.encode(
                    "declare_node",
                    f"decl-{n.node_id}",
                    node_id=n.node_id,
                    raft=f"{n.node_id}:1",
                    api=f"{n.node_id}:2",
                    devices=[
                        {"id": d.id, "kind": d.kind, "min_kw": float(d.min_kw), "max_kw": float(d.max_kw)}
                        for d in n.devices()
                    ],
                ),
            )
        self._commit_from("n1", commands.encode("set_policy", "policy", values=self.policy.to_dict()))

    # --- the fake consensus -------------------------------------------------------------------

    def _group(self, node_id: str) -> set[str]:
        return next(g for g in self.groups if node_id in g)

    def has_quorum(self, node_id: str) -> bool:
        alive = {n for n in self._group(node_id) if self.nodes[n].alive}
        return len(alive) > len(self.nodes) / 2

    def _commit_from(self, node_id: str, data: bytes) -> bool:
        """A proposal through `node_id`: committed only if the leader is reachable and its
        side has a majority (a minority side never commits)."""
        if self.leader is None or self.leader not in self._group(node_id) or not self.has_quorum(self.leader):
            return False
        self.log.append((self.term, data))
        self._replicate()
        return True

    def _replicate(self) -> None:
        for n in self.nodes.values():
            if not n.alive or (self.leader is not None and self.leader not in self._group(n.node_id)):
                continue
            while n.applied_index < len(self.log):
                term, data = self.log[n.applied_index]
                n.applied_index += 1
                n.state, _ = apply(n.state, data, term, n.applied_index)

    def _elect(self) -> None:
        if self.leader is not None and self.nodes[self.leader].alive and self.has_quorum(self.leader):
            return
        if self.lost_leader_at is None:
            self.lost_leader_at = self.t_ms
            if self.leader is not None:
                self.trace.append(f"{self.t_ms / 1000:7.1f} leader {self.leader} lost")
            self.leader = None
            return
        if self.t_ms - self.lost_leader_at < ELECTION_MS:
            return
        for g in self.groups:
            alive = sorted(n for n in g if self.nodes[n].alive)
            if len(alive) > len(self.nodes) / 2:
                up_to_date = max(alive, key=lambda n: (self.nodes[n].applied_index, n))
                self.term += 1
                self.leader, self.lost_leader_at = up_to_date, None
                self.trace.append(f"{self.t_ms / 1000:7.1f} leader {self.leader} term {self.term}")
                self._replicate()
                return

    # --- scenario verbs -------------------------------------------------------------------------

    def kill(self, node_id: str) -> None:
        self.nodes[node_id].alive = False
        self.trace.append(f"{self.t_ms / 1000:7.1f} kill {node_id}")

    def restart(self, node_id: str) -> None:
        self.nodes[node_id].alive = True
        self.trace.append(f"{self.t_ms / 1000:7.1f} restart {node_id}")
        self._replicate()

    def partition(self, *groups: set[str]) -> None:
        self.groups = [set(g) for g in groups]
        self.trace.append(
            f"{self.t_ms / 1000:7.1f} partition " + " | ".join(" ".join(sorted(g)) for g in groups)
        )

    def heal(self) -> None:
        self.groups = [set(self.nodes)]
        self.trace.append(f"{self.t_ms / 1000:7.1f} heal")
        self._replicate()

    # --- one step -----------------------------------------------------------------------------

    def step(self) -> None:
        self.t_ms += STEP_MS
        self._elect()
        if self.t_ms % REPORT_MS == 0:
            for n in self.nodes.values():
                if n.alive:
                    self._report(n)
            if self.leader is not None and self.nodes[self.leader].alive and self.has_quorum(self.leader):
                self._dispatch(self.nodes[self.leader])
        for n in self.nodes.values():
            if n.alive:
                self._actuate(n)
            n.site = n.site.step(STEP_MS / 1000)

    def _report(self, n: SimNode) -> None:
        n.report_seq += 1
        previous = n.state.reports.get(n.node_id)
        n.report_seq = max(n.report_seq, previous.seq + 1 if previous else 0)
        readings = [{"id": k, "state": st, "values": v} for k, (st, v) in n.readings().items()]
        self._commit_from(
            n.node_id,
            commands.encode(
                "report",
                f"rep-{n.node_id}-{n.report_seq}",
                node_id=n.node_id,
                seq=n.report_seq,
                devices=readings,
            ),
        )

    def _dispatch(self, leader: SimNode) -> None:
        state = leader.state
        if state.policy is None:
            return
        stale = set()
        for node_id, rep in state.reports.items():  # a gateway whose reports stopped is gone
            seen = self._report_seen.get(node_id)
            if seen is None or seen[0] != rep.seq:
                self._report_seen[node_id] = (rep.seq, self.t_ms)
            elif self.t_ms - seen[1] > STALE_REPORT_MS:
                stale.add(node_id)
        result = dispatch(build_image(state, stale_nodes=frozenset(stale)), state.policy)
        cycle = (state.last_dispatch.cycle + 1) if state.last_dispatch else 1
        if self._commit_from(
            leader.node_id,
            commands.encode("dispatch", f"dispatch-{self.term}-{cycle}", **command_fields(result, cycle)),
        ):
            self.cycle = cycle

    def _actuate(self, n: SimNode) -> None:
        quorum = (
            self.has_quorum(n.node_id) and self.leader is not None and self.leader in self._group(n.node_id)
        )
        if not quorum:
            n.no_quorum_since_ms = n.no_quorum_since_ms if n.no_quorum_since_ms is not None else self.t_ms
            if self.t_ms - n.no_quorum_since_ms >= SURVIVAL_AFTER_MS:
                if not n.survival:
                    n.survival = True
                    self.trace.append(f"{self.t_ms / 1000:7.1f} {n.node_id} survival")
                self._survive(n)
            return
        if n.survival:
            n.survival = False
            self.trace.append(f"{self.t_ms / 1000:7.1f} {n.node_id} back to the leader")
        n.no_quorum_since_ms = None
        sp = n.state.setpoints.get(f"{n.node_id}-bat")
        if sp is None:
            return
        token = (sp.term, sp.index)
        applied = n.actuated.get(sp.device_id)
        if applied is not None and token != applied and not newer(token, applied):
            self.violations.append(f"{self.t_ms} {n.node_id} stale token {token} after {applied}")
            return
        if token != applied or self.t_ms % REPORT_MS == 0:  # new, or a refresh before the revert
            n.actuated[sp.device_id] = token
            assert n.site.battery is not None
            n.site = dataclasses.replace(n.site, battery=n.site.battery.write_setpoint(sp.kw))

    def _survive(self, n: SimNode) -> None:
        env = n.state.envelopes.get(n.node_id)
        if env is None or self.t_ms % REPORT_MS:
            return
        policy = dataclasses.replace(
            n.state.policy or self.policy,
            import_limit_kw=env.import_limit_kw,
            export_limit_kw=env.export_limit_kw,
            reserve_forecast=False,
        )
        result = dispatch(image_from_readings(n.devices(), n.readings()), policy)
        for dev_id, kw, _, _ in result.setpoints:
            if dev_id.endswith("-bat"):
                assert n.site.battery is not None
                n.site = dataclasses.replace(n.site, battery=n.site.battery.write_setpoint(kw))

    # --- scenarios ----------------------------------------------------------------------------

    def zone_import_kw(self) -> float:
        return sum(n.site.meter.grid_kw for n in self.nodes.values())

    def run_script(self, script: str) -> list[str]:
        """Run a scenario: lines 'at SECONDS VERB ARGS' (kill n1, restart n1, partition n1 | n2 n3,
        heal) and 'check SECONDS' (trace the zone import and each node's grid and battery)."""
        events = []
        for raw in script.splitlines():
            line = raw.split("#", 1)[0].strip()
            if not line:
                continue
            words = line.split()
            events.append((int(float(words[1]) * 1000), words[0], words[2:]))
        end_ms = max(t for t, _, _ in events)
        for t_ms, verb, args in sorted(events, key=lambda e: e[0]):
            while self.t_ms < t_ms and self.t_ms < end_ms:
                self.step()
            if verb == "check":
                self._check()
            elif args[0] == "kill":
                self.kill(args[1])
            elif args[0] == "restart":
                self.restart(args[1])
            elif args[0] == "heal":
                self.heal()
            elif args[0] == "partition":
                groups = " ".join(args[1:]).split("|")
                self.partition(*(set(g.split()) for g in groups))
            else:
                raise ValueError(f"unknown scenario line: {verb} {' '.join(args)}")
        return self.trace

    def _check(self) -> None:
        parts = []
        for n in self.nodes.values():
            b = n.site.battery
            assert b is not None
            env = n.state.envelopes.get(n.node_id)
            parts.append(
                f"{n.node_id} grid {n.site.meter.grid_kw:5.1f} bat {b.power_kw:5.1f}"
                + (f" env {env.import_limit_kw:4.1f}" if env else "")
            )
        self.trace.append(
            f"{self.t_ms / 1000:7.1f} check zone {self.zone_import_kw():5.1f} kW | " + " | ".join(parts)
        )
