"""The leader's handling of a cloud `deploy` (`node.downlink_deploy`) without a broker, with the
fakes of tests/node/test_downlink.py and real bundles: a bundle signed by a trusted release key
is stored (as an upload is) and its deployment committed by "cloud", the entry without the
bundle; one signed by another release key, or altered, is refused with its E_PAYLOAD_ code,
never proposed, and leaves nothing in the store; so is a version not newer than the active one."""

from __future__ import annotations

import dataclasses
import shutil
import time
from pathlib import Path
from typing import Any

from meshems.adapters import payload_bundle as pb
from meshems.adapters.command_signing import public_hex, sign
from meshems.adapters.mqtt_subscriber import Message
from meshems.cloud.downlink import make_record
from meshems.core import commands
from meshems.core.cluster import apply
from meshems.core.config import parse_config
from meshems.node.bridge import Bridge
from meshems.node.downlink import Downlink
from tests.integration.test_deploy import EXAMPLE, tampered
from tests.node.test_downlink import KEY, FakeRaft, FakeSub, bridge  # noqa: F401 (the fixture)


class Recording(FakeRaft):
    def __init__(self) -> None:
        super().__init__()
        self.entries: list[bytes] = []

    async def commit(self, data: bytes) -> dict[str, Any]:
        self.entries.append(data)
        return await super().commit(data)


def service(b: Bridge, raft: FakeRaft, tmp_path: Path, trusted: str) -> tuple[Downlink, FakeSub]:
    node = {"id": "n1", "address": "127.0.0.1", "raft_port": 4001, "api_port": 5001}
    doc = {"cluster": "t", "zone": "zone-a", "nodes": [node],
           "raft": {"secret_file": "s", "commit_timeout_s": 0.5, "data_dir": str(tmp_path / "data")},
           "cloud": {"broker_host": "b", "command_keys": [public_hex(KEY)]},
           "payloads": {"trusted_keys": [trusted], "threshold": 1}}  # fmt: skip
    d = Downlink.configured(parse_config(doc), "n1", lambda: True, lambda: raft.state, raft.commit, b)
    assert d is not None
    sub = FakeSub()
    d.sub = sub  # type: ignore[assignment]
    return d, sub


def deploy(mid: int, seq: int, bundle: Path) -> Message:
    args = {"bundle": bundle.read_bytes(), "strategy": "all-at-once", "targets": []}
    rec = make_record("zone-a", "deploy", args, seq, time.time(), 60)
    return Message("meshems/zone-a/commands", sign(rec, KEY), (), mid, 1)


def answers(sub: FakeSub) -> list[dict[str, Any]]:
    return [e[1][1] for e in sub.events if e[0] == "answer"]


def test_a_trusted_bundle_becomes_a_deployment_and_an_untrusted_one_is_refused(
    bridge: Bridge,  # noqa: F811
    tmp_path: Path,
) -> None:
    _, trusted = pb.keygen(tmp_path / "release.key")
    pb.keygen(tmp_path / "other.key")
    good = pb.build(EXAMPLE, [tmp_path / "release.key"], tmp_path / "good.mpkg", time.time())
    other = pb.build(EXAMPLE, [tmp_path / "other.key"], tmp_path / "other.mpkg", time.time())
    altered = tampered(good.path, tmp_path / "altered.mpkg")
    raft = Recording()
    declared = commands.encode("declare_node", "d1", node_id="n1", raft="n1:1", api="n1:2", devices=[])
    raft.state, _ = apply(raft.state, declared, 1, 1)
    raft.index = 1
    d, sub = service(bridge, raft, tmp_path, trusted)

    d._handle(deploy(1, 10, other.path))
    d._handle(deploy(2, 11, altered))
    assert [(a["code"], a["ok"]) for a in answers(sub)] == [("E_PAYLOAD_UNTRUSTED_KEY", False),
                                                           ("E_PAYLOAD_HASH", False)]  # fmt: skip
    assert "cloud command" in answers(sub)[0]["message"] and ".mpkg" not in answers(sub)[0]["message"]
    assert raft.entries == [] and [e[1] for e in sub.events if e[0] == "ack"] == [1, 2]
    root = tmp_path / "data" / "n1" / "payloads"
    assert [p.name for p in root.iterdir()] == []  # no temporary file, no folder of a refused bundle

    d._handle(deploy(3, 12, good.path))
    ok = answers(sub)[-1]
    assert ok["ok"] and ok["code"] == "OK" and ok["seq"] == 12, ok
    assert (ok["name"], ok["version"], ok["digest"]) == (
        "peak-guard",
        str(good.manifest.version),
        good.digest,
    )
    dep = raft.state.deployments[ok["deployment_id"]]
    assert (dep.by, dep.origin, dep.digest, dep.targets) == ("cloud", "n1", good.digest, ("n1",))
    assert raft.state.cloud_command_seq == 12
    [entry] = raft.entries
    assert (
        len(entry) < good.size and good.path.read_bytes()[-512:] not in entry
    )  # the manifest, not the bundle
    assert (root / good.digest / "bundle.mpkg").read_bytes() == good.path.read_bytes()  # peers fetch it here

    # once its rollout is done, the same version again would go back: refused before proposing
    done = dataclasses.replace(dep, rollout=dataclasses.replace(dep.rollout, outcome="done"))
    raft.state = dataclasses.replace(raft.state, deployments={dep.id: done})
    d._handle(deploy(4, 13, good.path))
    again = answers(sub)[-1]
    assert (again["code"], again["ok"]) == ("E_PAYLOAD_ROLLBACK", False) and "not newer" in again["message"]
    assert len(raft.entries) == 1 and raft.state.cloud_command_seq == 12


def test_a_data_payload_gets_the_api_check_before_its_deploy_is_proposed(
    bridge: Bridge,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A policy payload with a typo'd field is refused with E_PAYLOAD_DATA, the node API's own
    check before a deploy is proposed (`PayloadRoutes.refusal`): the cloud's way is the same."""
    _, trusted = pb.keygen(tmp_path / "release.key")
    folder = tmp_path / "site-policy"
    shutil.copytree(EXAMPLE.parent / "site-policy", folder)
    (folder / "policy.yaml").write_text("import_limt_kw: 40\n")
    typo = pb.build(folder, [tmp_path / "release.key"], tmp_path / "typo.mpkg", time.time())
    raft = Recording()
    d, sub = service(bridge, raft, tmp_path, trusted)
    d._handle(deploy(1, 5, typo.path))
    [answer] = answers(sub)
    assert (answer["code"], answer["ok"]) == ("E_PAYLOAD_DATA", False), answer
    assert "import_limt_kw" in answer["message"] and raft.entries == []
