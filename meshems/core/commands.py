"""Replicated commands: their msgpack wire form and their validation.

A command is a msgpack map with `type`, `v` (schema version) and `rid` (request id,
unique per client request, reused on retry). Every replica validates the same bytes the
same way, so a malformed command is rejected identically everywhere. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import msgpack

from meshems.core import downlink, rollout_commands
from meshems.core.access import ROLES
from meshems.core.command_fields import Invalid, Rejection, policy_values
from meshems.core.command_fields import number as _num
from meshems.core.command_fields import text as _str
from meshems.core.ids import parse_load
from meshems.core.plan_commands import node_forecast, plan

SCHEMA_VERSION = 1
#: below pysyncobj's append_entries batch (64 KiB): an entry that size or larger takes its
#: multi-message "transmission" path, which mis-sizes the last chunk (tracebacks on followers)
MAX_COMMAND_BYTES = 60 * 1024
MAX_RID_LEN = 64
MAX_ID_LEN = 63
DEVICE_KINDS = frozenset({"battery", "pv", "meter", "relay", "load"})


def _device(raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise Invalid("E_CMD_MALFORMED", "each device must be a map")
    dev = {
        "id": _str(raw, "id"),
        "kind": _str(raw, "kind"),
        "min_kw": _num(raw, "min_kw"),
        "max_kw": _num(raw, "max_kw"),
    }
    if dev["kind"] not in DEVICE_KINDS:
        raise Invalid("E_CMD_MALFORMED", f"device kind {dev['kind']!r} is not one of {sorted(DEVICE_KINDS)}")
    if dev["min_kw"] > dev["max_kw"]:
        raise Invalid("E_CMD_MALFORMED", f"device {dev['id']!r}: min_kw above max_kw")
    if set(raw) - {"id", "kind", "min_kw", "max_kw", "shared"}:
        raise Invalid("E_CMD_MALFORMED", f"device {dev['id']!r}: unknown fields")
    if "shared" in raw:
        if not isinstance(raw["shared"], bool):
            raise Invalid("E_CMD_MALFORMED", f"device {dev['id']!r}: shared must be true or false")
        if raw["shared"]:
            dev["shared"] = True  # reachable from several gateways; one owner at a time
    return dev


def _declare_node(cmd: Mapping[str, Any]) -> dict[str, Any]:
    devices = cmd.get("devices")
    if not isinstance(devices, list) or len(devices) > 1000:
        raise Invalid("E_CMD_MALFORMED", "field 'devices' must be a list of at most 1000")
    devs = [_device(d) for d in devices]
    if len({d["id"] for d in devs}) != len(devs):
        raise Invalid("E_CMD_MALFORMED", "device ids must be unique within a node")
    return {
        "node_id": _str(cmd, "node_id"),
        "raft": _str(cmd, "raft", 255),
        "api": _str(cmd, "api", 255),
        "devices": devs,
    }


def _set_setpoint(cmd: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "device_id": _str(cmd, "device_id"),
        "kw": _num(cmd, "kw"),
        "source": _str(cmd, "source"),
    }


def _remove_node(cmd: Mapping[str, Any]) -> dict[str, Any]:
    return {"node_id": _str(cmd, "node_id")}


DEVICE_STATES = frozenset({"unknown", "ok", "stale", "defective"})
#: the largest battery reserve a node's forecast may ask the zone to hold
MAX_RESERVE_KWH = 1e6
MAX_REPORT_VALUES = 32


def _reading(raw: object) -> dict[str, Any]:
    if not isinstance(raw, dict) or set(raw) - {"id", "state", "values"}:
        raise Invalid("E_CMD_MALFORMED", "each reading must be a map of id, state, values")
    state = _str(raw, "state", 16)
    if state not in DEVICE_STATES:
        raise Invalid("E_CMD_MALFORMED", f"reading state {state!r} is not one of {sorted(DEVICE_STATES)}")
    values = raw.get("values")
    if not isinstance(values, dict) or len(values) > MAX_REPORT_VALUES:
        raise Invalid("E_CMD_MALFORMED", f"reading values must be a map of at most {MAX_REPORT_VALUES}")
    clean = {}
    for k in sorted(values, key=str):
        if not isinstance(k, str) or not k or len(k) > 32:
            raise Invalid("E_CMD_MALFORMED", "value names must be strings of 1-32 characters")
        clean[k] = _num(values, k)
    return {"id": _str(raw, "id"), "state": state, "values": clean}


def _report(cmd: Mapping[str, Any]) -> dict[str, Any]:
    seq = cmd.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63:
        raise Invalid("E_CMD_MALFORMED", "field 'seq' must be a non-negative integer")
    devices = cmd.get("devices")
    if not isinstance(devices, list) or len(devices) > 1000:
        raise Invalid("E_CMD_MALFORMED", "field 'devices' must be a list of at most 1000 readings")
    readings = [_reading(d) for d in devices]
    if len({r["id"] for r in readings}) != len(readings):
        raise Invalid("E_CMD_MALFORMED", "a report names each device once")
    out = {"node_id": _str(cmd, "node_id"), "seq": seq, "devices": readings, "reserve_kwh": 0.0}
    if "reserve_kwh" in cmd:
        reserve = _num(cmd, "reserve_kwh")
        if not 0.0 <= reserve <= MAX_RESERVE_KWH:
            raise Invalid(
                "E_CMD_MALFORMED", f"field 'reserve_kwh' must be within [0, {MAX_RESERVE_KWH:g}] kWh"
            )
        out["reserve_kwh"] = reserve
    return out


def _set_policy(cmd: Mapping[str, Any]) -> dict[str, Any]:
    return {"values": policy_values(cmd)}


def _map_list(
    cmd: Mapping[str, Any], key: str, fields: dict[str, type | tuple[type, ...]], limit: int
) -> list:
    rows = cmd.get(key)
    if not isinstance(rows, list) or len(rows) > limit:
        raise Invalid("E_CMD_MALFORMED", f"field {key!r} must be a list of at most {limit}")
    out = []
    for row in rows:
        if not isinstance(row, dict) or set(row) != set(fields):
            raise Invalid("E_CMD_MALFORMED", f"each {key} entry needs exactly {sorted(fields)}")
        for name, kind in fields.items():
            v = row[name]
            if kind is float:
                _num(row, name)
            elif not isinstance(v, kind) or isinstance(v, bool) is not (kind is bool):
                raise Invalid("E_CMD_MALFORMED", f"{key}.{name} has the wrong type")
        out.append({k: (float(row[k]) if fields[k] is float else row[k]) for k in fields})
    return out


def _dispatch(cmd: Mapping[str, Any]) -> dict[str, Any]:
    cycle = cmd.get("cycle")
    if isinstance(cycle, bool) or not isinstance(cycle, int) or cycle < 0:
        raise Invalid("E_CMD_MALFORMED", "field 'cycle' must be a non-negative integer")
    setpoints = _map_list(
        cmd, "setpoints", {"device_id": str, "kw": float, "controller": str, "reason": str}, 2000
    )
    relays = _map_list(
        cmd, "relays",
        {"load": str, "closed": bool, "controller": str, "reason": str, "expected_kw": float}, 2000,
    )  # fmt: skip
    envelopes = _map_list(
        cmd, "envelopes",
        {"node_id": str, "import_limit_kw": float, "export_limit_kw": float, "soc_reserve_pct": float,
         "shed": list}, 1000,
    )  # fmt: skip
    inputs = cmd.get("inputs")
    if not isinstance(inputs, dict) or len(inputs) > 64:
        raise Invalid("E_CMD_MALFORMED", "field 'inputs' must be a map of at most 64 numbers")
    clean_inputs = {str(k): _num(inputs, k) for k in sorted(inputs, key=str)}
    for r in relays:
        dev, _, ch = r["load"].rpartition(":")
        if not dev or not ch.isdigit():
            raise Invalid("E_CMD_MALFORMED", f"load id {r['load']!r} is not RELAY_DEVICE:CHANNEL")
    return {"cycle": cycle, "setpoints": setpoints, "relays": relays, "envelopes": envelopes,
            "inputs": clean_inputs}  # fmt: skip


MAX_MODEL_BYTES = 56 * 1024


def _forecast_model(cmd: Mapping[str, Any]) -> dict[str, Any]:
    version = cmd.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise Invalid("E_CMD_MALFORMED", "field 'version' must be a positive integer")
    digest = _str(cmd, "digest", 64)
    if len(digest) != 64 or any(ch not in "0123456789abcdef" for ch in digest):
        raise Invalid("E_CMD_MALFORMED", "field 'digest' must be a sha256 hex digest")
    data = cmd.get("data")
    if not isinstance(data, bytes) or not data or len(data) > MAX_MODEL_BYTES:
        raise Invalid("E_CMD_MALFORMED", f"field 'data' must be the .npz bytes (<= {MAX_MODEL_BYTES})")
    return {"node_id": _str(cmd, "node_id"), "version": version, "digest": digest, "data": data}


def _transfer_device(cmd: Mapping[str, Any]) -> dict[str, Any]:
    return {"device_id": _str(cmd, "device_id"), "node_id": _str(cmd, "node_id")}


def _relay_override(cmd: Mapping[str, Any]) -> dict[str, Any]:
    """An operator's override of one load: closed (on), open (off), or cleared (`closed` nil);
    `until_s` (epoch seconds) ends it, nil keeps it until cleared."""
    load = _str(cmd, "load", 80)
    if parse_load(load) is None:
        raise Invalid("E_CMD_MALFORMED", f"load {load!r} is not RELAY_DEVICE:CHANNEL (channel 1-256)")
    closed = cmd.get("closed")
    if closed is not None and not isinstance(closed, bool):
        raise Invalid("E_CMD_MALFORMED", "field 'closed' must be true (on), false (off) or nil (clear)")
    until = None if cmd.get("until_s") is None else _num(cmd, "until_s")
    if until is not None and until <= 0:
        raise Invalid("E_CMD_MALFORMED", "field 'until_s' must be a time after the epoch (seconds)")
    return {"load": load, "closed": closed, "until_s": until, "source": _str(cmd, "source")}


_TOKEN_ID = re.compile(r"^[0-9a-f]{8,32}$")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")


def _token_create(cmd: Mapping[str, Any]) -> dict[str, Any]:
    """A scoped API token: id (hex), name, role, SHA-256 digest of its secret, expiry (epoch s)."""
    token_id, digest, role = _str(cmd, "token_id", 32), _str(cmd, "digest", 64), _str(cmd, "role", 16)
    if not _TOKEN_ID.match(token_id) or not _DIGEST.match(digest):
        raise Invalid("E_CMD_MALFORMED", "token_id must be 8-32 hex digits and digest 64 (SHA-256)")
    if role not in ROLES:
        raise Invalid("E_CMD_MALFORMED", f"role must be one of {', '.join(ROLES)}, not {role!r}")
    expires = _num(cmd, "expires_s")
    if expires <= 0:
        raise Invalid("E_CMD_MALFORMED", "field 'expires_s' must be a time after the epoch (seconds)")
    return {"token_id": token_id, "name": _str(cmd, "name", 64), "role": role, "digest": digest,
            "expires_s": expires, "by": _str(cmd, "by", 80)}  # fmt: skip


def _token_revoke(cmd: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": _str(cmd, "name", 64)}


def _barrier(cmd: Mapping[str, Any]) -> dict[str, Any]:
    return {}


def _cloud_ack(cmd: Mapping[str, Any]) -> dict[str, Any]:
    seq = cmd.get("seq")
    if isinstance(seq, bool) or not isinstance(seq, int) or not 0 <= seq < 2**63:
        raise Invalid("E_CMD_MALFORMED", "field 'seq' must be a non-negative integer")
    return {"seq": seq}


#: command type -> (validator returning the normalised fields, allowed field names)
SCHEMAS: dict[str, tuple[Callable[[Mapping[str, Any]], dict[str, Any]], frozenset[str]]] = {
    "declare_node": (_declare_node, frozenset({"node_id", "raft", "api", "devices"})),
    "set_setpoint": (_set_setpoint, frozenset({"device_id", "kw", "source"})),
    "remove_node": (_remove_node, frozenset({"node_id"})),
    "barrier": (_barrier, frozenset()),
    "cloud_ack": (_cloud_ack, frozenset({"seq"})),
    "report": (_report, frozenset({"node_id", "seq", "devices", "reserve_kwh"})),
    "set_policy": (_set_policy, frozenset({"values"})),
    "transfer_device": (_transfer_device, frozenset({"device_id", "node_id"})),
    "relay_override": (_relay_override, frozenset({"load", "closed", "until_s", "source"})),
    "forecast_model": (_forecast_model, frozenset({"node_id", "version", "digest", "data"})),
    "dispatch": (_dispatch, frozenset({"cycle", "setpoints", "relays", "envelopes", "inputs"})),
    "token_create": (_token_create, frozenset({"token_id", "name", "role", "digest", "expires_s", "by"})),
    "token_revoke": (_token_revoke, frozenset({"name"})),
    "cloud_command": (downlink.cloud_command, downlink.RAFT_FIELDS),
    **rollout_commands.schemas(),
    "node_forecast": (node_forecast, frozenset({"node_id", "start_s", "step_s", "kw", "basis"})),
    "plan": (
        plan,
        frozenset(
            {
                "version",
                "start_s",
                "step_s",
                "mode",
                "status",
                "import_kw",
                "batteries",
                "peak_kw",
                "cost",
                "reason",
                "basis",
                "made_s",
            }
        ),
    ),
}
ENVELOPE_FIELDS = frozenset({"type", "v", "rid"})

#: What an operator may send through the node API; everything else is an internal command
#: that only a node's own services propose (reports, dispatches, declarations, cloud
#: acknowledgements, forecast records, ownership). Membership has its own API route.
OPERATOR_TYPES = frozenset({"set_setpoint", "set_policy", "barrier", "relay_override", "token_create",
                            "token_revoke", "deploy", "deploy_abort", "deploy_rollback"})  # fmt: skip
#: the role an operator needs to propose each operator command (`core.access`)
ROLE_OF_TYPE: dict[str, str] = {
    "barrier": "read", "set_setpoint": "operate", "set_policy": "operate", "relay_override": "operate",
    "token_create": "admin", "token_revoke": "admin", "deploy": "admin", "deploy_abort": "admin",
    "deploy_rollback": "admin",
}  # fmt: skip
INTERNAL_TYPES = frozenset(SCHEMAS) - OPERATOR_TYPES

#: The largest encoded command of each type (bytes), checked on the proposing node before
#: Raft and again in `apply`: a refused command costs no log space, and no entry can grow
#: past what its type needs (the largest, a report or declaration of 1000 devices, fits).
MAX_BYTES_BY_TYPE: dict[str, int] = {
    "declare_node": MAX_COMMAND_BYTES,
    "report": MAX_COMMAND_BYTES,
    "dispatch": MAX_COMMAND_BYTES,
    "forecast_model": MAX_COMMAND_BYTES,
    "set_policy": 32 * 1024,
    "set_setpoint": 1024,
    "remove_node": 512,
    "transfer_device": 512,
    "relay_override": 512,
    "barrier": 256,
    "cloud_ack": 256,
    "token_create": 512,
    "token_revoke": 256,
    "cloud_command": MAX_COMMAND_BYTES,  # a cloud deploy carries a deploy's manifest
    "deploy": MAX_COMMAND_BYTES,
    **rollout_commands.MAX_BYTES,
    "node_forecast": 2048,
    "plan": MAX_COMMAND_BYTES,
}


@dataclass(frozen=True, slots=True)
class Command:
    """A validated command: its type, request id and normalised fields."""

    type: str
    rid: str
    fields: Mapping[str, Any]


def encode(type_: str, rid: str, **fields: Any) -> bytes:
    """Build the wire form of a command (validation happens in `decode`)."""
    return msgpack.packb({"type": type_, "v": SCHEMA_VERSION, "rid": rid, **fields})


def peek_rid(data: bytes) -> str | None:
    """The request id of a command if one can be read, else None (for dedup of rejects)."""
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception:
        return None
    rid = raw.get("rid") if isinstance(raw, dict) else None
    return rid if isinstance(rid, str) and 0 < len(rid) <= MAX_RID_LEN else None


def decode(data: bytes) -> Command | Rejection:
    """Decode and validate command bytes; never raises on bad input."""
    if not isinstance(data, bytes | bytearray) or len(data) > MAX_COMMAND_BYTES:
        return Rejection("E_CMD_MALFORMED", f"a command must be bytes of <= {MAX_COMMAND_BYTES}")
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=True)
    except Exception as exc:
        return Rejection("E_CMD_MALFORMED", f"not msgpack: {type(exc).__name__}")
    if not isinstance(raw, dict):
        return Rejection("E_CMD_MALFORMED", "a command must be a msgpack map")
    try:
        type_ = _str(raw, "type", 32)
        rid = _str(raw, "rid", MAX_RID_LEN)
        version = raw.get("v")
        if isinstance(version, bool) or not isinstance(version, int):
            raise Invalid("E_CMD_MALFORMED", "field 'v' (schema version) must be an integer")
        if version != SCHEMA_VERSION:
            raise Invalid(
                "E_CMD_VERSION",
                f"schema version {version} is not supported (want {SCHEMA_VERSION})",
            )
        if type_ not in SCHEMAS:
            raise Invalid("E_CMD_UNKNOWN_TYPE", f"unknown command type {type_!r}")
        if len(data) > MAX_BYTES_BY_TYPE[type_]:
            raise Invalid(
                "E_CMD_TOO_LARGE",
                f"a {type_} command is {len(data)} bytes; at most {MAX_BYTES_BY_TYPE[type_]} are accepted",
            )
        validator, allowed = SCHEMAS[type_]
        extra = set(raw) - allowed - ENVELOPE_FIELDS
        if extra:
            raise Invalid("E_CMD_MALFORMED", f"unknown fields for {type_}: {sorted(map(str, extra))}")
        return Command(type_, rid, validator(raw))
    except Invalid as exc:
        return Rejection(exc.code, exc.message)
