"""The one exception hierarchy of meshems, each class with a stable code.

Codes appear in logs, in API answers and in `meshems status`; never rename one.
Pure: no I/O here.
"""

from __future__ import annotations

#: answers after which the same request may be sent again (with the same request id)
RETRYABLE_CODES = frozenset({"E_QUORUM", "E_LEADER_CHANGED", "E_UNKNOWN_OUTCOME", "E_TIMEOUT", "E_BUSY"})


def key_path(loc: tuple[int | str, ...]) -> str:
    """A validation error location as the key a user writes: `nodes[1].raft_port`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else ("." if out else "") + str(part)
    return out or "(top level)"


class MeshemsError(Exception):
    """Base of every error meshems raises on purpose."""

    code = "E_MESHEMS"
    exit_code = 1

    def __init__(self, message: str, **context: object) -> None:
        super().__init__(message)
        self.message = message
        self.context = context

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


class ConfigError(MeshemsError):
    """The cluster config (or a file it names) is missing or invalid."""

    code = "E_CONFIG"
    exit_code = 2


class SecretError(MeshemsError):
    """The Raft secret is missing, unreadable or too widely readable."""

    code = "E_SECRET"
    exit_code = 2


class AuthError(MeshemsError):
    """A peer or client presented the wrong credentials."""

    code = "E_AUTH_FAIL"


class JournalCorruptError(MeshemsError):
    """The node's Raft journal is truncated or damaged; it must not be replayed."""

    code = "E_JOURNAL_CORRUPT"


class DiskFullError(MeshemsError):
    """The node's data folder has no room left: it stops rather than acknowledge what it
    could not write."""

    code = "E_DISK_FULL"


class TimeoutError_(MeshemsError):
    """A request got no answer in time; its outcome may be unknown."""

    code = "E_TIMEOUT"


class UnreachableError(MeshemsError):
    """No node of the cluster answered."""

    code = "E_UNREACHABLE"


class RootError(MeshemsError):
    """The node was started as root without `--allow-root` (it needs no privilege at all)."""

    code = "E_ROOT"
    exit_code = 2
