"""Signed cloud commands (`core.downlink`): each way a command can be wrong is refused with its
code, and through `cluster.apply` a sequence applies at most once (the replicated seq)."""

from __future__ import annotations

import dataclasses

import msgpack
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from meshems.adapters.command_signing import public_hex, sign, valid
from meshems.core import cluster, commands, downlink
from meshems.core.cluster import ZoneState
from meshems.core.downlink import CommandRecord, Refusal

KEY = Ed25519PrivateKey.generate()
OTHER = Ed25519PrivateKey.generate()
TRUSTED = (public_hex(KEY),)
NOW = 1_800_000_000


def record(seq: int = 1, zone: str = "zone-a", **changes: object) -> CommandRecord:
    base = CommandRecord(f"{seq:016x}", zone, seq, NOW - 5, NOW + 600, "set_policy",
                         {"values": {"import_limit_kw": 40.0}})  # fmt: skip
    return dataclasses.replace(base, **changes)


def check(data: bytes, last_seq: int = 0, now: float = NOW, zone: str = "zone-a") -> CommandRecord | Refusal:
    return downlink.verify(data, TRUSTED, zone, now, last_seq, valid)


def test_a_signed_command_verifies_to_its_record() -> None:
    rec = record()
    assert check(sign(rec, KEY)) == rec


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (sign(record(), OTHER), "E_CMD_SIGNATURE"),  # a key the zone does not pin
        (sign(record(zone="zone-b"), KEY), "E_CMD_ZONE"),
        (sign(record(expires_at_s=NOW), KEY), "E_CMD_EXPIRED"),
        (b"\x93not a command", "E_CMD_MALFORMED"),
        (sign(record(action="reboot"), KEY), "E_CMD_MALFORMED"),
        (sign(record(args={"values": {"import_limit_kw": -1}}), KEY), "E_POLICY"),
    ],
)
def test_a_wrong_command_is_refused_with_its_code(data: bytes, code: str) -> None:
    got = check(data)
    assert isinstance(got, Refusal) and got.code == code, got


def test_a_tampered_record_or_signature_fails_the_signature() -> None:
    env = msgpack.unpackb(sign(record(), KEY))
    tampered = env["record"].replace(b"\xcb@D\x00\x00\x00\x00\x00\x00", b"\xcb@Y\x00\x00\x00\x00\x00\x00")
    assert tampered != env["record"]  # 40.0 -> 100.0
    for changed in ({**env, "record": tampered}, {**env, "sig": bytes(64)}):
        got = check(msgpack.packb(changed, use_bin_type=True))
        assert isinstance(got, Refusal) and got.code == "E_CMD_SIGNATURE"
        assert got.record is not None and got.record.command_id == record().command_id
    # the other key's signature under our key's name
    forged = {**env, "sig": msgpack.unpackb(sign(record(), OTHER))["sig"]}
    assert check(msgpack.packb(forged, use_bin_type=True)).code == "E_CMD_SIGNATURE"  # type: ignore[union-attr]


def test_a_seq_not_above_the_last_applied_is_a_replay() -> None:
    data = sign(record(seq=7), KEY)
    assert isinstance(check(data, last_seq=6), CommandRecord)
    for last in (7, 8):
        got = check(data, last_seq=last)
        assert isinstance(got, Refusal) and got.code == "E_CMD_REPLAY" and got.record is not None


def test_expiry_is_checked_against_the_time_passed_in() -> None:
    data = sign(record(), KEY)
    assert isinstance(check(data, now=NOW + 599), CommandRecord)
    assert check(data, now=NOW + 600).code == "E_CMD_EXPIRED"  # type: ignore[union-attr]


def test_the_canonical_bytes_do_not_depend_on_key_order() -> None:
    a = record(args={"values": {"import_limit_kw": 40.0, "export_limit_kw": 10.0}})
    b = record(args={"values": {"export_limit_kw": 10.0, "import_limit_kw": 40.0}})
    assert downlink.canonical_bytes(a) == downlink.canonical_bytes(b)


def _entry(rec: CommandRecord) -> bytes:
    return commands.encode("cloud_command", rec.command_id, **downlink.raft_fields(rec))


def test_apply_runs_the_policy_and_consumes_the_seq() -> None:
    state, res = cluster.apply(ZoneState(), _entry(record(seq=3)), 1, 1)
    assert res.ok and state.policy is not None and state.policy.import_limit_kw == 40.0
    assert state.cloud_command_seq == 3
    # the same command again (a redelivery): the first result, nothing changes
    again, dup = cluster.apply(state, _entry(record(seq=3)), 1, 2)
    assert dup.duplicate and dup.ok and again.cloud_command_seq == 3
    # another command with an old seq (a replay under a new id): refused on every replica
    old = record(seq=2, command_id="ab" * 8, args={"values": {"import_limit_kw": 5.0}})
    after, refused = cluster.apply(again, _entry(old), 1, 3)
    assert refused.code == "E_CMD_REPLAY" and after.policy.import_limit_kw == 40.0  # type: ignore[union-attr]


def test_a_refused_action_still_consumes_its_seq() -> None:
    bad = record(seq=4, args={"values": {"shed_order": ["relay1:1"]}})  # no such relay in the zone
    state, res = cluster.apply(ZoneState(), _entry(bad), 1, 1)
    assert res.code == "E_POLICY" and state.cloud_command_seq == 4 and state.policy is None


def test_the_api_does_not_accept_a_cloud_command() -> None:
    assert "cloud_command" in commands.INTERNAL_TYPES and "cloud_command" not in commands.OPERATOR_TYPES


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 12), st.integers(0, 3)), min_size=1, max_size=40))
def test_a_sequence_is_applied_at_most_once(entries: list[tuple[int, int]]) -> None:
    """Any mix of seqs and ids (repeats, replays, reorders): each seq takes effect at most once,
    and the applied seqs rise."""
    state, applied = ZoneState(), []
    for index, (seq, variant) in enumerate(entries, start=1):
        rec = record(seq=seq, command_id=f"{seq:08x}{variant:08x}",
                     args={"values": {"import_limit_kw": float(seq * 10 + variant)}})  # fmt: skip
        state, res = cluster.apply(state, _entry(rec), 1, index)
        if res.ok and not res.duplicate:
            applied.append(seq)
            assert state.policy is not None and state.policy.import_limit_kw == seq * 10 + variant
    assert applied == sorted(set(applied))
    assert state.cloud_command_seq == (max(applied) if applied else 0)


def _cluster_doc(cloud: dict[str, object]) -> dict[str, object]:
    node = {"id": "n1", "address": "127.0.0.1", "raft_port": 4001, "api_port": 5001}
    return {"cluster": "t", "zone": "z", "raft": {"secret_file": "s"}, "nodes": [node],
            "cloud": {"broker_host": "broker", **cloud}}  # fmt: skip


def test_the_cluster_config_pins_the_cloud_command_keys() -> None:
    from meshems.core.config import parse_config
    from meshems.core.errors import ConfigError

    k1, k2 = public_hex(KEY), public_hex(OTHER)
    got = parse_config(_cluster_doc({"command_keys": [k1.upper(), k2]}), "c.yaml").cloud
    assert got is not None and got.command_keys == (k1, k2)
    assert parse_config(_cluster_doc({}), "c.yaml").cloud.command_keys == ()  # type: ignore[union-attr]
    for keys, key, words in [
        (["zz"], "cloud.command_keys[0]", "64 hex digits"),
        ([k1, k1], "cloud.command_keys[1]", "the same key as command_keys[0]"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_config(_cluster_doc({"command_keys": keys}), "c.yaml")
        assert info.value.context["key"] == key and f"c.yaml: {key}: " in info.value.message, (
            info.value.message
        )
        assert words in info.value.message
