"""Scoped API tokens in the replicated state: created with a digest, role and expiry, one
live token per name, revoked zone-wide by name or id, kept through a snapshot."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from meshems.core import commands
from meshems.core.cluster import ZoneState, apply
from meshems.core.snapshot import restore, snapshot

DIGEST = hashlib.sha256(b"secret").hexdigest()


def run(state: ZoneState, type_: str, index: int, **fields: object) -> tuple[ZoneState, Any]:
    return apply(state, commands.encode(type_, f"r{index}", **fields), 1, index)


def create(
    state: ZoneState, index: int, name: str = "prometheus", token_id: str = "0a1b2c3d", role: str = "read"
):
    return run(state, "token_create", index, token_id=token_id, name=name, role=role, digest=DIGEST,
               expires_s=2e9, by="alice")  # fmt: skip


def test_a_token_is_created_once_per_name_and_revoked_by_name_or_id() -> None:
    state, res = create(ZoneState(), 1)
    assert (
        res.ok and state.tokens["0a1b2c3d"].role == "read" and state.tokens["0a1b2c3d"].created_by == "alice"
    )
    same, res = create(state, 2, token_id="ffff0000")
    assert res.code == "E_TOKEN_EXISTS" and same.tokens == state.tokens
    state, res = run(state, "token_revoke", 3, name="prometheus")
    assert res.ok and state.tokens["0a1b2c3d"].revoked
    _, res = run(state, "token_revoke", 4, name="prometheus")
    assert res.code == "E_UNKNOWN_TOKEN"
    state, res = create(state, 5, token_id="0a1b2c3d")  # a revoked id is never reused
    assert res.code == "E_TOKEN_EXISTS"
    state, res = create(state, 6, token_id="12345678", role="admin")
    assert res.ok
    state, res = run(state, "token_revoke", 7, name="12345678")
    assert res.ok and restore(snapshot(state)).tokens == state.tokens


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"role": "root"}, "role must be one of read, operate, admin"),
        ({"digest": "abc"}, "digest 64"),
        ({"token_id": "XYZ"}, "8-32 hex digits"),
        ({"expires_s": -1}, "after the epoch"),
    ],
)
def test_malformed_tokens_are_refused_on_every_replica(fields: dict[str, object], text: str) -> None:
    body = {
        "token_id": "0a1b2c3d",
        "name": "p",
        "role": "read",
        "digest": DIGEST,
        "expires_s": 2e9,
        "by": "a",
    }
    state, res = run(ZoneState(), "token_create", 1, **{**body, **fields})
    assert res.code == "E_CMD_MALFORMED" and text in res.message and state.tokens == {}
