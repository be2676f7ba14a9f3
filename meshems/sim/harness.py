"""A deterministic multi-node harness: N simulated gateways, each running the node's own
state machine (`core.node.Node`, exactly what the daemon runs) over the shipped fakes
(`sim.fakes`: a fake consensus over the real `apply`, a field bus of site physics, a fake
clock), driven by a scenario script. One thread, fixed 100 ms steps: a scenario gives the
same trace every time (golden traces, as etcd-io/raft's testdata do).

The harness adds no rule of its own: it moves events in and actions out, like the daemon.
It observes one safety property independently: no node writes a committed value older than
one it already wrote (`violations`).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from meshems.core import commands
from meshems.core.config import ClusterConfig, parse_config
from meshems.core.fencing import Token, newer
from meshems.core.node import Node
from meshems.core.node_events import (
    Action,
    Applied,
    DeviceReading,
    Event,
    Log,
    Propose,
    Proposed,
    RaftChanged,
    Solve,
    Solved,
    Tick,
    Write,
)
from meshems.core.node_spec import NodeSpec
from meshems.core.planner import plan
from meshems.core.policy import Policy
from meshems.sim.fakes import FakeClock, FakeConsensus, FakeFieldBus
from meshems.sim.physics import Site

STEP_MS = 100
POLL_MS = 1000  # every device is polled once per second
REVERT_S = 3.0  # the batteries revert an unrefreshed setpoint after this


def harness_config(nodes: int, policy: Policy) -> ClusterConfig:
    """N gateways with a meter, a 50 kW battery and a 40 kW PV each, and the zone policy."""
    values = {**policy.to_dict(), "shed_order": list(policy.shed_order)}
    doc = {
        "cluster": "sim",
        "zone": "sim",
        "raft": {"secret_file": "-"},
        "policy": values,
        "nodes": [
            {
                "id": f"n{i + 1}",
                "address": "127.0.0.1",
                "raft_port": 10 + i,
                "api_port": 100 + i,
                "devices": [
                    {"id": f"n{i + 1}-meter", "kind": "meter"},
                    {
                        "id": f"n{i + 1}-bat",
                        "kind": "battery",
                        "min_kw": -50,
                        "max_kw": 50,
                        "revert_timeout_s": REVERT_S,
                    },
                    {"id": f"n{i + 1}-pv", "kind": "pv", "min_kw": 0, "max_kw": 40, "rated_kw": 40},
                ],
            }
            for i in range(nodes)
        ],
    }
    return parse_config(doc, "<harness>")


@dataclass
class SimNode:
    """What the harness shows of one gateway (for scenarios and tests)."""

    node_id: str
    field: FakeFieldBus
    machine: Node
    alive: bool = True
    #: the fencing token of the last committed value written to each device
    actuated: dict[str, Token] = field(default_factory=dict)
    view: RaftChanged | None = None
    applied_index: int = 0

    @property
    def site(self) -> Site:
        return self.field.site

    @property
    def survival(self) -> bool:
        return self.machine.mode == "survival"

    @property
    def state(self) -> Any:
        return self.machine.zone


class Harness:
    """Nodes n1..nN running `core.node.Node` over the fakes, a scenario, a trace."""

    def __init__(
        self,
        nodes: int = 3,
        policy: Policy | None = None,
        seed: int = 1,
        load_shape: str = "office",
        start_h: float = 12.0,
        soc_pct: float = 60.0,
    ) -> None:
        self.t_ms = 0
        self.clock = FakeClock()
        self.policy = policy or Policy(import_limit_kw=30.0)
        self.cfg = harness_config(nodes, self.policy)
        ids = [n.id for n in self.cfg.nodes]
        self.consensus = FakeConsensus(ids, self.clock, on_applied=self._applied)
        self.trace: list[str] = []
        self.violations: list[str] = []
        self._queue: deque[tuple[str, Event]] = deque()
        self._draining = False
        self.nodes: dict[str, SimNode] = {}
        for i, n in enumerate(ids):
            site = Site.demo(seed=seed + i, t_s=start_h * 3600.0, soc_pct=soc_pct, load_shape=load_shape)
            self.nodes[n] = SimNode(n, FakeFieldBus(n, site), self._machine(n, site))

    def _machine(self, node_id: str, site: Site) -> Node:
        spec = NodeSpec.from_config(self.cfg, node_id, FakeFieldBus(node_id, site).roles())
        return Node(spec, rid_salt=f"{node_id}.{self.t_ms}.")

    @property
    def log(self) -> list[tuple[int, bytes]]:
        return self.consensus.log

    # --- moving events in and actions out ------------------------------------------------------

    def _say(self, text: str) -> None:
        self.trace.append(f"{self.t_ms / 1000:7.1f} {text}")

    def feed(self, node_id: str, event: Event) -> None:
        """Queue an event for a node's machine; events are handled in order, one at a time
        (a proposal's commit does not re-enter a machine that is still stepping)."""
        self._queue.append((node_id, event))
        if self._draining:
            return
        self._draining = True
        try:
            while self._queue:
                n, ev = self._queue.popleft()
                sim = self.nodes[n]
                if sim.alive:
                    for action in sim.machine.step(ev):
                        self._carry_out(sim, action)
        finally:
            self._draining = False

    def _carry_out(self, sim: SimNode, action: Action) -> None:
        n, now = sim.node_id, self.clock.monotonic()
        if isinstance(action, Propose):

            def done(res: dict | None, code: str | None, text: str, a: Propose = action) -> None:
                result = res if res is not None else {"ok": False, "code": code, "message": text}
                self.feed(n, Proposed(a.purpose, a.key, result, now))

            self.consensus.member(n).propose(action.data, done)
        elif isinstance(action, Write):
            self._observe(sim, action)
            sim.field.write(action, lambda w: self.feed(n, w), now)
        elif isinstance(action, Solve):  # the node's own planner, inline (virtual time)
            self.feed(n, Solved(action.key, plan(action.request), now))
        elif isinstance(action, Log) and action.code in ("E_QUORUM", "I_SURVIVAL_END"):
            self._say(f"{n} survival" if action.code == "E_QUORUM" else f"{n} back to the leader")

    def _observe(self, sim: SimNode, write: Write) -> None:
        """The safety property, checked from outside the machine."""
        if write.token is None:
            return
        last = sim.actuated.get(write.key)
        if last is not None and write.token != last and not newer(write.token, last):
            self.violations.append(f"{self.t_ms} {sim.node_id} stale token {write.token} after {last}")
        sim.actuated[write.key] = write.token

    def _applied(self, node_id: str, state: Any) -> None:
        self.nodes[node_id].applied_index = self.consensus.replicas[node_id].applied
        self.feed(node_id, Applied(state))

    # --- scenario verbs -------------------------------------------------------------------------

    def kill(self, node_id: str) -> None:
        self.nodes[node_id].alive = False
        self.consensus.kill(node_id)
        self._say(f"kill {node_id}")

    def restart(self, node_id: str) -> None:
        """A new process: a fresh machine, replaying its journal (the replica's state)."""
        sim = self.nodes[node_id]
        sim.alive, sim.view = True, None
        sim.machine = self._machine(node_id, sim.site)
        self._say(f"restart {node_id}")
        self.feed(node_id, Applied(self.consensus.replicas[node_id].state))
        self.consensus.restart(node_id)

    def partition(self, *groups: set[str]) -> None:
        self.consensus.partition(*groups)
        self._say("partition " + " | ".join(" ".join(sorted(g)) for g in groups))

    def heal(self) -> None:
        self._say("heal")
        self.consensus.heal()

    def set_policy(self, values: dict[str, Any]) -> dict[str, Any] | None:
        """An operator's `meshems policy set`, through the first node that reaches the leader."""
        data = commands.encode("set_policy", f"operator-{self.t_ms}", values=values)
        via = next((n for n in self.nodes if self.consensus.reaches_leader(n)), None)
        self._say("policy " + " ".join(f"{k}={v}" for k, v in values.items()))
        return None if via is None else self.consensus.propose(via, data)[0]

    def dispatch_decisions(self) -> list[tuple[int, dict[str, str]]]:
        """Every committed dispatch: (cycle, device or load -> deciding controller)."""
        out = []
        for _, data in self.consensus.log:
            cmd = commands.decode(data)
            if isinstance(cmd, commands.Command) and cmd.type == "dispatch":
                decided = {sp["device_id"]: sp["controller"] for sp in cmd.fields["setpoints"]}
                decided |= {r["load"]: r["controller"] for r in cmd.fields["relays"]}
                out.append((cmd.fields["cycle"], decided))
        return out

    # --- one step -------------------------------------------------------------------------------

    def step(self) -> None:
        self.t_ms += STEP_MS
        self.clock.now_s = self.t_ms / 1000
        self.consensus.elect()
        for text in self.consensus.events:
            self._say(text)
        self.consensus.events.clear()
        now, wall = self.clock.monotonic(), self.clock.time()
        for sim in self.nodes.values():
            if not sim.alive:
                continue
            self.feed(sim.node_id, Tick(now, wall))  # the time first: what follows happens now
            view = self.consensus.member(sim.node_id).view()
            if view != sim.view:
                sim.view = view
                self.feed(sim.node_id, view)
            if self.t_ms % POLL_MS == 0:
                for dev, values in sim.field.readings().items():
                    self.feed(sim.node_id, DeviceReading(dev, True, 0, values, now))
        for sim in self.nodes.values():
            sim.field.site = sim.field.site.step(STEP_MS / 1000)

    # --- scenarios ------------------------------------------------------------------------------

    def zone_import_kw(self) -> float:
        return sum(n.site.meter.grid_kw for n in self.nodes.values())

    def run_script(self, script: str) -> list[str]:
        """Run a scenario: lines 'at SECONDS VERB ARGS' (kill n1, restart n1, partition n1 | n2 n3,
        heal, policy KEY=NUMBER ...) and 'check SECONDS' (trace the zone import and each node's
        grid and battery)."""
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
            elif args[0] == "policy":
                self.set_policy({k: float(v) for k, _, v in (a.partition("=") for a in args[1:])})
            else:
                raise ValueError(f"unknown scenario line: {verb} {' '.join(args)}")
        return self.trace

    def _check(self) -> None:
        parts = []
        for n in self.nodes.values():
            b = n.site.battery
            assert b is not None
            env = n.machine.zone.envelopes.get(n.node_id)
            parts.append(
                f"{n.node_id} grid {n.site.meter.grid_kw:5.1f} bat {b.power_kw:5.1f}"
                + (f" env {env.import_limit_kw:4.1f}" if env else "")
                + (" survival" if n.survival else "")
            )
        self._say(f"check zone {self.zone_import_kw():5.1f} kW | " + " | ".join(parts))
