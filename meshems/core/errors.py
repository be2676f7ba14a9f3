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


class PayloadError(MeshemsError):
    """A logic payload bundle refused (`core.payload_manifest`, `adapters.payload_bundle`);
    each subclass is one stable code, checked in the order the README lists them."""

    code = "E_PAYLOAD"


class PayloadBundleError(PayloadError):
    """The archive itself: not a tar, a link, device, `..` or absolute member, a member the
    manifest does not name or one missing, past a size cap."""

    code = "E_PAYLOAD_BUNDLE"


class PayloadManifestError(PayloadError):
    """The manifest is malformed: the message names the key."""

    code = "E_PAYLOAD_MANIFEST"


class PayloadSignatureError(PayloadError):
    """A signature does not match the manifest, or too few trusted keys signed it."""

    code = "E_PAYLOAD_SIGNATURE"


class PayloadUntrustedKeyError(PayloadError):
    """Signed, but not by (enough of) the trusted keys."""

    code = "E_PAYLOAD_UNTRUSTED_KEY"


class PayloadHashError(PayloadError):
    """A file's size or SHA-256 differs from the manifest's: names the file and both digests."""

    code = "E_PAYLOAD_HASH"


class PayloadExpiredError(PayloadError):
    """The manifest's `expires_at` has passed."""

    code = "E_PAYLOAD_EXPIRED"


class PayloadIncompatibleError(PayloadError):
    """The manifest needs a newer meshems (`min_meshems_version`)."""

    code = "E_PAYLOAD_INCOMPATIBLE"


class PayloadRollbackError(PayloadError):
    """The version is not newer than the active one (and no explicit rollback to one installed
    before)."""

    code = "E_PAYLOAD_ROLLBACK"


class PayloadSandboxError(PayloadError):
    """A controller payload's worker would not start (no decide(), a limit it cannot start
    under, no such user), or a cycle's input is larger than the protocol carries."""

    code = "E_PAYLOAD_SANDBOX"


class PayloadTimeoutError(PayloadError):
    """A controller payload did not answer a cycle within its cycle budget: its worker was killed."""

    code = "E_PAYLOAD_TIMEOUT"


class PayloadCrashError(PayloadError):
    """A controller payload's worker died during a cycle or broke the protocol."""

    code = "E_PAYLOAD_CRASH"


class PayloadCpuError(PayloadError):
    """A controller payload's worker used more of a CPU than the manifest's `cpu_pct` allows,
    measured over a window of cycles: its worker was killed."""

    code = "E_PAYLOAD_CPU"


class PayloadFailedError(PayloadError):
    """A controller payload's decide() raised, ran out of memory or returned no decisions."""

    code = "E_PAYLOAD_ERROR"


class PayloadDataError(PayloadError):
    """A data payload's file (a policy, forecast model or device profile) is not valid for its
    kind: the message names the file and the key."""

    code = "E_PAYLOAD_DATA"


class CloudCommandError(MeshemsError):
    """A signed command from the cloud (`core.downlink`) refused by the zone's leader; each
    subclass is one stable code, answered on `PREFIX/ZONE/results` and never applied."""

    code = "E_CMD_CLOUD"


class CommandSignatureError(CloudCommandError):
    """The command's Ed25519 signature does not match its bytes, or its key is not one of the
    zone's `cloud.command_keys`."""

    code = "E_CMD_SIGNATURE"


class CommandExpiredError(CloudCommandError):
    """The command's expiry (`expires_at_s`) passed before the zone's leader got it."""

    code = "E_CMD_EXPIRED"


class CommandReplayError(CloudCommandError):
    """The command's sequence is not above the last one the zone applied (replicated, so it
    holds across a leader change)."""

    code = "E_CMD_REPLAY"


class CommandZoneError(CloudCommandError):
    """The command was signed for another zone."""

    code = "E_CMD_ZONE"
