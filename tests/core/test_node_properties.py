"""Properties of the node state machine under random event sequences (hypothesis).

For any interleaving of committed setpoints (also stale replays), quorum changes, ticks,
polls and write outcomes (succeeded or failed):
- no write carries a fencing token older than one already written to the same target;
- every write with a token names a value committed in the zone state the machine holds,
  and every write without one is a survival, protection or revert write;
- a survival write stays inside the node's own config limits, and the policy a node runs
  in survival never allows more import than its envelope.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from meshems.core import commands
from meshems.core.fencing import newer
from meshems.core.node_events import Applied, DeviceReading, Tick, Write, Written
from meshems.core.policy import Envelope, Policy
from meshems.core.survival import survival_policy
from tests.core.test_node import ALONE, FOLLOWER, Zone, machine

KW_MOSTLY_IN_RANGE = st.floats(-50, 50) | st.floats(-900, 900)
STEP = st.one_of(
    st.tuples(st.just("setpoint"), st.sampled_from(["n1-bat", "n1-pv"]), KW_MOSTLY_IN_RANGE),
    st.tuples(st.just("replay"), st.integers(0, 30)),  # a state seen earlier comes again
    st.tuples(st.just("widen"), st.booleans()),  # a (forged) declaration widens the zone's limits
    st.tuples(st.just("quorum"), st.booleans()),
    st.tuples(st.just("tick"), st.floats(0.05, 2.0)),
    st.tuples(st.just("poll"), st.floats(-20, 80)),
    st.tuples(st.just("fail_next"), st.booleans()),  # the next write fails at the device
    st.tuples(st.just("envelope"), st.floats(0, 40)),
)
WIDE = [{"id": "n1-bat", "kind": "battery", "min_kw": -5e3, "max_kw": 5e3},
        {"id": "n1-pv", "kind": "pv", "min_kw": -5e3, "max_kw": 5e3}]  # fmt: skip


def run(steps: list[tuple[Any, ...]]) -> list[tuple[Write, Any]]:
    """Feed the steps (every write answered at once, ok unless a step said otherwise);
    return every write with the zone state the machine held when it asked for it."""
    node, zone = machine(protection={"max_import_kw": 60}), Zone()
    node.step(FOLLOWER)
    now, history, out, fail = 100.0, [zone.state], [], [False]

    def feed(event: Any) -> None:
        queue = [event]
        while queue:
            for a in node.step(queue.pop(0)):
                if isinstance(a, Write):
                    out.append((a, node.zone))
                    ok, fail[0] = not fail[0], False
                    queue.append(Written(a.key, a.token, ok, "OK" if ok else "E_TIMEOUT", "", now))

    for s in steps:
        if s[0] == "setpoint":
            dev = zone.state.devices[s[1]]
            if dev.min_kw <= s[2] <= dev.max_kw:  # what apply would refuse is never committed
                history.append(zone.setpoint(s[1], s[2]))
                feed(Applied(history[-1]))
        elif s[0] == "replay":
            feed(Applied(history[s[1] % len(history)]))
        elif s[0] == "widen":  # forged wide limits, or the node's own declaration again
            rid = f"wide-{len(history)}"
            wide = commands.encode("declare_node", rid, node_id="n1", raft="x:1", api="x:2", devices=WIDE)
            history.append(zone.commit(wide) if s[1] else zone.redeclare_n1())
            feed(Applied(history[-1]))
        elif s[0] == "quorum":
            feed(FOLLOWER if s[1] else ALONE)
        elif s[0] == "tick":
            now += s[1]
            feed(Tick(now, 0.0))
        elif s[0] == "poll":
            for dev_id, values in poll_values(s[1]).items():
                feed(DeviceReading(dev_id, True, 0, values, now))
        elif s[0] == "fail_next":
            fail[0] = s[1]
        elif s[0] == "envelope":
            history.append(zone.envelope(import_kw=s[1]))
            feed(Applied(history[-1]))
    return out


def poll_values(grid_kw: float) -> dict[str, dict[str, float]]:
    return {
        "n1-bat": {"power_kw": 0.0, "soc_pct": 50.0, "capacity_kwh": 100.0, "setpoint_kw": 0.0},
        "n1-relays": {"relay_1": 1.0, "relay_2": 1.0, "load_1_kw": 8.0, "load_2_kw": 4.0},
        "n1-meter": {"power_kw": grid_kw},
    }


@settings(max_examples=400, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=30))
def test_no_write_is_older_than_one_already_written(steps: list[tuple[Any, ...]]) -> None:
    written: dict[str, tuple[int, int]] = {}
    for w, _ in run(steps):
        if w.token is None:
            continue
        last = written.get(w.key)
        assert last is None or w.token == last or newer(w.token, last), (w, last)
        written[w.key] = w.token


@settings(max_examples=400, deadline=None)
@given(st.lists(STEP, min_size=1, max_size=30))
def test_every_write_has_a_committed_source_and_stays_in_limits(
    steps: list[tuple[Any, ...]],
) -> None:
    limits = {"n1-bat": (-50.0, 50.0), "n1-pv": (0.0, 40.0)}
    for w, zone in run(steps):
        if w.token is not None:
            committed = zone.setpoints.get(w.key) or zone.relays.get(w.key)
            assert committed is not None and (committed.term, committed.index) == w.token, w
        else:
            assert w.source.startswith(("survival:", "protection", "revert")), w
        if w.kw is not None:
            low, high = limits[w.device_id]
            assert low <= w.kw <= high, w


@given(
    st.floats(0, 1e3),
    st.floats(0, 1e3),
    st.floats(0, 100),
    st.floats(0, 95),
    st.floats(0, 1e3),
    st.floats(0, 1e3),
)
def test_survival_never_allows_more_than_the_envelope(
    zone_import: float, env_import: float, env_reserve: float, floor: float, env_export: float, margin: float
) -> None:
    base = Policy(import_limit_kw=zone_import, soc_floor_pct=floor, soc_ceiling_pct=99.0, margin_kw=margin)
    env = Envelope("n1", env_import, env_export, env_reserve, ("n1-relays:1",))
    pol = survival_policy(base, env)
    assert pol.import_limit_kw == env.import_limit_kw and pol.export_limit_kw == env.export_limit_kw
    assert pol.soc_floor_pct >= max(base.soc_floor_pct, env.soc_reserve_pct)
    assert pol.shed_order == env.shed


def test_the_machine_is_deterministic() -> None:
    steps = [("setpoint", "n1-bat", 10.0), ("tick", 1.0), ("quorum", False), ("tick", 2.0), ("poll", 70.0),
             ("envelope", 5.0), ("tick", 0.6), ("fail_next", True), ("quorum", True),
             ("tick", 1.0)]  # fmt: skip
    assert run(steps) == run(steps)
    assert any(w.source.startswith("protection") for w, _ in run(steps))
