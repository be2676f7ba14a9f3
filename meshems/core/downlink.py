"""Signed commands from the cloud to a zone (the downlink): the command record, its canonical
msgpack bytes, the signed envelope on `PREFIX/ZONE/commands`, the leader's `verify`, the Raft
command it proposes (`cloud_command`, the command id as request id) and the answer it
publishes on `PREFIX/ZONE/results`.

Pure: no I/O, clock or cryptography; the Ed25519 check comes in as `valid` (adapters) and
the time as `now_s`. The applied sequence is replicated (`ZoneState.cloud_command_seq`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from meshems.core import downlink_deploy
from meshems.core.command_fields import Invalid, text
from meshems.core.policy import policy_problems

FORMAT = 1
#: the signature covers this prefix and the record's canonical bytes (never other signed data)
SIGNED_PREFIX = b"meshems-cloud-command-v1\n"
#: a command's envelope; a `deploy`, which carries a bundle, may be up to MAX_DEPLOY_ENVELOPE_BYTES
MAX_ENVELOPE_BYTES = 32 * 1024
MAX_DEPLOY_ENVELOPE_BYTES = downlink_deploy.MAX_DEPLOY_ENVELOPE_BYTES
#: the longest a command may stay valid (a queued command older than this is refused)
MAX_LIFETIME_S = 7 * 86400
MAX_SEQ = 2**63 - 1
#: what a cloud command may do, and the zone command each maps to
ACTIONS = ("set_policy", "deploy")
_COMMAND_ID = re.compile(r"^[0-9a-f]{16,32}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_RECORD_KEYS = frozenset({"v", "id", "zone", "seq", "issued_at_s", "expires_at_s", "action", "args"})

#: the Ed25519 check: (public key hex, signature, message) -> valid
Valid = Callable[[str, bytes, bytes], bool]


@dataclass(frozen=True, slots=True)
class CommandRecord:
    """One signed command: `command_id` (the Raft request id, so it applies once), the zone,
    a per-zone increasing `seq`, when it was issued and until when it may be applied (epoch
    seconds), and the action with its arguments (`set_policy` {values: {...}})."""

    command_id: str
    zone: str
    seq: int
    issued_at_s: int
    expires_at_s: int
    action: str
    args: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why the leader will not apply a command: a stable code (E_CMD_SIGNATURE,
    E_CMD_EXPIRED, E_CMD_REPLAY, E_CMD_ZONE, E_CMD_MALFORMED, E_POLICY), a message, and the
    record when it could be read (its id and seq go into the answer)."""

    code: str
    message: str
    record: CommandRecord | None = None


def _policy_args(args: Mapping[str, Any]) -> dict[str, Any]:
    values = args.get("values")
    if set(args) != {"values"} or not isinstance(values, dict) or not values:
        raise Invalid("E_CMD_MALFORMED", "set_policy needs args {values: {FIELD: VALUE, ...}}")
    problems = policy_problems(values)
    if problems:
        raise Invalid("E_POLICY", "; ".join(problems))
    return {"values": values}


Args = Callable[[Mapping[str, Any]], dict[str, Any]]
#: action -> the check of its args in a signed record, and in the replicated `cloud_command`
#: (the same for a policy; a deploy's bundle becomes the deploy fields: `core.downlink_deploy`)
_ARGS: dict[str, Args] = {"set_policy": _policy_args, "deploy": downlink_deploy.record_args}
_RAFT_ARGS: dict[str, Args] = {"set_policy": _policy_args, "deploy": downlink_deploy.replicated_args}


def _int(raw: Mapping[str, Any], key: str, lo: int = 0, hi: int = MAX_SEQ) -> int:
    v = raw.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise Invalid("E_CMD_MALFORMED", f"field {key!r} must be an integer in [{lo}, {hi}]")
    return v


def _record(raw: object) -> CommandRecord:
    if not isinstance(raw, dict) or set(raw) != _RECORD_KEYS or raw.get("v") != FORMAT:
        raise Invalid(
            "E_CMD_MALFORMED", f"a command record is a map of exactly {sorted(_RECORD_KEYS)}, v={FORMAT}"
        )
    command_id = text(raw, "id", 32)
    if not _COMMAND_ID.match(command_id):
        raise Invalid("E_CMD_MALFORMED", "field 'id' must be 16-32 lower-case hex digits")
    action, args = text(raw, "action", 32), raw.get("args")
    if action not in _ARGS:
        raise Invalid("E_CMD_MALFORMED", f"action {action!r} is not one of {', '.join(ACTIONS)}")
    if not isinstance(args, dict):
        raise Invalid("E_CMD_MALFORMED", "field 'args' must be a map")
    issued, expires = _int(raw, "issued_at_s"), _int(raw, "expires_at_s")
    if not issued < expires <= issued + MAX_LIFETIME_S:
        raise Invalid(
            "E_CMD_MALFORMED", f"expires_at_s must be after issued_at_s, by at most {MAX_LIFETIME_S} s"
        )
    return CommandRecord(command_id, text(raw, "zone"), _int(raw, "seq", 1), issued, expires, action,
                         _ARGS[action](args))  # fmt: skip


def _sorted(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _sorted(value[k]) for k in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sorted(v) for v in value]
    return value


def canonical_bytes(record: CommandRecord) -> bytes:
    """The record as msgpack with every map's keys sorted, str as str, bytes as bin, floats as
    float64 and ints in their smallest form (msgpack-python's defaults): the signed bytes. The
    zone verifies the bytes it received, so it never has to re-encode them."""
    doc = {"v": FORMAT, "id": record.command_id, "zone": record.zone, "seq": record.seq,
           "issued_at_s": record.issued_at_s, "expires_at_s": record.expires_at_s,
           "action": record.action, "args": record.args}  # fmt: skip
    return msgpack.packb(_sorted(doc), use_bin_type=True)


def signed_message(canonical: bytes) -> bytes:
    return SIGNED_PREFIX + canonical


def envelope(canonical: bytes, key_hex: str, signature: bytes) -> bytes:
    """What is published on `PREFIX/ZONE/commands`: the record's bytes, the signer's public
    key (64 hex digits) and the Ed25519 signature over `signed_message(canonical)`."""
    return msgpack.packb(
        {"v": FORMAT, "record": canonical, "key": key_hex, "sig": signature}, use_bin_type=True
    )


def _open(data: bytes) -> tuple[bytes, str, bytes]:
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_DEPLOY_ENVELOPE_BYTES:
        raise Invalid("E_CMD_TOO_LARGE", f"a command must be at most {MAX_DEPLOY_ENVELOPE_BYTES} bytes")
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:
        raise Invalid("E_CMD_MALFORMED", f"not msgpack: {type(exc).__name__}") from None
    if not isinstance(raw, dict) or set(raw) != {"v", "record", "key", "sig"} or raw["v"] != FORMAT:
        raise Invalid("E_CMD_MALFORMED", f"a command is a map of v={FORMAT}, record, key, sig")
    record, key, sig = raw["record"], raw["key"], raw["sig"]
    if not isinstance(record, bytes) or not isinstance(key, str) or not _HEX64.match(key):
        raise Invalid("E_CMD_MALFORMED", "record must be bytes and key 64 lower-case hex digits")
    if not isinstance(sig, bytes) or len(sig) != 64:
        raise Invalid("E_CMD_MALFORMED", "sig must be the 64 bytes of an Ed25519 signature")
    return record, key, sig


def read_record(data: bytes) -> CommandRecord | None:
    """The record of an envelope if it can be read, verified or not (to name it in a refusal)."""
    try:
        return _record(msgpack.unpackb(_open(data)[0], raw=False, strict_map_key=True))
    except Exception:
        return None


def verify(
    data: bytes, trusted_keys: Iterable[str], zone: str, now_s: float, last_seq: int, valid: Valid
) -> CommandRecord | Refusal:
    """The record of a command the zone may apply, or why not. Checked in this order: the
    envelope's form, the key is trusted and the signature matches (E_CMD_SIGNATURE), the
    record's size (E_CMD_TOO_LARGE: only a deploy may pass 32 KiB) and form, its zone
    (E_CMD_ZONE), its expiry (E_CMD_EXPIRED), its seq above the last applied one, `last_seq`
    from the replicated state (E_CMD_REPLAY)."""
    try:
        canonical, key, sig = _open(data)
    except Invalid as exc:
        return Refusal(exc.code, exc.message)
    readable = read_record(data)
    if key not in set(trusted_keys):
        return Refusal(
            "E_CMD_SIGNATURE", f"signed by key {key[:16]}, not one of cloud.command_keys", readable
        )
    if not valid(key, sig, signed_message(canonical)):
        return Refusal(
            "E_CMD_SIGNATURE", f"the signature of key {key[:16]} does not match the command", readable
        )
    try:
        raw = msgpack.unpackb(canonical, raw=False, strict_map_key=True)
        action = raw.get("action") if isinstance(raw, dict) else None
        if action != "deploy" and len(data) > MAX_ENVELOPE_BYTES:  # only a deploy carries a bundle
            msg = f"a {action} command must be at most {MAX_ENVELOPE_BYTES} bytes, not {len(data)}"
            raise Invalid("E_CMD_TOO_LARGE", msg)
        record = _record(raw)
    except Invalid as exc:
        return Refusal(exc.code, exc.message, readable)
    except Exception as exc:
        return Refusal("E_CMD_MALFORMED", f"record not msgpack: {type(exc).__name__}")
    if record.zone != zone:
        return Refusal("E_CMD_ZONE", f"command for zone {record.zone!r}, this is zone {zone!r}", record)
    if now_s >= record.expires_at_s:
        late = now_s - record.expires_at_s
        return Refusal("E_CMD_EXPIRED", f"command {record.command_id} expired {late:.0f} s ago", record)
    if record.seq <= last_seq:
        msg = f"command {record.command_id}: seq {record.seq} is not above the last applied {last_seq}"
        return Refusal("E_CMD_REPLAY", msg, record)
    return record


# --- the Raft command -----------------------------------------------------------------------------

RAFT_FIELDS = frozenset({"zone", "seq", "action", "args", "expires_at_s"})


def raft_fields(record: CommandRecord) -> dict[str, Any]:
    """The fields of the `cloud_command` the leader proposes (`commands.encode(..., rid=id)`)."""
    return {"zone": record.zone, "seq": record.seq, "action": record.action, "args": dict(record.args),
            "expires_at_s": record.expires_at_s}  # fmt: skip


def cloud_command(cmd: Mapping[str, Any]) -> dict[str, Any]:
    """Validation of a `cloud_command` on every replica (the rid is the command id)."""
    action, args = text(cmd, "action", 32), cmd.get("args")
    if action not in _RAFT_ARGS or not isinstance(args, dict):
        raise Invalid("E_CMD_MALFORMED", f"action must be one of {', '.join(ACTIONS)} with a map of args")
    return {"zone": text(cmd, "zone"), "seq": _int(cmd, "seq", 1), "action": action,
            "args": _RAFT_ARGS[action](args), "expires_at_s": _int(cmd, "expires_at_s")}  # fmt: skip


# --- the answer --------------------------------------------------------------------------------------


#: what a deploy's answer names besides (the deployment, and its payload's name, version, digest)
ANSWER_EXTRAS = ("deployment_id", "name", "version", "digest")


def answer(zone: str, node_id: str, result: Mapping[str, Any], record: CommandRecord | None) -> bytes:
    """What the leader publishes on `PREFIX/ZONE/results` (JSON): the command's id and seq when
    known, ok, the code (OK or E_...), the message, and the Raft term and index when applied."""
    doc = {"zone": zone, "node": node_id, "command_id": record.command_id if record else None,
           "seq": record.seq if record else None, "ok": bool(result.get("ok")),
           "code": result.get("code") or ("OK" if result.get("ok") else "E_MESHEMS"),
           "message": str(result.get("message", "")), "term": result.get("term"),
           "index": result.get("index"),
           "duplicate": bool(result.get("duplicate", False)),
           **{k: result[k] for k in ANSWER_EXTRAS if result.get(k) is not None}}  # fmt: skip
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def commands_topic(prefix: str, zone: str) -> str:
    return f"{prefix}/{zone}/commands"


def results_topic(prefix: str, zone: str) -> str:
    return f"{prefix}/{zone}/results"
