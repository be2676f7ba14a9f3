"""Fakes of a node's edges (`meshems.ports`), shipped as product code: a clock that moves when
told, a consensus of N replicas over the real `core.cluster.apply`, and a field bus of
simulated site physics. Deterministic; one thread; everything answers at once.

The fake consensus keeps one log, one leader and network partitions: a proposal commits
only when the proposer reaches a leader whose side has a majority, every reachable alive
replica applies committed entries in order, and a new leader (the most up-to-date alive
node of a majority side) is elected `election_s` after the old one is lost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field

from meshems.core.cluster import ZoneState, apply
from meshems.core.node_events import RaftChanged, Write, Written
from meshems.ports import ProposeDone
from meshems.sim.physics import Site


@dataclass
class FakeClock:
    now_s: float = 0.0
    wall0_s: float = 1_767_225_600.0  # 2026-01-01 00:00 UTC

    def monotonic(self) -> float:
        return self.now_s

    def time(self) -> float:
        return self.wall0_s + self.now_s

    def advance(self, dt_s: float) -> None:
        self.now_s += dt_s


@dataclass
class _Replica:
    state: ZoneState = field(default_factory=ZoneState)
    applied: int = 0
    alive: bool = True


class FakeConsensus:
    """N replicas of one log; `member(node_id)` is one node's `ports.Consensus`."""

    def __init__(
        self,
        nodes: list[str],
        clock: FakeClock,
        on_applied: Callable[[str, ZoneState], None] | None = None,
        election_s: float = 0.3,
    ) -> None:
        self.nodes, self.clock, self.election_s = list(nodes), clock, election_s
        self.replicas = {n: _Replica() for n in nodes}
        self.log: list[tuple[int, bytes]] = []
        self.term = 1
        self.leader: str | None = nodes[0]
        self.lost_at: float | None = None
        self.groups: list[set[str]] = [set(nodes)]
        self.on_applied = on_applied
        self.results: dict[int, dict] = {}  # index -> what applying it returned
        self.events: list[str] = []  # leader lost / elected, for traces

    def member(self, node_id: str) -> _Member:
        return _Member(self, node_id)

    # --- the network ------------------------------------------------------------------------------

    def group(self, node_id: str) -> set[str]:
        return next(g for g in self.groups if node_id in g)

    def majority(self, node_id: str) -> bool:
        alive = [n for n in self.group(node_id) if self.replicas[n].alive]
        return len(alive) > len(self.nodes) / 2

    def reaches_leader(self, node_id: str) -> bool:
        """`node_id` is connected to a live leader whose side has a majority."""
        lead = self.leader
        return (
            lead is not None
            and lead in self.group(node_id)
            and self.replicas[lead].alive
            and self.majority(lead)
        )

    def partition(self, *groups: set[str]) -> None:
        self.groups = [set(g) for g in groups]

    def heal(self) -> None:
        self.groups = [set(self.nodes)]
        self.replicate()

    def kill(self, node_id: str) -> None:
        self.replicas[node_id].alive = False

    def restart(self, node_id: str) -> None:
        self.replicas[node_id].alive = True  # its applied state is its journal: kept
        self.replicate()

    # --- the log ----------------------------------------------------------------------------------

    def propose(self, node_id: str, data: bytes) -> tuple[dict | None, str | None, str]:
        if not self.replicas[node_id].alive or not self.reaches_leader(node_id):
            return None, "E_QUORUM", "no leader reachable with a majority"
        self.log.append((self.term, data))
        self.replicate()
        return self.results[len(self.log)], None, ""

    def replicate(self) -> None:
        """Every alive replica that reaches the leader applies what it lacks, in order."""
        for n in self.nodes:
            r = self.replicas[n]
            if not r.alive or not self.reaches_leader(n) or r.applied == len(self.log):
                continue
            while r.applied < len(self.log):
                term, data = self.log[r.applied]
                r.applied += 1
                r.state, res = apply(r.state, data, term, r.applied)
                self.results.setdefault(r.applied, res.to_dict())  # the same on every replica
            if self.on_applied is not None:
                self.on_applied(n, r.state)

    def elect(self) -> None:
        """Lose a leader that died or is cut off; elect one `election_s` later."""
        lead = self.leader
        if lead is not None and self.replicas[lead].alive and self.majority(lead):
            return
        now = self.clock.monotonic()
        if self.lost_at is None:
            self.lost_at = now
            if lead is not None:
                self.events.append(f"leader {lead} lost")
            self.leader = None
            return
        if now - self.lost_at < self.election_s - 1e-9:
            return
        for g in self.groups:
            alive = sorted(n for n in g if self.replicas[n].alive)
            if len(alive) > len(self.nodes) / 2:
                self.term += 1
                self.leader = max(alive, key=lambda n: (self.replicas[n].applied, n))
                self.lost_at = None
                self.events.append(f"leader {self.leader} term {self.term}")
                self.replicate()
                return


@dataclass
class _Member:
    """One node's `ports.Consensus` on a FakeConsensus."""

    c: FakeConsensus
    node_id: str

    @property
    def state(self) -> ZoneState:
        return self.c.replicas[self.node_id].state

    def view(self) -> RaftChanged:
        c, me = self.c, self.node_id
        reach = c.reaches_leader(me)
        role = "leader" if c.leader == me and reach else "follower"
        caught_up = reach and c.replicas[me].applied == len(c.log)
        connected = frozenset(n for n in c.group(me) if n != me and c.replicas[n].alive)
        return RaftChanged(role, c.term, c.leader if reach else None, reach, caught_up, connected)

    def propose(self, data: bytes, done: ProposeDone, timeout_s: float | None = None) -> None:
        done(*self.c.propose(self.node_id, data))


#: what a simulated gateway offers, by device kind: (point roles, how to read them)
ROLES = {
    "meter": frozenset({"power_kw"}),
    "battery": frozenset(
        {
            "power_kw",
            "soc_pct",
            "capacity_kwh",
            "max_charge_kw",
            "max_discharge_kw",
            "setpoint_kw",
            "revert_timeout_s",
        }
    ),
    "pv": frozenset({"power_kw", "rated_kw", "limit_pct", "revert_timeout_s"}),
}


#: the device ids of a simulated gateway N: N-meter, N-bat, N-pv
SUFFIX = {"meter": "meter", "battery": "bat", "pv": "pv"}


@dataclass
class FakeFieldBus:
    """A gateway's meter, battery and PV as site physics (`sim.physics.Site`)."""

    node_id: str
    site: Site

    def kind(self, device_id: str) -> str:
        return next(k for k, suffix in SUFFIX.items() if device_id == f"{self.node_id}-{suffix}")

    def roles(self) -> dict[str, frozenset[str]]:
        return {f"{self.node_id}-{SUFFIX[kind]}": roles for kind, roles in ROLES.items()}

    def pause(self, devices: frozenset[str]) -> None:
        pass  # the simulated devices are never shared

    def readings(self) -> dict[str, dict[str, float]]:
        """The values by role each device answers a poll with."""
        n, s, b = self.node_id, self.site, self.site.battery
        assert b is not None and s.pv is not None
        return {
            f"{n}-meter": {"power_kw": round(s.meter.grid_kw, 3)},
            f"{n}-bat": {
                "power_kw": round(b.power_kw, 3),
                "soc_pct": round(b.soc_pct, 3),
                "capacity_kwh": b.capacity_kwh,
                "max_charge_kw": b.max_charge_kw,
                "max_discharge_kw": b.max_discharge_kw,
                "setpoint_kw": b.setpoint_kw,
            },
            f"{n}-pv": {
                "power_kw": round(s.pv_kw, 3),
                "rated_kw": s.pv.rated_kw,
                "limit_pct": s.pv.limit_pct,
            },
        }

    def write(self, action: Write, done: Callable[[Written], None], now_s: float = 0.0) -> None:
        s = self.site
        assert s.battery is not None and s.pv is not None
        kind = self.kind(action.device_id)
        if kind == "battery" and action.role == "setpoint_kw":
            s = dataclasses.replace(s, battery=s.battery.write_setpoint(action.value))
        elif kind == "battery" and action.role == "revert_timeout_s":
            s = dataclasses.replace(s, battery=s.battery.write_revert_timeout(action.value))
        elif kind == "pv" and action.role == "limit_pct":
            s = dataclasses.replace(s, pv=s.pv.write_limit_pct(action.value))
        elif kind == "pv" and action.role == "revert_timeout_s":
            s = dataclasses.replace(s, pv=s.pv.write_revert_timeout(action.value))
        elif action.role.startswith("relay_"):
            s = s.write_relay(int(action.role.removeprefix("relay_")), action.value >= 0.5)
        else:
            done(Written(action.key, action.token, False, "E_PROFILE", f"no {action.role}", now_s))
            return
        self.site = s
        done(Written(action.key, action.token, True, "OK", "", now_s))
