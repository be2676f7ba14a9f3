"""Unit tests for `meshems.core.snapshot`: a snapshot restores to the same state, hash and
bytes (also after random logs), is canonical msgpack with a version, and a damaged,
truncated or random snapshot is refused with ValueError only."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from typing import Any

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshems.core.cluster import ZoneState
from meshems.core.snapshot import SNAPSHOT_VERSION, restore, snapshot, state_hash, to_snapshot
from meshems.core.zone_records import Device, Member, Result, Setpoint
from tests.core.test_cluster import PHASES, PROPS, Entry, generation, logs, old, recent, replay, zone


@PROPS
@given(logs(), st.sampled_from([2, 4096]))
def test_snapshot_restore_round_trip(entries: list[Entry], gen: int) -> None:
    with generation(gen):
        state, _ = replay(ZoneState(), entries)
    back = restore(snapshot(state))
    assert back == state
    assert list(recent(back)) == list(recent(state))  # eviction order survives
    assert list(old(back)) == list(old(state))
    assert snapshot(back) == snapshot(state)
    assert state_hash(back) == state_hash(state)
    assert to_snapshot(back) == to_snapshot(state)


def test_snapshot_is_canonical_msgpack_with_a_version() -> None:
    state = zone()
    raw = msgpack.unpackb(snapshot(state))
    assert raw == to_snapshot(state)
    assert raw["v"] == SNAPSHOT_VERSION
    assert raw["members"] == [
        ["n1", "n1.local:4321", "n1.local:8080"],
        ["n2", "n2.local:4321", "n2.local:8080"],
    ]
    assert state_hash(state) == hashlib.sha256(snapshot(state)).hexdigest()


def test_hash_ignores_mapping_order_but_not_contents() -> None:
    m1, m2 = Member("a", "r1", "a1"), Member("b", "r2", "a2")
    d1, d2 = Device("x", "pv", "a", 0.0, 5.0), Device("y", "load", "b", -5.0, 0.0)
    sp = Setpoint("x", 1.0, 3, 9, "r", "operator")
    one = ZoneState(3, 9, {"a": m1, "b": m2}, {"x": d1, "y": d2}, {"x": sp})
    two = ZoneState(3, 9, {"b": m2, "a": m1}, {"y": d2, "x": d1}, {"x": sp})
    assert state_hash(one) == state_hash(two)
    different = [
        replace(one, setpoints={"x": replace(sp, kw=1.5)}),
        replace(one, setpoints={"x": replace(sp, term=4)}),
        replace(one, setpoints={"x": replace(sp, index=8)}),
        replace(one, setpoints={"x": replace(sp, source="ems")}),
        replace(one, setpoints={}),
        replace(one, devices={"x": replace(d1, max_kw=6.0), "y": d2}),
        replace(one, members={"a": replace(m1, api="other"), "b": m2}),
        replace(one, last_index=10),
        replace(one, rids=({"r": Result(True, "OK", "", 3, 9)},)),
    ]
    hashes = {state_hash(s) for s in [one, *different]}
    assert len(hashes) == len(different) + 1


def test_hash_depends_on_the_dedup_window_order() -> None:
    r1, r2 = Result(True, "OK", "", 1, 1), Result(True, "OK", "", 1, 2)
    assert state_hash(ZoneState(rids=({"a": r1, "b": r2},))) != state_hash(
        ZoneState(rids=({"b": r2, "a": r1},))
    )


def _damaged(**over: Any) -> bytes:
    return msgpack.packb({**to_snapshot(zone()), **over})


DAMAGED: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("reserved byte", b"\xc1"),
    ("not a map (list)", msgpack.packb([1, 2])),
    ("not a map (int)", msgpack.packb(5)),
    ("nil", msgpack.packb(None)),
    ("empty map", msgpack.packb({})),
    ("newer version", _damaged(v=SNAPSHOT_VERSION + 1)),
    ("no version", msgpack.packb({k: v for k, v in to_snapshot(zone()).items() if k != "v"})),
    ("members not a list", _damaged(members=5)),
    ("empty member row", _damaged(members=[[]])),
    ("short member row", _damaged(members=[["n1", "x"]])),
    ("long device row", _damaged(devices=[["d", "pv", "n", 0, 1, 2]])),
    ("setpoint row not a list", _damaged(setpoints=[7])),
    ("unhashable key", _damaged(members=[[["n1"], "r", "a"]])),
    ("empty rid row", _damaged(rids=[[[]]])),
    ("short rid row", _damaged(rids=[[], [["r", True, "OK"]]])),
    ("trailing bytes", snapshot(zone()) + b"\x00"),
]


@pytest.mark.parametrize(("case", "data"), DAMAGED, ids=[d[0] for d in DAMAGED])
def test_restore_of_a_damaged_snapshot_raises_value_error(case: str, data: bytes) -> None:
    with pytest.raises(ValueError):
        restore(data)


OPTIONAL_KEYS = {"telemetry_seq", "cloud_acked", "cloud_command_seq"}
#: added after the first release: a snapshot from before restores with none
LATER_KEYS = {"overrides", "tokens", "node_forecasts", "plan", "deployments"}


@pytest.mark.parametrize("key", sorted(set(to_snapshot(ZoneState())) - OPTIONAL_KEYS - LATER_KEYS))
def test_restore_needs_every_key(key: str) -> None:
    raw = {k: v for k, v in to_snapshot(zone()).items() if k != key}
    with pytest.raises(ValueError):
        restore(msgpack.packb(raw))


@pytest.mark.parametrize("key", sorted(OPTIONAL_KEYS))
def test_restore_of_an_older_snapshot_starts_the_telemetry_stream_at_zero(key: str) -> None:
    state = replace(zone(), telemetry_seq=7, cloud_acked=5, cloud_command_seq=3)
    assert restore(snapshot(state)).cloud_command_seq == 3  # the downlink's replay guard survives
    raw = {k: v for k, v in to_snapshot(state).items() if k != key}
    assert getattr(restore(msgpack.packb(raw)), key) == 0


def test_every_truncated_snapshot_is_refused() -> None:
    data = snapshot(zone())
    for n in range(len(data)):
        with pytest.raises(ValueError):
            restore(data[:n])


@settings(max_examples=200, deadline=None, phases=PHASES)
@given(st.data())
def test_restore_of_corrupted_bytes_raises_only_value_error(data: st.DataObject) -> None:
    good = bytearray(snapshot(zone()))
    for _ in range(data.draw(st.integers(1, 3))):
        good[data.draw(st.integers(0, len(good) - 1))] = data.draw(st.integers(0, 255))
    try:
        state = restore(bytes(good))
    except ValueError:
        return
    assert isinstance(state, ZoneState)


@settings(max_examples=150, deadline=None, phases=PHASES)
@given(st.binary(max_size=64))
def test_restore_of_random_bytes_raises_value_error(data: bytes) -> None:
    with pytest.raises(ValueError):
        restore(data)


def test_a_snapshot_from_before_relay_overrides_restores_with_none() -> None:
    raw = {k: v for k, v in to_snapshot(zone()).items() if k != "overrides"}
    assert restore(msgpack.packb(raw)).overrides == {}
