"""The cluster's Raft secret on disk: create it (0600), read it, refuse it when exposed.

Owns the secret file and the API token derived from it. Must not log or print a secret.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import secrets
import stat
from collections import Counter
from pathlib import Path

from meshems.adapters.atomic_write import write_atomic
from meshems.core.errors import SecretError

SECRET_BYTES = 32
_API_LABEL = b"meshems-api-v1"


def init_secret(path: Path, force: bool = False) -> Path:
    """Create a new random secret at `path` with mode 0600 (its folder 0700)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists() and not force:
        raise SecretError(
            f"{path} already exists; keep it (every node needs the same secret) or pass --force",
            path=str(path),
        )
    write_atomic(path, (secrets.token_hex(SECRET_BYTES) + "\n").encode(), 0o600)
    return path


def read_secret(path: Path, config_path: str = "CONFIG") -> str:
    """Read the secret; refuse a missing, empty or group/world-accessible file."""
    hint = f"create it with: meshems secret init --config {config_path}"
    try:
        st = path.stat()
    except FileNotFoundError:
        raise SecretError(f"no Raft secret at {path}; {hint}", path=str(path)) from None
    if not stat.S_ISREG(st.st_mode):
        raise SecretError(f"{path} is not a regular file", path=str(path))
    if st.st_mode & 0o077:
        raise SecretError(
            f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; the Raft secret must not be "
            f"readable by group or others: chmod 600 {path}",
            path=str(path),
        )
    try:
        value = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise SecretError(f"cannot read {path}: {exc}", path=str(path)) from None
    if len(value) < 32:
        raise SecretError(f"{path} holds a secret shorter than 32 characters; {hint}", path=str(path))
    weak = secret_weakness(value)
    if weak:
        raise SecretError(f"{path} holds a weak secret ({weak}); {hint} --force", path=str(path))
    return value


#: what a secret must carry: 128 bits by its own character statistics
MIN_SECRET_BITS = 128
REPEAT_LEN = 8


def secret_weakness(value: str) -> str:
    """Why a secret is too guessable ('' when it is not): too little entropy by its own
    character statistics (32 times 'a' has none), or a repeated pattern."""
    counts = Counter(value)
    bits = max(0.0, -sum(n * math.log2(n / len(value)) for n in counts.values()))
    if bits < MIN_SECRET_BITS:
        return f"about {bits:.0f} bits of entropy, at least {MIN_SECRET_BITS} needed"
    seen: set[str] = set()
    for i in range(len(value) - REPEAT_LEN + 1):
        part = value[i : i + REPEAT_LEN]
        if part in seen:
            return f"the sequence {part[:2]}... repeats"
        seen.add(part)
    return ""


def api_token(secret: str) -> str:
    """The bearer token for the node API, derived from the cluster secret."""
    return hmac.new(secret.encode(), _API_LABEL, hashlib.sha256).hexdigest()


def token_ok(secret: str, presented: str | None) -> bool:
    return presented is not None and hmac.compare_digest(api_token(secret), presented)
