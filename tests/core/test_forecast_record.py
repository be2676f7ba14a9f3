"""Replicating a node's forecaster through the log: members only, versions only move up."""

from __future__ import annotations

from meshems.core.cluster import ZoneState, apply
from meshems.core.commands import encode
from meshems.core.snapshot import restore, snapshot, state_hash
from meshems.core.zone_handlers import MAX_VERSION_STEP

DIGEST = "ab" * 32


def model(node: str, version: int, rid: str, data: bytes = b"npz-bytes") -> bytes:
    return encode("forecast_model", rid, node_id=node, version=version, digest=DIGEST, data=data)


def run(state: ZoneState, *entries: bytes) -> tuple[ZoneState, list]:
    out = []
    for data in entries:
        state, res = apply(state, data, 2, state.last_index + 1)
        out.append(res)
    return state, out


def declared() -> ZoneState:
    state, _ = run(ZoneState(), encode("declare_node", "d", node_id="n1", raft="a:1", api="a:2", devices=[]))
    return state


def test_a_member_replicates_its_model_with_version_and_digest() -> None:
    state, res = run(declared(), model("n1", 1, "m1"))
    assert res[0].ok
    rec = state.forecasts["n1"]
    assert (rec.version, rec.digest, rec.data, rec.term) == (1, DIGEST, b"npz-bytes", 2)


def test_versions_only_move_up_and_strangers_are_refused() -> None:
    state, res = run(
        declared(), model("n1", 2, "m2"), model("n1", 1, "m1"), model("n1", 2, "m2b"), model("zz", 1, "z")
    )
    assert [r.code for r in res] == ["OK", "E_STALE_MODEL", "E_STALE_MODEL", "E_UNKNOWN_NODE"]
    assert state.forecasts["n1"].version == 2


def test_a_version_may_not_jump_beyond_the_step_limit() -> None:
    far = 20261201 + MAX_VERSION_STEP + 1
    entries = [model("n1", 20261201, "date"), model("n1", far, "far"), model("n1", 2**62, "forged")]
    state, res = run(declared(), *entries, model("n1", 20270101, "next"))
    assert [r.code for r in res] == ["OK", "E_SEQ_JUMP", "E_SEQ_JUMP", "OK"]
    assert state.forecasts["n1"].version == 20270101


def test_malformed_models_are_refused_the_same_way_everywhere() -> None:
    bad = [
        encode("forecast_model", "b1", node_id="n1", version=0, digest=DIGEST, data=b"x"),
        encode("forecast_model", "b2", node_id="n1", version=1, digest="nothex", data=b"x"),
        encode("forecast_model", "b3", node_id="n1", version=1, digest=DIGEST, data="text"),
        encode("forecast_model", "b4", node_id="n1", version=1, digest=DIGEST, data=b"x" * 60000),
    ]
    state, res = run(declared(), *bad)
    assert all(r.code == "E_CMD_MALFORMED" for r in res)
    assert state.forecasts == {}


def test_models_survive_snapshot_and_restore() -> None:
    state, _ = run(declared(), model("n1", 3, "m3", data=bytes(range(256))))
    back = restore(snapshot(state))
    assert back == state and state_hash(back) == state_hash(state)
