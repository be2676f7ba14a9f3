"""A cloud `deploy` command (`core.downlink_deploy`): its record carries the bundle and is
checked for size and form; the replicated `cloud_command` carries the deploy fields only (never
the bundle) and records a deployment by "cloud" through `cluster.apply`, once per sequence."""

from __future__ import annotations

import dataclasses
import hashlib
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshems.adapters.command_signing import public_hex, sign, valid
from meshems.core import commands, downlink, downlink_deploy
from meshems.core.cluster import ZoneState, apply
from meshems.core.downlink import CommandRecord, Refusal
from meshems.core.ids import NAME_RE
from meshems.core.payload_checks import signatures_doc
from meshems.core.payload_manifest import canonical_bytes, manifest_digest, parse_manifest

KEY = Ed25519PrivateKey.generate()
NOW = 1_800_000_000
MANIFEST = canonical_bytes(parse_manifest({
    "name": "peak-guard", "version": "1.2.0", "kind": "controller", "entry_point": "controller.py",
    "expires_at": "2030-01-01T00:00:00Z",
    "files": [{"path": "controller.py", "sha256": hashlib.sha256(b"x").hexdigest(), "size": 1}],
}))  # fmt: skip
SIGS = signatures_doc({"ab" * 32: b"s" * 64})


def record(seq: int = 1, **args: object) -> CommandRecord:
    a = {"bundle": b"tar" * 100, "strategy": "rolling", "targets": ["n2", "n1"], **args}
    return CommandRecord(f"{seq:016x}abcd", "zone-a", seq, NOW - 5, NOW + 600, "deploy", a)


def check(data: bytes) -> CommandRecord | Refusal:
    return downlink.verify(data, (public_hex(KEY),), "zone-a", NOW, 0, valid)


def test_a_signed_deploy_verifies_with_its_bundle_and_sorted_targets() -> None:
    got = check(sign(record(shadow_cycles=30), KEY))
    assert isinstance(got, CommandRecord), got
    assert got.args == {
        "bundle": b"tar" * 100,
        "strategy": "rolling",
        "targets": ["n1", "n2"],
        "shadow_cycles": 30,
    }


def test_a_bundle_up_to_the_cap_passes_and_one_byte_more_is_too_large() -> None:
    cap = downlink_deploy.MAX_CLOUD_BUNDLE_BYTES
    assert cap == 4 * 1024 * 1024
    at_cap = sign(record(bundle=b"x" * cap), KEY)
    assert len(at_cap) <= downlink.MAX_DEPLOY_ENVELOPE_BYTES
    assert (
        downlink_deploy.MAX_COMMAND_PACKET_BYTES > downlink.MAX_DEPLOY_ENVELOPE_BYTES
    )  # the session takes it
    assert isinstance(check(at_cap), CommandRecord)
    over = check(sign(record(bundle=b"x" * (cap + 1)), KEY))
    assert isinstance(over, Refusal) and over.code == "E_CMD_TOO_LARGE" and str(cap + 1) in over.message
    huge = check(b"\x00" * (downlink.MAX_DEPLOY_ENVELOPE_BYTES + 1))  # refused before it is parsed
    assert isinstance(huge, Refusal) and huge.code == "E_CMD_TOO_LARGE"


def test_only_a_deploy_may_pass_the_envelope_cap_of_other_commands() -> None:
    padded = {"values": {"import_limit_kw": 40.0}, "pad": "x" * downlink.MAX_ENVELOPE_BYTES}
    rec = CommandRecord("00" * 8, "zone-a", 1, NOW - 5, NOW + 600, "set_policy", padded)
    got = check(sign(rec, KEY))
    assert isinstance(got, Refusal) and got.code == "E_CMD_TOO_LARGE" and "set_policy" in got.message


def test_the_too_large_message_names_the_file_and_its_size() -> None:
    msg = downlink_deploy.too_large("big.mpkg", 5 * 2**20)
    assert "big.mpkg" in msg and "5242880 bytes (5.0 MiB)" in msg and "4194304" in msg


@pytest.mark.parametrize(
    "args",
    [
        {"bundle": b""},
        {"bundle": "not bytes"},
        {"strategy": "sometimes"},
        {"targets": ["n1", "n1"]},
        {"targets": "n1"},
        {"shadow_cycles": 0},
        {"watch_cycles": True},
        {"path": "/etc/passwd"},
    ],
)
def test_a_malformed_deploy_is_refused(args: dict[str, object]) -> None:
    got = check(sign(record(**args), KEY))
    assert isinstance(got, Refusal) and got.code == "E_CMD_MALFORMED", got


def test_the_deployment_id_is_the_same_for_every_leader_and_a_valid_name() -> None:
    a = downlink_deploy.deployment_id("peak-guard", "1.2.0", "3f2a1c9b" * 2)
    assert (
        a
        == "peak-guard-1.2.0-3f2a1c"
        == downlink_deploy.deployment_id("peak-guard", "1.2.0", "3f2a1c" + "0" * 10)
    )
    long = downlink_deploy.deployment_id("p" * 63, "10.20.30-rc.1", "ab" * 8)
    assert NAME_RE.fullmatch(long) and len(long) <= 63


def test_cycles_only_for_a_controller() -> None:
    downlink_deploy.check_cycles({"shadow_cycles": 5}, "controller")
    downlink_deploy.check_cycles({}, "policy")
    with pytest.raises(commands.Invalid) as exc:
        downlink_deploy.check_cycles({"watch_cycles": 5}, "policy")
    assert exc.value.code == "E_CMD_MALFORMED"


def zone() -> ZoneState:
    state = ZoneState()
    for i, n in enumerate(("n1", "n2"), 1):
        data = commands.encode("declare_node", f"d{n}", node_id=n, raft=f"{n}:1", api=f"{n}:2", devices=[])
        state, res = apply(state, data, 1, i)
        assert res.ok
    return state


def proposed(rec: CommandRecord, **over: object) -> bytes:
    digest = manifest_digest(MANIFEST)
    named = ("peak-guard", "1.2.0")
    args = downlink_deploy.raft_args(rec.command_id, rec.args, MANIFEST, SIGS, digest, "n1", *named)
    fields = {**downlink.raft_fields(rec), "args": {**args, **over}}
    return commands.encode("cloud_command", rec.command_id, **fields)


def test_the_replicated_deploy_records_a_deployment_once_and_never_carries_the_bundle() -> None:
    rec = record(seq=7, watch_cycles=12)
    data = proposed(rec)
    assert rec.args["bundle"] not in data
    state, res = apply(zone(), data, 1, 3)
    assert res.ok, res
    dep_id = downlink_deploy.deployment_id("peak-guard", "1.2.0", rec.command_id)
    dep = state.deployments[dep_id]
    assert (dep.by, dep.origin, dep.targets, dep.strategy, dep.watch_cycles) == ("cloud", "n1", ("n1", "n2"),
                                                                                  "rolling", 12)  # fmt: skip
    assert state.cloud_command_seq == 7
    again, res = apply(state, proposed(dataclasses.replace(rec, command_id="ff" * 8)), 1, 4)
    assert not res.ok and res.code == "E_CMD_REPLAY" and again.deployments == state.deployments


def test_a_replicated_deploy_with_the_bundle_in_it_is_refused() -> None:
    rec = record(seq=8)
    state, res = apply(zone(), proposed(rec, bundle=b"tar"), 1, 3)
    assert not res.ok and res.code == "E_CMD_MALFORMED" and state.deployments == {}


def test_the_answer_names_the_deployment() -> None:
    rec = record()
    result = {
        "ok": True,
        "term": 2,
        "index": 9,
        "deployment_id": "pg-1",
        "name": "peak-guard",
        "version": "1.2.0",
    }
    doc = json.loads(downlink.answer("zone-a", "n1", result, rec))
    assert (doc["deployment_id"], doc["version"], doc["code"], doc["seq"]) == ("pg-1", "1.2.0", "OK", 1)
    assert "digest" not in doc
