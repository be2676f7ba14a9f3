"""The Raft secret on disk: weak secrets are refused (an attack probe had 32 identical
characters accepted), generated ones always pass."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from meshems.adapters.secret import init_secret, read_secret, secret_weakness
from meshems.core.errors import SecretError


@pytest.mark.parametrize(
    ("value", "why"),
    [("a" * 32, "bits of entropy"), ("ab" * 32, "bits of entropy"), ("0123456789abcdef" * 2, "repeats"),
     ("passwordpassword" * 3, "repeats"), ("correct horse battery staple 1234", "bits of entropy")],
)  # fmt: skip
def test_weak_secrets_are_refused_with_the_reason(tmp_path: Path, value: str, why: str) -> None:
    assert why in secret_weakness(value)
    path = tmp_path / "raft.secret"
    path.write_text(value + "\n")
    path.chmod(0o600)
    with pytest.raises(SecretError, match="weak secret") as err:
        read_secret(path, "c.yaml")
    assert "meshems secret init --config c.yaml --force" in err.value.message


def test_generated_secrets_always_pass(tmp_path: Path) -> None:
    assert all(secret_weakness(secrets.token_hex(32)) == "" for _ in range(2000))
    path = init_secret(tmp_path / "s" / "raft.secret")
    assert len(read_secret(path)) == 64
