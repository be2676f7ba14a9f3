"""The planner on the node's own path, in the deterministic harness: nodes with a day of
history publish forecasts, the leader plans, commits the plan and dispatches to it; a new
leader plans again at once; without forecasts dispatch runs the reactive rules."""

from __future__ import annotations

import math

from meshems.core.node import NEVER
from meshems.core.policy import Policy
from meshems.sim.fakes import FakeClock
from meshems.sim.harness import Harness

STEP_S = 900.0


def with_history(h: Harness, evening_kw: float = 25.0) -> Harness:
    """A day of quarter-hour base load on every node: 8 kW, and `evening_kw` 17:00-20:00."""
    now = FakeClock().time()
    for sim in h.nodes.values():
        hist = sim.machine.history
        for i in range(96, 0, -1):
            t = math.floor(now / STEP_S) * STEP_S - i * STEP_S
            hour = (t % 86400) / 3600
            hist.add(t, evening_kw if 17 <= hour < 20 else 8.0)
        hist.add(now - 1, 8.0)  # closes the last step
    return h


def steps(h: Harness, n: int) -> None:
    for _ in range(n):
        h.step()


def last_inputs(h: Harness) -> dict[str, float]:
    leader = next(s for s in h.nodes.values() if s.alive)
    rec = leader.machine.zone.last_dispatch
    assert rec is not None
    return dict(rec.inputs)


def test_the_leader_plans_from_the_nodes_forecasts_and_dispatch_tracks_the_plan() -> None:
    h = with_history(Harness(policy=Policy(import_limit_kw=60.0)))
    steps(h, 150)  # 15 s
    zone = h.nodes["n1"].machine.zone
    assert set(zone.node_forecasts) == {"n1", "n2", "n3"}
    assert all(f.basis == "same time yesterday" for f in zone.node_forecasts.values())
    plan = zone.plan
    assert plan is not None and plan.status in ("optimal", "limit_unreachable")
    assert len(plan.import_kw) == 96 and {b.id for b in plan.batteries}
    # the evening peak of 3 x 25 kW is above the limit: the plan holds a peak below it
    assert plan.peak_kw < 75.0
    inputs = last_inputs(h)
    assert inputs["plan_version"] == plan.version
    assert inputs["plan_ceiling_kw"] == round(plan.peak_kw, 3)
    assert h.violations == []
    # every replica holds the same plan
    assert len({s.machine.zone.plan for s in h.nodes.values()}) == 1


def test_a_new_leader_plans_again_at_once() -> None:
    h = with_history(Harness(policy=Policy(import_limit_kw=60.0)))
    steps(h, 150)
    old = h.nodes["n1"].machine.zone.plan
    assert old is not None
    leader = next(n for n, s in h.nodes.items() if s.machine.raft.role == "leader")
    h.kill(leader)
    steps(h, 60)  # 6 s: an election and a plan
    alive = next(s for n, s in h.nodes.items() if n != leader)
    new = alive.machine.zone.plan
    assert new is not None and new.version > old.version and new.term > old.term
    assert last_inputs(h)["plan_version"] == new.version


def test_without_forecasts_dispatch_runs_the_reactive_rules() -> None:
    h = Harness(policy=Policy(import_limit_kw=60.0))
    steps(h, 150)
    zone = h.nodes["n1"].machine.zone
    assert zone.plan is None and zone.node_forecasts == {}
    assert "plan_version" not in last_inputs(h)
    assert h.nodes["n1"].machine.forecast_step != NEVER  # it looked, found no history


def test_reactive_mode_never_plans() -> None:
    h = with_history(Harness(policy=Policy(import_limit_kw=60.0, mode="reactive")))
    steps(h, 150)
    zone = h.nodes["n1"].machine.zone
    assert zone.plan is None and set(zone.node_forecasts) == {"n1", "n2", "n3"}
    assert "plan_version" not in last_inputs(h)
