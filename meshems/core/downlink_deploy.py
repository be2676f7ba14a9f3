"""The `deploy` action of a signed cloud command (`core.downlink`): the record carries a built
payload bundle (raw bytes, at most MAX_CLOUD_BUNDLE_BYTES) and how to roll it out; the zone's
leader stores and verifies the bundle like `meshems deploy`'s upload, and proposes the
`cloud_command` with the deploy fields (`core.deploy_commands`: manifest, never the bundle).

Pure: no I/O. The cloud key authorises the command; the release keys (`payloads.trusted_keys`)
still authorise the code, on the leader before proposing and on every target.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from meshems.core import deploy_commands
from meshems.core.command_fields import Invalid, text
from meshems.core.payload_manifest import CYCLE_BOUNDS

#: the largest bundle a cloud command carries (MQTT is not a file transfer: a larger bundle
#: goes through `meshems deploy` on site, which takes up to MAX_BUNDLE_BYTES)
MAX_CLOUD_BUNDLE_BYTES = 4 * 1024 * 1024
#: a deploy command's envelope: the bundle plus the record's other fields and the signature
MAX_DEPLOY_ENVELOPE_BYTES = MAX_CLOUD_BUNDLE_BYTES + 32 * 1024
#: the MQTT v5 Maximum Packet Size the zone's command session announces (the envelope plus the
#: topic and properties): the broker never hands the leader more, and must let this much through
MAX_COMMAND_PACKET_BYTES = MAX_DEPLOY_ENVELOPE_BYTES + 16 * 1024
RECORD_KEYS = frozenset({"bundle", "strategy", "targets", "shadow_cycles", "watch_cycles"})


def too_large(name: str, size: int) -> str:
    """The refusal's message for a bundle of `size` bytes (`name`: its file)."""
    mib = MAX_CLOUD_BUNDLE_BYTES / 2**20
    return (f"{name}: {size} bytes ({size / 2**20:.1f} MiB), more than a cloud deploy carries "
            f"({MAX_CLOUD_BUNDLE_BYTES} bytes, {mib:g} MiB); deploy it on site: meshems deploy")  # fmt: skip


def record_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """The checked args of a `deploy` record: {bundle: bytes, strategy, targets: [node ids],
    shadow_cycles?, watch_cycles?} (whether cycles suit the payload's kind is known once the
    bundle is read: `check_cycles`)."""
    extra = set(args) - RECORD_KEYS
    if extra or "bundle" not in args:
        raise Invalid(
            "E_CMD_MALFORMED", f"deploy needs args {{bundle, strategy, targets}}; not {sorted(extra)}"
        )
    bundle = args["bundle"]
    if not isinstance(bundle, bytes) or not bundle:
        raise Invalid("E_CMD_MALFORMED", "field 'bundle' must be the bytes of a built bundle (.mpkg)")
    if len(bundle) > MAX_CLOUD_BUNDLE_BYTES:
        raise Invalid("E_CMD_TOO_LARGE", too_large("the bundle", len(bundle)))
    strategy = text(args, "strategy", 16)
    if strategy not in deploy_commands.STRATEGIES:
        raise Invalid(
            "E_CMD_MALFORMED", f"strategy {strategy!r} is none of {', '.join(deploy_commands.STRATEGIES)}"
        )
    targets = args.get("targets")
    if not isinstance(targets, list) or len(targets) > deploy_commands.MAX_TARGETS:
        raise Invalid("E_CMD_MALFORMED", f"field 'targets' must be a list of at most "
                      f"{deploy_commands.MAX_TARGETS} node ids")  # fmt: skip
    nodes = [text({"t": t}, "t") for t in targets]
    if len(set(nodes)) != len(nodes):
        raise Invalid("E_CMD_MALFORMED", "field 'targets' names a node twice")
    out: dict[str, Any] = {"bundle": bytes(bundle), "strategy": strategy, "targets": sorted(nodes)}
    for key, (lo, hi) in CYCLE_BOUNDS.items():
        value = args.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
            raise Invalid("E_CMD_MALFORMED", f"field {key!r} must be a whole number of cycles, {lo}..{hi}")
        out[key] = value
    return out


def check_cycles(args: Mapping[str, Any], kind: str) -> None:
    """Shadow or watch cycles only for a controller (the others have no rollout)."""
    given = sorted(k for k in CYCLE_BOUNDS if args.get(k) is not None)
    if given and kind != "controller":
        raise Invalid(
            "E_CMD_MALFORMED", f"{', '.join(given)}: a {kind} payload has no rollout to count cycles of"
        )


def deployment_id(name: str, version: str, command_id: str) -> str:
    """The deployment's id, the same for every leader that handles the command (a redelivery
    after a leader change proposes the same entry): NAME-VERSION-<command id's first 6>."""
    return f"{f'{name[:40]}-{version}'[:56]}-{command_id[:6]}"


def raft_args(record_id: str, args: Mapping[str, Any], manifest: bytes, signatures: bytes, digest: str,
              origin: str, name: str, version: str) -> dict[str, Any]:  # fmt: skip
    """The deploy fields the leader proposes for a verified record's bundle, stored on `origin`
    (the peers fetch it from there), by "cloud"."""
    cycles = {k: args[k] for k in CYCLE_BOUNDS if args.get(k) is not None}
    return {"deployment_id": deployment_id(name, version, record_id), "manifest": manifest,
            "signatures": signatures, "digest": digest, "size": len(args["bundle"]),
            "targets": list(args["targets"]), "strategy": args["strategy"], "by": "cloud",
            "origin": origin, **cycles}  # fmt: skip


def replicated_args(args: Mapping[str, Any]) -> dict[str, Any]:
    """Validation of the deploy fields inside a replicated `cloud_command` (every replica)."""
    extra = set(args) - deploy_commands.DEPLOY_FIELDS
    if extra:
        raise Invalid("E_CMD_MALFORMED", f"unknown deploy fields {sorted(map(str, extra))}")
    return deploy_commands.deploy(args)
