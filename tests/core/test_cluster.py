"""Unit tests for `meshems.core.cluster`: the zone state machine every replica runs.

`apply(state, data, term, index)` must be a pure, deterministic function of the state and
the log entry, so the heart of this file is property-based: random logs of valid,
refused, retried and malformed commands are applied on independent replicas (one of them
snapshotted and restored midway) and must end in identical states, hashes and results;
the same logs are also checked against a small reference model of the zone. Table tests
pin down malformed commands, the request-id dedup window (two generations of
RID_GENERATION ids), replays and purity; each command's rules are in test_zone_handlers.py
and the per-command modules, the snapshot format in test_snapshot.py.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import replace
from typing import Any

import msgpack
import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from meshems.core import cluster
from meshems.core.cluster import ZoneState, apply, seen
from meshems.core.commands import DEVICE_KINDS, SCHEMA_VERSION, Command, Rejection, decode, encode, peek_rid
from meshems.core.snapshot import restore, snapshot, state_hash
from meshems.core.zone_records import Result
from tests.core.test_deploy_handlers import DIGEST, MANIFEST, SIGS

# No explain phase: it traces every line on Python < 3.12 and makes a failure take minutes.
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
PROPS = settings(max_examples=100, deadline=None, phases=PHASES)

# --- building commands and logs ----------------------------------------------------------


def dev(id_: str, kind: str = "battery", min_kw: float = -10.0, max_kw: float = 10.0) -> dict[str, Any]:
    return {"id": id_, "kind": kind, "min_kw": min_kw, "max_kw": max_kw}


def declare(node: str, *devices: dict[str, Any], rid: str, api: str | None = None) -> bytes:
    return encode(
        "declare_node",
        rid,
        node_id=node,
        raft=f"{node}.local:4321",
        api=api or f"{node}.local:8080",
        devices=list(devices),
    )


def setpoint(device: str, kw: float, rid: str, source: str = "operator") -> bytes:
    return encode("set_setpoint", rid, device_id=device, kw=kw, source=source)


def remove(node: str, rid: str) -> bytes:
    return encode("remove_node", rid, node_id=node)


def barrier(rid: str) -> bytes:
    return encode("barrier", rid)


def run(state: ZoneState, entries: Iterable[bytes], term: int = 1) -> tuple[ZoneState, list[Result]]:
    """Apply entries at consecutive indexes after `state.last_index`."""
    results = []
    for data in entries:
        state, res = apply(state, data, term, state.last_index + 1)
        results.append(res)
    return state, results


def zone() -> ZoneState:
    """n1 owns d1 (battery, [-10, 10]) and d2 (pv, [0, 5]); n2 owns d3; d1 has a setpoint."""
    state, results = run(
        ZoneState(),
        [
            declare("n1", dev("d1"), dev("d2", "pv", 0.0, 5.0), rid="decl-n1"),
            declare("n2", dev("d3"), rid="decl-n2"),
            setpoint("d1", 4.0, rid="sp-d1"),
        ],
    )
    assert [r.code for r in results] == ["OK", "OK", "OK"]
    return state


def business(state: ZoneState) -> tuple[Any, ...]:
    """What a command may change (as opposed to the log position and the dedup window)."""
    return dict(state.members), dict(state.devices), dict(state.setpoints)


def view(state: ZoneState) -> tuple[Any, ...]:
    """Everything in a state, including the insertion order of every mapping."""
    return (
        state.last_term,
        state.last_index,
        *(
            list(m.items())
            for m in (state.members, state.devices, state.setpoints, recent(state), old(state))
        ),
    )


def recent(state: ZoneState) -> Mapping[str, Result]:
    """The newest dedup generation (empty when none yet)."""
    return state.rids[0] if state.rids else {}


def old(state: ZoneState) -> Mapping[str, Result]:
    """The generation before the newest (tests keep RID_GENERATIONS = 2)."""
    return state.rids[1] if len(state.rids) > 1 else {}


@contextmanager
def generation(size: int) -> Iterator[None]:
    """Temporarily shrink the dedup window (usable inside hypothesis tests)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cluster, "RID_GENERATION", size)
        mp.setattr(cluster, "RID_GENERATIONS", 2)
        yield


# --- hypothesis strategies ---------------------------------------------------------------


def weighted(*pairs: tuple[int, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """Pick a strategy with the given weights (st.one_of would merge repeated ones)."""
    table = [s for n, s in pairs for _ in range(n)]
    return st.integers(0, len(table) - 1).flatmap(table.__getitem__)


NODES = ["n1", "n2", "n3"]
DEVICES = ["d1", "d2", "d3", "d4"]
# Mostly fresh request ids, sometimes a colliding one (a client reusing a rid by mistake).
rids = weighted((9, st.text("abcdefgh", min_size=2, max_size=4)), (1, st.sampled_from("xyz")))
numbers = st.one_of(st.integers(-25, 25), st.floats(-25, 25, allow_nan=False))


@st.composite
def device_maps(draw: st.DrawFn, ids: list[str]) -> dict[str, Any]:
    if draw(st.booleans()):
        lo, hi = sorted([draw(numbers), draw(numbers)])
    else:  # a typical battery range around zero
        lo, hi = draw(st.integers(-25, 0)), draw(st.integers(0, 25))
    kind = draw(st.sampled_from(sorted(DEVICE_KINDS)))
    return {"id": draw(st.sampled_from(ids)), "kind": kind, "min_kw": lo, "max_kw": hi}


def _raw(type_: str, rid: str, **fields: Any) -> dict[str, Any]:
    return {"type": type_, "v": SCHEMA_VERSION, "rid": rid, **fields}


#: Each node usually declares its own devices; sometimes it claims any (ownership conflicts).
OWN = {"n1": ["d1", "d2"], "n2": ["d3"], "n3": ["d4"]}


def _declares(node: str, ids: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    devices = st.lists(device_maps(ids), min_size=1, max_size=3, unique_by=lambda d: d["id"])
    return st.builds(
        lambda rid, devs: _raw(
            "declare_node", rid, node_id=node, raft=f"{node}:1", api=f"{node}:2", devices=devs
        ),
        rids,
        weighted((3, devices), (1, st.just([]))),
    )


declare_maps = weighted(
    (4, st.one_of([_declares(n, OWN[n]) for n in NODES])),
    (1, st.one_of([_declares(n, DEVICES) for n in NODES])),
)
setpoint_maps = st.builds(
    lambda rid, d, kw, src: _raw("set_setpoint", rid, device_id=d, kw=kw, source=src),
    rids,
    st.sampled_from(["d1", "d1", "d2", "d3", "d3", "d4", "ghost"]),
    weighted((3, st.integers(-12, 12)), (1, numbers), (1, st.floats(-40, 40, allow_nan=False))),
    st.sampled_from(["operator", "ems"]),
)
remove_maps = st.builds(
    lambda rid, n: _raw("remove_node", rid, node_id=n), rids, st.sampled_from([*NODES, "n9"])
)
barrier_maps = st.builds(lambda rid: _raw("barrier", rid), rids)
override_maps = st.builds(
    lambda rid, d, ch, closed, until: _raw(
        "relay_override", rid, load=f"{d}:{ch}", closed=closed, until_s=until, source="operator"
    ),
    rids,
    st.sampled_from(["d1", "d2", "d3", "d4", "ghost"]),
    st.integers(1, 3),
    st.sampled_from([True, False, None]),
    st.sampled_from([None, 1.8e9]),
)
DEPLOY_IDS = ["p1", "p2", "p3"]
deploy_maps = st.one_of(
    st.builds(
        lambda rid, d, targets, how: _raw("deploy", rid, deployment_id=d, manifest=MANIFEST, signatures=SIGS,
                                          digest=DIGEST, size=1000, targets=targets, strategy=how, by="op",
                                          origin="n1"),
        rids, st.sampled_from(DEPLOY_IDS), st.sampled_from([[], ["n1"], ["n1", "n2"], ["n3", "n9"]]),
        st.sampled_from(["rolling", "all-at-once"]),
    ),
    st.builds(
        lambda rid, d, n, status: _raw("deploy_status", rid, deployment_id=d, node_id=n, status=status,
                                       code="E_PAYLOAD_HASH", message="m"),
        rids, st.sampled_from(DEPLOY_IDS), st.sampled_from([*NODES, "n9"]),
        st.sampled_from(["stored", "verified", "failed"]),
    ),
    st.builds(lambda rid, d: _raw("deploy_abort", rid, deployment_id=d, by="op"), rids,
              st.sampled_from(DEPLOY_IDS)),
    st.builds(
        lambda rid, d, n, phase, now: _raw("rollout_step", rid, deployment_id=d, node_id=n, phase=phase,
                                           code="E_PAYLOAD_CRASH", now_s=now),
        rids, st.sampled_from(DEPLOY_IDS), st.sampled_from([*NODES, "n9"]),
        st.sampled_from(["shadow", "healthy", "watch", "active", "failed", "deadline"]),
        st.sampled_from([0.0, 10.0, 5000.0]),
    ),
    st.builds(
        lambda rid, d, to: _raw("deploy_rollback", rid, deployment_id=d, name="peak-guard", to_version=to,
                                by="op"),
        rids, st.sampled_from(DEPLOY_IDS), st.sampled_from(["", "1.0.0"]),
    ),
)  # fmt: skip
# Setpoints dominate, as in a running zone; removals are rare enough for devices to stay.
valid_maps = weighted(
    (2, declare_maps), (4, setpoint_maps), (1, remove_maps), (1, barrier_maps), (1, override_maps),
    (1, deploy_maps),
)  # fmt: skip


def _without(m: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in m.items() if k != key}


malformed_maps = st.one_of(
    st.builds(lambda m, v: {**m, "v": v}, valid_maps, st.sampled_from([0, 2, 99, True, "1", 1.0, None])),
    st.builds(lambda m, t: {**m, "type": t}, valid_maps, st.sampled_from(["reboot", "", 7, "Barrier"])),
    st.builds(lambda m, k: {**m, k: 1}, valid_maps, st.sampled_from(["extra", "zone", "ttl"])),
    st.builds(lambda m, k: _without(m, k), valid_maps, st.sampled_from(["rid", "type", "v"])),
    st.builds(
        lambda rid, kw: _raw("set_setpoint", rid, device_id="d1", kw=kw, source="operator"),
        rids,
        st.sampled_from([math.nan, math.inf, -math.inf, True, False, "3", None]),
    ),
    st.builds(lambda m, rid: {**m, "rid": rid}, valid_maps, st.sampled_from([3, "", "r" * 65, None])),
)
malformed_bytes = st.one_of(
    st.binary(max_size=24),
    st.builds(
        msgpack.packb,
        st.one_of(
            st.integers(-(2**63), 2**64 - 1), st.text(max_size=5), st.lists(st.integers(-5, 5), max_size=3)
        ),
    ),
    malformed_maps.map(msgpack.packb),
)
valid_bytes = valid_maps.map(msgpack.packb)

Entry = tuple[bytes, int, int]


@st.composite
def logs(draw: st.DrawFn, max_size: int = 40) -> list[Entry]:
    """A committed log: (bytes, term, index) with non-decreasing terms, rising indexes."""
    size = draw(st.integers(0, max_size))
    ops = draw(
        st.lists(
            weighted((6, valid_bytes), (2, malformed_bytes), (2, st.integers(0, 1000))),
            min_size=size,
            max_size=size,
        )
    )
    datas: list[bytes] = []
    if draw(st.sampled_from([True, True, False])):  # often start from a populated zone
        datas += [
            declare("n1", dev("d1"), dev("d2", "pv", 0, 5), rid="boot-1"),
            declare("n2", dev("d3"), rid="boot-2"),
        ]
    for op in ops:
        if isinstance(op, int):  # a client retry: the exact bytes of an earlier entry
            if datas:
                datas.append(datas[op % len(datas)])
        else:
            datas.append(op)
    entries, term, index = [], 1, 0
    for data in datas:
        term += draw(st.sampled_from([0, 0, 0, 1]))
        index += draw(st.sampled_from([1, 1, 1, 2]))
        entries.append((data, term, index))
    return entries


def replay(state: ZoneState, entries: Iterable[Entry]) -> tuple[ZoneState, list[Result]]:
    results = []
    for data, term, index in entries:
        state, res = apply(state, data, term, index)
        results.append(res)
    return state, results


# --- a reference model ---------------------------------------------------------------------


class Model:
    """A deliberately naive re-statement of the zone rules (unbounded dedup memory)."""

    def __init__(self) -> None:
        self.members: dict[str, tuple[str, str]] = {}
        self.devices: dict[str, tuple[str, str, float, float]] = {}  # id -> owner, kind, lo, hi
        self.setpoints: dict[str, tuple[float, int, int, str, str]] = {}  # kw, term, index, rid, src
        self.first: dict[str, tuple[bool, str, int, int]] = {}
        self.overrides: dict[str, tuple[bool, float | None, int, int]] = {}  # closed, until, term, index
        self.deployments: dict[str, tuple[tuple[str, ...], bool, dict[str, str]]] = {}  # targets, aborted
        self.rollouts: dict[str, dict[str, Any]] = {}  # strategy, phases, outcome, started

    def apply(self, data: bytes, term: int, index: int) -> tuple[bool, str, int, int, bool]:
        rid = peek_rid(data)
        if rid in self.first:
            return (*self.first[rid], True)
        cmd = decode(data)
        out = (False, cmd.code, term, index) if isinstance(cmd, Rejection) else self._run(cmd, term, index)
        if rid is not None:
            self.first[rid] = out
        return (*out, False)

    def _run(self, cmd: Command, term: int, index: int) -> tuple[bool, str, int, int]:
        f = cmd.fields
        if cmd.type == "declare_node":
            node = f["node_id"]
            if any(d["id"] in self.devices and self.devices[d["id"]][0] != node for d in f["devices"]):
                return False, "E_DEVICE_OWNED", term, index
            for dev_id in [k for k, v in self.devices.items() if v[0] == node]:
                del self.devices[dev_id]
            for d in f["devices"]:
                self.devices[d["id"]] = (node, d["kind"], d["min_kw"], d["max_kw"])
            self.setpoints = {
                k: v
                for k, v in self.setpoints.items()
                if k in self.devices and self.devices[k][2] <= v[0] <= self.devices[k][3]
            }
            self.members[node] = (f["raft"], f["api"])
            self._drop_dead_overrides()
        elif cmd.type == "set_setpoint":
            if f["device_id"] not in self.devices:
                return False, "E_UNKNOWN_DEVICE", term, index
            _, _, lo, hi = self.devices[f["device_id"]]
            if not lo <= f["kw"] <= hi:
                return False, "E_LIMIT", term, index
            self.setpoints[f["device_id"]] = (f["kw"], term, index, cmd.rid, f["source"])
        elif cmd.type == "remove_node":
            if f["node_id"] not in self.members:
                return False, "E_UNKNOWN_NODE", term, index
            del self.members[f["node_id"]]
            self.devices = {k: v for k, v in self.devices.items() if v[0] != f["node_id"]}
            self.setpoints = {k: v for k, v in self.setpoints.items() if k in self.devices}
            self._drop_dead_overrides()
        elif cmd.type == "relay_override":
            dev = self.devices.get(f["load"].split(":")[0])
            if dev is None or dev[1] != "relay":
                return False, "E_UNKNOWN_DEVICE", term, index
            if f["closed"] is None:
                self.overrides.pop(f["load"], None)
            else:
                self.overrides[f["load"]] = (f["closed"], f["until_s"], term, index)
        elif cmd.type == "rollout_step":
            code = self._rollout(f)
            if code != "OK":
                return False, code, term, index
        elif cmd.type == "deploy_rollback":
            if f["deployment_id"] in self.deployments:
                return False, "E_DEPLOY_EXISTS", term, index
            return False, "E_PAYLOAD_ROLLBACK", term, index  # one version only: none older was active
        elif cmd.type.startswith("deploy"):
            code = self._deploy(cmd.type, f)
            if code != "OK":
                return False, code, term, index
        return True, "OK", term, index

    def _deploy(self, type_: str, f: Mapping[str, Any]) -> str:
        dep = self.deployments.get(f["deployment_id"])
        if type_ == "deploy":
            targets = tuple(f["targets"]) or tuple(sorted(self.members))
            if dep is not None:
                return "E_DEPLOY_EXISTS"
            if not targets or any(t not in self.members for t in targets):
                return "E_UNKNOWN_NODE"
            self.deployments[f["deployment_id"]] = (targets, False, {})
            self.rollouts[f["deployment_id"]] = {"strategy": f["strategy"], "phases": {}, "outcome": "",
                                                 "started": None}  # fmt: skip
            return "OK"
        if dep is None:
            return "E_UNKNOWN_DEPLOYMENT"
        targets, aborted, nodes = dep
        if type_ == "deploy_abort":
            if not aborted and not self.rollouts[f["deployment_id"]]["outcome"]:
                self._halt(f["deployment_id"], "aborted")
            self.deployments[f["deployment_id"]] = (targets, True, nodes)
            return "OK"
        if f["node_id"] not in targets:
            return "E_UNKNOWN_NODE"
        if aborted:
            return "E_DEPLOY_ABORTED"
        now, new = nodes.get(f["node_id"], "pending"), f["status"]
        if now == new:
            return "OK"
        if now in ("verified", "failed") or (now, new) == ("stored", "pending"):
            return "E_DEPLOY_STATE"
        nodes[f["node_id"]] = new
        return "OK"

    def _halt(self, dep_id: str, outcome: str, failing: str = "") -> None:
        r, targets = self.rollouts[dep_id], self.deployments[dep_id][0]
        promoted = any(r["phases"].get(t) in ("watch", "active") for t in targets)
        for t in targets:
            if t == failing:
                r["phases"][t] = "failed"
            elif r["phases"].get(t) in ("shadow", "healthy", "watch", "active"):
                r["phases"][t] = "rolled_back"
        r["outcome"] = "rolled_back" if outcome == "failed" and promoted else outcome

    def _rollout(self, f: Mapping[str, Any]) -> str:
        dep_id, node, phase = f["deployment_id"], f["node_id"], f["phase"]
        if dep_id not in self.deployments:
            return "E_UNKNOWN_DEPLOYMENT"
        targets, aborted, copies = self.deployments[dep_id]
        r = self.rollouts[dep_id]
        if aborted or r["outcome"]:
            return "E_DEPLOY_ENDED"
        if phase == "deadline":
            if r["started"] is None:
                r["started"] = f["now_s"]
                return "OK"
            if f["now_s"] < r["started"] + 3600:
                return "E_DEPLOY_NOT_DUE"
            self._halt(dep_id, "failed")
            return "OK"
        if node not in targets:
            return "E_UNKNOWN_NODE"
        now = r["phases"].get(node, "waiting")
        if now == phase:
            return "OK"
        if phase == "failed":
            if now in ("failed", "rolled_back"):
                return "E_DEPLOY_STATE"
            self._halt(dep_id, "failed", node)
            return "OK"
        if {"shadow": "waiting", "healthy": "shadow", "watch": "healthy", "active": "watch"}[phase] != now:
            return "E_DEPLOY_STATE"
        phases = [r["phases"].get(t, "waiting") for t in targets]
        if phase == "shadow":
            if copies.get(node) != "verified":
                return "E_DEPLOY_STATE"
            if r["strategy"] == "all-at-once":
                if any(copies.get(t) != "verified" for t in targets):
                    return "E_DEPLOY_STATE"
            elif any(p in ("shadow", "healthy", "watch") for p in phases) or any(
                p != "active" for p in phases[: targets.index(node)]
            ):
                return "E_DEPLOY_STATE"
            if not r["phases"] and any(o["outcome"] == "done" for o in self.rollouts.values()):
                self._halt(dep_id, "failed")  # the same version as the active one
                return "OK"
        all_at_once = r["strategy"] == "all-at-once"
        if phase == "watch" and all_at_once and any(p not in ("healthy", "watch", "active") for p in phases):
            return "E_DEPLOY_STATE"
        r["phases"][node] = phase
        if all(r["phases"].get(t) == "active" for t in targets):
            r["outcome"] = "done"
        return "OK"

    def _drop_dead_overrides(self) -> None:
        self.overrides = {
            k: v
            for k, v in self.overrides.items()
            if self.devices.get(k.split(":")[0], ("", ""))[1] == "relay"
        }

    def matches(self, state: ZoneState) -> bool:
        return (
            {k: (m.raft, m.api) for k, m in state.members.items()} == self.members
            and {k: (d.owner, d.kind, d.min_kw, d.max_kw) for k, d in state.devices.items()} == self.devices
            and {k: (s.kw, s.term, s.index, s.rid, s.source) for k, s in state.setpoints.items()}
            == self.setpoints
            and {k: (o.closed, o.until_s, o.term, o.index) for k, o in state.overrides.items()}
            == self.overrides
            and {
                k: (d.targets, d.aborted, {n: c.status for n, c in d.nodes.items()})
                for k, d in state.deployments.items()
            }
            == self.deployments
            and {
                k: (
                    d.strategy,
                    {n: p.phase for n, p in d.rollout.phases.items()},
                    d.rollout.outcome,
                    d.rollout.started_s,
                )
                for k, d in state.deployments.items()
            }
            == {k: (r["strategy"], r["phases"], r["outcome"], r["started"]) for k, r in self.rollouts.items()}
        )


# --- 1. replicas agree -------------------------------------------------------------------


@PROPS
@given(logs(), st.integers(0, 1000), st.sampled_from([2, 3, 4096]))
def test_replicas_applying_the_same_log_agree(entries: list[Entry], cut_at: int, gen: int) -> None:
    cut = cut_at % (len(entries) + 1)
    with generation(gen):
        a, results_a = replay(ZoneState(), entries)
        b, results_b = replay(ZoneState(), entries)
        # c is snapshotted and restored midway (as after a Raft snapshot install) ...
        c, results_c = replay(ZoneState(), entries[:cut])
        c = restore(snapshot(c))
        c, more = replay(c, entries[cut:])
        results_c += more
        # ... and d is restored midway and then sees the whole log again from the start.
        d, _ = replay(ZoneState(), entries[:cut])
        d = restore(snapshot(d))
        d_before = d
        d, replayed = replay(d, entries[:cut])
        assert d is d_before
        assert all(r.code == "E_CMD_REPLAYED" and not r.ok for r in replayed)
        d, results_d = replay(d, entries[cut:])

    assert a == b == c == d
    assert state_hash(a) == state_hash(b) == state_hash(c) == state_hash(d)
    assert snapshot(a) == snapshot(c)
    assert results_a == results_b == results_c
    assert results_d == results_a[cut:]
    if entries:
        assert (a.last_term, a.last_index) == entries[-1][1:]


@PROPS
@given(logs())
def test_apply_matches_the_reference_model(entries: list[Entry]) -> None:
    model, state = Model(), ZoneState()
    for data, term, index in entries:
        state, res = apply(state, data, term, index)
        assert (res.ok, res.code, res.term, res.index, res.duplicate) == model.apply(data, term, index)
        assert model.matches(state)


@PROPS
@given(logs(max_size=60), st.sampled_from([2, 3, 5]))
def test_state_invariants_hold_after_every_entry(entries: list[Entry], gen: int) -> None:
    state = ZoneState()
    with generation(gen):
        for data, term, index in entries:
            state, res = apply(state, data, term, index)
            assert (state.last_term, state.last_index) == (term, index)
            assert res.ok == (res.code == "OK")
            assert all(d.owner in state.members for d in state.devices.values())
            assert all(k == d.id for k, d in state.devices.items())
            assert all(k == s.device_id and k in state.devices for k, s in state.setpoints.items())
            assert all(s.index <= index and s.term <= term for s in state.setpoints.values())
            assert 1 <= len(recent(state)) <= gen or not (recent(state) or old(state))
            assert len(old(state)) in (0, gen)
            assert not set(recent(state)) & set(old(state))
            assert not any(r.duplicate for r in (*recent(state).values(), *old(state).values()))


# --- 2. malformed commands ---------------------------------------------------------------

MALFORMED: list[tuple[str, bytes, str]] = [
    ("random bytes", b"\x93\x01", "E_CMD_MALFORMED"),
    ("reserved byte", b"\xc1", "E_CMD_MALFORMED"),
    ("empty", b"", "E_CMD_MALFORMED"),
    ("a msgpack list", msgpack.packb(["set_setpoint", "d1", 5]), "E_CMD_MALFORMED"),
    ("wrong version", msgpack.packb({**_raw("barrier", "bad-v"), "v": 2}), "E_CMD_VERSION"),
    ("version zero", msgpack.packb({**_raw("barrier", "bad-v0"), "v": 0}), "E_CMD_VERSION"),
    ("bool version", msgpack.packb({**_raw("barrier", "bad-vb"), "v": True}), "E_CMD_MALFORMED"),
    ("unknown type", msgpack.packb(_raw("shutdown", "bad-t")), "E_CMD_UNKNOWN_TYPE"),
    ("extra field", msgpack.packb(_raw("barrier", "bad-x", force=True)), "E_CMD_MALFORMED"),
    ("missing rid", msgpack.packb(_without(_raw("barrier", "x"), "rid")), "E_CMD_MALFORMED"),
    ("rid too long", msgpack.packb(_raw("barrier", "r" * 65)), "E_CMD_MALFORMED"),
    ("NaN kw", setpoint("d1", math.nan, rid="bad-nan"), "E_CMD_MALFORMED"),
    ("inf kw", setpoint("d1", math.inf, rid="bad-inf"), "E_CMD_MALFORMED"),
    ("-inf kw", setpoint("d1", -math.inf, rid="bad-ninf"), "E_CMD_MALFORMED"),
    ("bool kw", encode("set_setpoint", "bad-bool", device_id="d1", kw=True, source="op"), "E_CMD_MALFORMED"),
    ("str kw", encode("set_setpoint", "bad-str", device_id="d1", kw="5", source="op"), "E_CMD_MALFORMED"),
    ("declare stealing with bad kind", declare("n2", dev("d1", "reactor"), rid="bad-k"), "E_CMD_MALFORMED"),
    ("declare min above max", declare("n1", dev("d1", min_kw=3, max_kw=1), rid="bad-mm"), "E_CMD_MALFORMED"),
    ("remove without node_id", encode("remove_node", "bad-rm"), "E_CMD_MALFORMED"),
]


@pytest.mark.parametrize(("case", "data", "code"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_commands_change_only_position_and_window(case: str, data: bytes, code: str) -> None:
    before = zone()
    index = before.last_index + 1
    after, res = apply(before, data, 7, index)
    assert (res.ok, res.code, res.term, res.index, res.duplicate) == (False, code, 7, index, False)
    assert res.message
    assert business(after) == business(before)
    assert (after.last_term, after.last_index) == (7, index)
    assert old(after) == old(before)
    rid = peek_rid(data)
    if rid is None:
        assert recent(after) == recent(before)
    else:
        assert recent(after) == {**recent(before), rid: res}
    # Every replica answers the same.
    assert apply(zone(), data, 7, index) == (after, res)


# --- 3. idempotent retries and the dedup window ------------------------------------------

RETRIED: list[tuple[str, bytes, str]] = [
    ("accepted setpoint", setpoint("d1", -2.5, rid="retry-sp"), "OK"),
    ("setpoint over the limit", setpoint("d1", 99, rid="retry-lim"), "E_LIMIT"),
    ("setpoint on unknown device", setpoint("zz", 1, rid="retry-unk"), "E_UNKNOWN_DEVICE"),
    ("declare", declare("n3", dev("d9"), rid="retry-decl"), "OK"),
    ("declare of an owned device", declare("n3", dev("d3"), rid="retry-own"), "E_DEVICE_OWNED"),
    ("remove", remove("n2", rid="retry-rm"), "OK"),
    ("remove unknown node", remove("n7", rid="retry-rm7"), "E_UNKNOWN_NODE"),
    ("barrier", barrier("retry-b"), "OK"),
    ("malformed with a readable rid", setpoint("d1", math.nan, rid="retry-nan"), "E_CMD_MALFORMED"),
    (
        "wrong version with a readable rid",
        msgpack.packb({**_raw("barrier", "retry-v"), "v": 3}),
        "E_CMD_VERSION",
    ),
]


@pytest.mark.parametrize(("case", "data", "code"), RETRIED, ids=[r[0] for r in RETRIED])
def test_a_retry_returns_the_first_result_and_changes_nothing(case: str, data: bytes, code: str) -> None:
    state, first = apply(zone(), data, 3, 10)
    assert first.code == code and not first.duplicate
    again, second = apply(state, data, 4, 11)
    assert second == replace(first, duplicate=True)
    assert (second.term, second.index) == (3, 10)  # the first entry's position
    assert business(again) == business(state)
    assert (recent(again), old(again)) == (recent(state), old(state))
    assert (again.last_term, again.last_index) == (4, 11)


def test_a_retry_after_many_other_commands_is_still_deduplicated() -> None:
    state, first = apply(zone(), setpoint("d1", 7.0, rid="slow-client"), 1, 10)
    state, results = run(state, [setpoint("d1", i % 10, rid=f"other-{i}") for i in range(1500)], term=2)
    assert all(r.ok for r in results)
    assert state.setpoints["d1"].kw == 1499 % 10
    state, again = apply(state, setpoint("d1", 7.0, rid="slow-client"), 3, state.last_index + 1)
    assert again == replace(first, duplicate=True)
    assert state.setpoints["d1"].kw == 1499 % 10  # the late retry did not roll the setpoint back


def test_a_command_reusing_a_rid_gets_the_first_result() -> None:
    state, first = apply(zone(), setpoint("d1", 1.0, rid="same"), 1, 10)
    # Different bytes with the same rid, valid or not: the rid identifies the request.
    for i, data in enumerate([setpoint("d1", 9.0, rid="same"), setpoint("d1", math.nan, rid="same")]):
        state, res = apply(state, data, 1, 11 + i)
        assert res == replace(first, duplicate=True)
        assert state.setpoints["d1"].kw == 1.0
    # ... and the original retry still gets its own (successful) result.
    state, res = apply(state, setpoint("d1", 1.0, rid="same"), 1, 20)
    assert res == replace(first, duplicate=True) and res.ok


def test_a_rejected_rid_is_remembered_too() -> None:
    state, first = apply(zone(), setpoint("d1", math.inf, rid="typo"), 1, 10)
    assert first.code == "E_CMD_MALFORMED"
    state, res = apply(state, setpoint("d1", 1.0, rid="typo"), 1, 11)
    assert res == replace(first, duplicate=True)
    assert state.setpoints["d1"].kw == 4.0


@pytest.mark.parametrize(
    ("others", "remembered"),
    [(0, True), (1, True), (4, True), (7, True), (8, False), (12, False)],
)
def test_window_boundary_from_an_empty_window(others: int, remembered: bool) -> None:
    """With RID_GENERATION = 4 and x the first rid: x survives 2 x 4 - 1 others, not 2 x 4."""
    with generation(4):
        state, first = apply(ZoneState(), barrier("x"), 1, 1)
        state, _ = run(state, [barrier(f"o{i}") for i in range(others)])
        assert (seen(state, "x") is not None) == remembered
        state, again = apply(state, barrier("x"), 1, state.last_index + 1)
    if remembered:
        assert again == replace(first, duplicate=True)
    else:
        assert not again.duplicate and again.index == state.last_index


@settings(max_examples=100, deadline=None, phases=PHASES)
@given(st.integers(0, 20), st.integers(0, 20), st.sampled_from([1, 2, 4, 5]))
def test_window_keeps_at_least_one_and_at_most_two_generations(prefill: int, others: int, gen: int) -> None:
    with generation(gen):
        state, _ = run(ZoneState(), [barrier(f"pre{i}") for i in range(prefill)])
        state, first = apply(state, barrier("x"), 1, state.last_index + 1)
        state, _ = run(state, [barrier(f"o{i}") for i in range(others)])
        state, again = apply(state, barrier("x"), 1, state.last_index + 1)
    if others <= gen:
        assert again == replace(first, duplicate=True)
    if others >= 2 * gen:
        assert not again.duplicate
        assert again.index == state.last_index
    assert len(recent(state)) + len(old(state)) <= 2 * gen


def test_an_evicted_setpoint_retry_is_applied_again_with_a_new_fencing_token() -> None:
    with generation(4):
        state, first = apply(zone(), setpoint("d1", 2.0, rid="late"), 1, 10)
        state, _ = run(state, [setpoint("d1", -1.0, rid=f"o{i}") for i in range(8)])
        state, again = apply(state, setpoint("d1", 2.0, rid="late"), 2, 30)
    assert first.ok and first.index == 10
    assert again == Result(True, "OK", "", 2, 30, duplicate=False)
    assert (state.setpoints["d1"].kw, state.setpoints["d1"].index) == (2.0, 30)


def test_duplicates_and_rid_less_rejects_do_not_use_up_the_window() -> None:
    with generation(2):
        state, first = apply(ZoneState(), barrier("x"), 1, 1)
        state, _ = apply(state, barrier("y"), 1, 2)
        # Neither retries of y nor garbage without a readable rid are new request ids.
        state, results = run(state, [barrier("y"), b"\xc1", msgpack.packb({"v": 1})] * 10)
        assert all(r.duplicate or r.code == "E_CMD_MALFORMED" for r in results)
        state, again = apply(state, barrier("x"), 1, state.last_index + 1)
    assert again == replace(first, duplicate=True)
    assert list(recent(state)) == ["x", "y"]


# --- 4. replayed entries -------------------------------------------------------------------


@pytest.mark.parametrize("offset", [0, -1, -3])
def test_an_entry_at_or_below_the_applied_index_is_a_replay(offset: int) -> None:
    before = zone()
    index = before.last_index + offset
    after, res = apply(before, setpoint("d1", 9.0, rid="fresh"), 8, index)
    assert after is before
    assert res == Result(False, "E_CMD_REPLAYED", "entry already applied", 8, index)


def test_index_zero_on_an_empty_state_is_a_replay() -> None:
    state = ZoneState()
    after, res = apply(state, barrier("b"), 1, 0)
    assert after is state and res.code == "E_CMD_REPLAYED"


#: keys added after snapshot version 1 shipped: an older snapshot restores them as 0


# --- 5. purity ---------------------------------------------------------------------------------


@PROPS
@given(logs(), st.sampled_from([2, 4096]))
def test_apply_never_mutates_its_input(entries: list[Entry], gen: int) -> None:
    state = ZoneState()
    with generation(gen):
        for data, term, index in entries:
            deep, ordered = copy.deepcopy(state), view(state)
            new, _ = apply(state, data, term, index)
            assert state == deep
            assert view(state) == ordered
            # Replaying the same entry on the old state gives the same answer again.
            assert apply(state, data, term, index) == apply(deep, data, term, index)
            state = new


def test_apply_shares_what_did_not_change() -> None:
    before = zone()
    after, _ = apply(before, setpoint("d2", 1.0, rid="share"), 1, 10)
    assert after.members is before.members and after.devices is before.devices
    assert after.setpoints is not before.setpoints


def test_states_and_results_are_immutable() -> None:
    state, res = apply(zone(), barrier("b"), 1, 10)
    with pytest.raises(AttributeError):
        state.last_index = 0  # type: ignore[misc]
    with pytest.raises(AttributeError):
        res.ok = True  # type: ignore[misc]
    with pytest.raises(AttributeError):
        state.setpoints["d1"].kw = 9.0  # type: ignore[misc]


@pytest.mark.parametrize(("others", "remembered"), [(0, True), (11, True), (12, False)])
def test_window_spans_all_generations(others: int, remembered: bool) -> None:
    """With 3 generations of 4, the first rid survives 3 x 4 - 1 others, not 3 x 4."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cluster, "RID_GENERATION", 4)
        mp.setattr(cluster, "RID_GENERATIONS", 3)
        state, _ = apply(ZoneState(), barrier("x"), 1, 1)
        state, _ = run(state, [barrier(f"o{i}") for i in range(others)])
        assert len(state.rids) <= 3
        assert (seen(state, "x") is not None) == remembered
