"""Bus ownership in the replicated state: shared devices, transfer, and what happens when
the owner is removed."""

from __future__ import annotations

from meshems.core.cluster import ZoneState, apply
from meshems.core.commands import encode
from meshems.core.snapshot import restore, snapshot, state_hash


def declare(node: str, *devices: dict, rid: str | None = None) -> bytes:
    return encode("declare_node", rid or f"decl-{node}-{len(devices)}", node_id=node, raft=f"{node}:1",
                  api=f"{node}:2", devices=list(devices))  # fmt: skip


def pv(shared: bool = True) -> dict:
    return {"id": "pv", "kind": "pv", "min_kw": 0.0, "max_kw": 40.0, **({"shared": True} if shared else {})}


def run(state: ZoneState, *entries: bytes) -> tuple[ZoneState, list]:
    results = []
    for data in entries:
        state, res = apply(state, data, 1, state.last_index + 1)
        results.append(res)
    return state, results


def test_first_declarer_owns_a_shared_device_and_others_can_reach_it() -> None:
    state, res = run(ZoneState(), declare("n1", pv()), declare("n2", pv()))
    assert all(r.ok for r in res)
    assert state.devices["pv"].owner == "n1"
    assert state.shared["pv"] == ("n1", "n2")


def test_a_device_not_shared_cannot_be_declared_twice() -> None:
    state, res = run(ZoneState(), declare("n1", pv(shared=False)), declare("n2", pv()))
    assert res[1].code == "E_DEVICE_OWNED"
    assert "pv" not in state.shared


def test_transfer_to_a_node_that_reaches_it() -> None:
    state, _ = run(ZoneState(), declare("n1", pv()), declare("n2", pv()), declare("n3"))
    state, res = run(state, encode("transfer_device", "t1", device_id="pv", node_id="n2"))
    assert res[0].ok and state.devices["pv"].owner == "n2"
    state, res = run(state, encode("transfer_device", "t2", device_id="pv", node_id="n3"))
    assert res[0].code == "E_NOT_REACHABLE" and state.devices["pv"].owner == "n2"
    state, res = run(state, encode("transfer_device", "t3", device_id="ghost", node_id="n2"))
    assert res[0].code == "E_UNKNOWN_DEVICE"


def test_removing_the_owner_hands_the_device_to_the_next_reachable_node() -> None:
    state, _ = run(ZoneState(), declare("n1", pv()), declare("n2", pv()))
    state, res = run(state, encode("remove_node", "rm", node_id="n1"))
    assert res[0].ok
    assert state.devices["pv"].owner == "n2" and state.shared["pv"] == ("n2",)


def test_a_node_that_stops_declaring_it_can_no_longer_reach_it() -> None:
    state, _ = run(ZoneState(), declare("n1", pv()), declare("n2", pv()))
    state, res = run(state, declare("n2", rid="decl-n2-none"))
    assert res[0].ok and state.shared["pv"] == ("n1",) and state.devices["pv"].owner == "n1"


def test_ownership_survives_snapshot_and_restore() -> None:
    state, _ = run(ZoneState(), declare("n1", pv()), declare("n2", pv()))
    state, _ = run(state, encode("transfer_device", "t1", device_id="pv", node_id="n2"))
    back = restore(snapshot(state))
    assert back == state and state_hash(back) == state_hash(state)
