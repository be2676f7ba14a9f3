"""The node's part of the data kinds: a stored policy, forecast model or profiles payload is
checked with the loaders the node uses (E_PAYLOAD_DATA naming the file and the key), and the
leader proposes a done policy deployment's file once, through Raft; a follower does not."""

from __future__ import annotations

import asyncio
import hashlib
import time
from pathlib import Path
from typing import Any

import pytest

from meshems.adapters import payload_bundle as pb
from meshems.adapters.payload_store import PayloadStore
from meshems.core.cluster import ZoneState
from meshems.core.errors import PayloadDataError
from meshems.core.node_events import RaftChanged
from meshems.core.payload_manifest import Manifest, parse_manifest
from meshems.node.payload_data import PolicyApply, check_data, proposes_apply
from tests.core.test_data_handlers import deploy, run, verified, zone
from tests.node.test_rollout_duty import Zone

EXAMPLE = Path(__file__).resolve().parents[2] / "cluster-configs" / "payloads" / "site-policy" / "policy.yaml"
METER = Path(__file__).resolve().parents[2] / "meshems" / "profiles" / "meter.yaml"


def stored(
    tmp_path: Path, kind: str, files: dict[str, bytes], entry: str | None = None
) -> tuple[Path, Manifest]:
    folder = tmp_path / kind
    for rel, data in files.items():
        (folder / "files" / rel).parent.mkdir(parents=True, exist_ok=True)
        (folder / "files" / rel).write_bytes(data)
    listed = [{"path": p, "sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for p, d in files.items()]
    doc = {
        "name": "data",
        "version": "1.0.0",
        "kind": kind,
        "expires_at": "2099-01-01T00:00:00Z",
        "files": listed,
    }
    return folder, parse_manifest({**doc, **({"entry_point": entry} if entry else {})})


def refusal(folder: Path, manifest: Manifest, state: ZoneState | None = None) -> str:
    with pytest.raises(PayloadDataError) as exc:
        check_data(folder, manifest, state)
    assert exc.value.code == "E_PAYLOAD_DATA"
    return exc.value.message


def test_a_policy_file_is_checked_as_yaml_or_json_naming_the_file_and_the_key(tmp_path: Path) -> None:
    check_data(*stored(tmp_path, "policy", {"policy.yaml": b"import_limit_kw: 40\nmode: peak\n"}))
    check_data(*stored(tmp_path / "j", "policy", {"p.json": b'{"policy": {"import_limit_kw": 40}}'}))
    check_data(*stored(tmp_path / "x", "policy", {"policy.yaml": EXAMPLE.read_bytes()}))  # the example
    msg = refusal(*stored(tmp_path / "a", "policy", {"policy.yaml": b"import_limit_kw: -3\n"}))
    assert msg.startswith("files/policy.yaml: import_limit_kw:"), msg
    msg = refusal(*stored(tmp_path / "b", "policy", {"policy.yaml": b"mode: peak\nmode: tariff\n"}))
    assert "files/policy.yaml" in msg and "mode" in msg, msg  # a duplicate key is an error
    msg = refusal(*stored(tmp_path / "c", "policy", {"policy.yaml": b"shed_order: ['r1:1']\n"}), zone())
    assert msg.startswith("files/policy.yaml: shed_order: 'r1:1' is not a load of a relay device"), msg
    two = {"a.yaml": b"import_limit_kw: 4\n", "b.yaml": b"import_limit_kw: 5\n"}
    assert refusal(*stored(tmp_path / "d", "policy", two)).startswith(
        "entry_point: a policy payload of 2 files"
    )


def test_forecast_models_and_profiles_are_checked_by_the_nodes_own_loaders(tmp_path: Path) -> None:
    msg = refusal(*stored(tmp_path, "forecast-model", {"model.npz": b"not a zip"}))
    assert msg.startswith("files/model.npz:"), msg
    check_data(*stored(tmp_path / "p", "profiles", {"grid-meter.yaml": METER.read_bytes()}))
    bad = METER.read_bytes().replace(b"address: 40070, type: int32", b"address: 40070, type: int33")
    msg = refusal(*stored(tmp_path / "q", "profiles", {"ok.yaml": METER.read_bytes(), "site/bad.yaml": bad}))
    assert "files/site/bad.yaml" in msg and "points[0]" in msg and str(tmp_path) not in msg, msg
    assert refusal(*stored(tmp_path / "r", "profiles", {"README": b"x"})).startswith(
        "files: a profiles payload"
    )


def test_the_leader_proposes_a_done_policy_once_and_a_follower_does_not(tmp_path: Path) -> None:
    folder = tmp_path / "site-policy"
    folder.mkdir()
    (folder / "manifest.yaml").write_text(
        "name: site-policy\nversion: 1.0.0\nkind: policy\nentry_point: policy.yaml\n"
        "expires_at: 2099-01-01T00:00:00Z\n"
    )
    (folder / "policy.yaml").write_text("import_limit_kw: 42\n")
    _, key = pb.keygen(tmp_path / "release.key")
    built = pb.build(folder, [tmp_path / "release.key"], tmp_path / "p.mpkg", time.time())
    store = PayloadStore(tmp_path / "data")
    installed = store.install(built.path, pb.Checks(frozenset({key}), 1, time.time()))
    m = (installed.path / "manifest.json").read_bytes()
    sigs = (installed.path / "manifest.sig").read_bytes()
    state, res = run(zone(), "deploy", deployment_id="p1", manifest=m, signatures=sigs,
                     digest=installed.digest, size=4096, targets=[], strategy="all-at-once", by="alice",
                     origin="n1")  # fmt: skip
    assert res.ok, res
    follower, leader = Zone(verified(state, "p1")), Zone(verified(state, "p1"), role="leader")
    assert (
        asyncio.run(PolicyApply("n2", store, lambda: follower.state, follower.view, follower.commit).step())
        is None
    )
    duty = PolicyApply("n1", store, lambda: leader.state, leader.view, leader.commit)
    res: Any = asyncio.run(duty.step())
    assert res["ok"] and leader.state.policy.import_limit_kw == 42.0
    assert asyncio.run(duty.step()) is None and len(leader.proposed) == 1  # applied: nothing due


def test_with_the_leader_no_target_the_first_verified_target_proposes() -> None:
    state, _ = deploy(zone(), "p1", "1.0.0")
    dep = verified(state, "p1").deployments["p1"]
    follower = RaftChanged("follower", 2, "n9", True, True)
    assert proposes_apply("n1", follower, dep, stored=True)
    assert not proposes_apply("n2", follower, dep, stored=True)
    assert not proposes_apply("n1", follower, dep, stored=False)
    assert not proposes_apply("n1", RaftChanged("follower", 2, "n2", True, True), dep, stored=True)
    assert proposes_apply("n2", RaftChanged("leader", 2, "n2", True, True), dep, stored=True)
    assert not proposes_apply("n2", RaftChanged("leader", 2, "n2", False, True), dep, stored=True)
