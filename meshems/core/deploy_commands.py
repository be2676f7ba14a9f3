"""Validation of the payload deployment commands: `deploy` (an operator's signed manifest, its
targets and strategy), `deploy_status` (a node's word about its own copy) and `deploy_abort`.

Every replica checks the same things the same way: the manifest's schema and canonical form,
its digest, the signatures' shape. Trust (which keys signed) needs each node's own config, so
it is checked before proposing and on each target, never here. Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from meshems.core.command_fields import Invalid, policy_values, text
from meshems.core.errors import PayloadError
from meshems.core.ids import NAME_RE
from meshems.core.payload_checks import parse_signatures
from meshems.core.payload_manifest import CYCLE_BOUNDS, MAX_TOTAL_BYTES, from_canonical, manifest_digest

#: a deploy command carries its manifest through Raft: it must fit one entry (60 KiB) with its
#: signatures and fields; a bundle of a few hundred files of long names does not
MAX_DEPLOY_MANIFEST_BYTES = 48 * 1024
MAX_DEPLOY_SIG_BYTES = 4 * 1024
#: a whole bundle (`adapters.payload_bundle.MAX_BUNDLE_BYTES`)
MAX_BUNDLE_BYTES = MAX_TOTAL_BYTES + 4 * 1024 * 1024
MAX_TARGETS = 64
STRATEGIES = ("rolling", "all-at-once")
#: what a node reports about its copy; the last two are final
NODE_STATUSES = ("stored", "verified", "failed")
_DIGEST = re.compile(r"^[0-9a-f]{64}$")
_CODE = re.compile(r"^E_[A-Z0-9_]{1,40}$")


def deployment_id(raw: Mapping[str, Any]) -> str:
    value = text(raw, "deployment_id")
    if not NAME_RE.fullmatch(value):
        raise Invalid("E_CMD_MALFORMED", f"deployment_id {value!r}: 1-63 lower case letters, digits, . _ -")
    return value


def cycles_override(cmd: Mapping[str, Any], key: str, kind: str) -> int | None:
    """An operator's count of shadow or watch cycles for this deployment (None: the manifest's
    health criteria), within the manifest's own bounds, for a controller only."""
    value = cmd.get(key)
    if value is None:
        return None
    lo, hi = CYCLE_BOUNDS[key]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise Invalid("E_CMD_MALFORMED", f"field {key!r} must be a whole number of cycles, {lo}..{hi}")
    if kind != "controller":
        raise Invalid("E_CMD_MALFORMED", f"field {key!r}: a {kind} payload has no rollout to count cycles of")
    return value


def deploy(cmd: Mapping[str, Any]) -> dict[str, Any]:
    manifest, sigs = cmd.get("manifest"), cmd.get("signatures")
    if not isinstance(manifest, bytes) or not manifest or len(manifest) > MAX_DEPLOY_MANIFEST_BYTES:
        msg = f"field 'manifest' must be the canonical manifest.json bytes (<= {MAX_DEPLOY_MANIFEST_BYTES})"
        raise Invalid("E_CMD_MALFORMED", msg)
    if not isinstance(sigs, bytes) or not sigs or len(sigs) > MAX_DEPLOY_SIG_BYTES:
        raise Invalid(
            "E_CMD_MALFORMED", f"field 'signatures' must be manifest.sig (<= {MAX_DEPLOY_SIG_BYTES})"
        )
    try:
        parsed = from_canonical(manifest)
        signed_by = parse_signatures(sigs)
    except PayloadError as exc:
        raise Invalid(exc.code, exc.message) from None
    if not signed_by:
        raise Invalid("E_PAYLOAD_SIGNATURE", "manifest.sig holds no signature")
    digest = text(cmd, "digest", 64)
    if not _DIGEST.match(digest) or digest != manifest_digest(manifest):
        raise Invalid("E_PAYLOAD_HASH", f"digest {digest[:16]}... is not the SHA-256 of the manifest")
    size = cmd.get("size")
    if isinstance(size, bool) or not isinstance(size, int) or not 0 < size <= MAX_BUNDLE_BYTES:
        raise Invalid("E_CMD_MALFORMED", f"field 'size' must be the bundle's bytes, 1..{MAX_BUNDLE_BYTES}")
    targets = cmd.get("targets")
    if not isinstance(targets, list) or len(targets) > MAX_TARGETS:
        raise Invalid("E_CMD_MALFORMED", f"field 'targets' must be a list of at most {MAX_TARGETS} node ids")
    nodes = [text({"t": t}, "t") for t in targets]
    if len(set(nodes)) != len(nodes):
        raise Invalid("E_CMD_MALFORMED", "field 'targets' names a node twice")
    strategy = text(cmd, "strategy", 16)
    if strategy not in STRATEGIES:
        raise Invalid("E_CMD_MALFORMED", f"strategy {strategy!r} is none of {', '.join(STRATEGIES)}")
    return {
        "deployment_id": deployment_id(cmd), "manifest": bytes(manifest), "signatures": bytes(sigs),
        "digest": digest, "size": size, "targets": sorted(nodes), "strategy": strategy,
        "name": parsed.name, "version": str(parsed.version), "by": text(cmd, "by", 80),
        "origin": text(cmd, "origin"), "kind": parsed.kind, "deadline_s": parsed.deadline_s,
        "shadow_cycles": cycles_override(cmd, "shadow_cycles", parsed.kind),
        "watch_cycles": cycles_override(cmd, "watch_cycles", parsed.kind),
    }  # fmt: skip


def deploy_status(cmd: Mapping[str, Any]) -> dict[str, Any]:
    status = text(cmd, "status", 16)
    if status not in NODE_STATUSES:
        raise Invalid("E_CMD_MALFORMED", f"status {status!r} is none of {', '.join(NODE_STATUSES)}")
    code, message = cmd.get("code", "OK"), cmd.get("message", "")
    if status == "failed" and (not isinstance(code, str) or not _CODE.match(code)):
        raise Invalid("E_CMD_MALFORMED", "a failed status needs a code E_... (e.g. E_PAYLOAD_HASH)")
    if not isinstance(message, str) or len(message) > 500:
        raise Invalid("E_CMD_MALFORMED", "field 'message' must be text of at most 500 characters")
    return {"deployment_id": deployment_id(cmd), "node_id": text(cmd, "node_id"), "status": status,
            "code": code if status == "failed" else "OK", "message": message}  # fmt: skip


def deploy_apply(cmd: Mapping[str, Any]) -> dict[str, Any]:
    """A policy payload's file made the zone's policy (`core.data_handlers`): the same checks
    as `set_policy`."""
    return {"deployment_id": deployment_id(cmd), "values": policy_values(cmd)}


def deploy_abort(cmd: Mapping[str, Any]) -> dict[str, Any]:
    return {"deployment_id": deployment_id(cmd), "by": text(cmd, "by", 80)}


DEPLOY_FIELDS = frozenset({"deployment_id", "manifest", "signatures", "digest", "size", "targets",
                           "strategy", "by", "origin", "shadow_cycles", "watch_cycles"})  # fmt: skip
STATUS_FIELDS = frozenset({"deployment_id", "node_id", "status", "code", "message"})
ABORT_FIELDS = frozenset({"deployment_id", "by"})
APPLY_FIELDS = frozenset({"deployment_id", "values"})
