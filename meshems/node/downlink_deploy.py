"""The zone leader's half of a cloud `deploy` (`core.downlink_deploy`): the signed command's
bundle goes the way of `meshems deploy`: stored as an upload to `PUT /v1/payloads` is (this
node's `payloads.trusted_keys` and threshold, expiry, meshems version, every file's SHA-256),
then the deploy it makes passes the API's check before a proposal (`PayloadRoutes.refusal`),
and becomes the deploy fields of the `cloud_command` the leader proposes.

Owns a temporary file in the store's folder while the bundle is verified; the peers fetch
the stored bundle from this node as they do after `meshems deploy`.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from meshems.adapters.payload_bundle import MANIFEST_NAME
from meshems.adapters.payload_store import Installed, PayloadStore
from meshems.core import commands, downlink_deploy
from meshems.core.cluster import ZoneState
from meshems.core.command_fields import Invalid
from meshems.core.config import ClusterConfig
from meshems.core.downlink import CommandRecord
from meshems.core.errors import PayloadError
from meshems.core.payload_checks import SIG_NAME
from meshems.core.payload_manifest import newer
from meshems.core.rollout import active_deployment
from meshems.node.payload_routes import node_checks

#: why the node API would not propose a deploy (`PayloadRoutes.refusal`), None when it would
Refusal = Callable[[commands.Command], "tuple[int, dict[str, Any]] | None"]


def _store(cfg: ClusterConfig, store: PayloadStore, record: CommandRecord) -> Installed:
    store.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd, name = tempfile.mkstemp(prefix=f".cloud-{record.command_id[:12]}-", suffix=".mpkg", dir=store.root)
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(record.args["bundle"])
        try:
            return store.install(tmp, node_checks(cfg))
        except PayloadError as exc:  # its message names the temporary file: name the command
            raise Invalid(
                exc.code, exc.message.replace(str(tmp), f"cloud command {record.command_id}")
            ) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def prepare(cfg: ClusterConfig, node_id: str, store: PayloadStore, record: CommandRecord, state: ZoneState,
            refusal: Refusal) -> tuple[dict[str, Any], dict[str, str]]:  # fmt: skip
    """The deploy fields to propose for `record`'s bundle, once it is stored here, and what the
    answer names (deployment_id, name, version, digest); raises
    Invalid with the refusal's code (E_PAYLOAD_SIGNATURE, E_PAYLOAD_UNTRUSTED_KEY,
    E_PAYLOAD_HASH, E_PAYLOAD_EXPIRED, E_PAYLOAD_ROLLBACK, E_CMD_MALFORMED, ...)."""
    args = record.args
    try:
        stored = _store(cfg, store, record)
    except OSError as exc:  # the bundle could not be written here: the next leader may
        code = "E_DISK_FULL" if exc.errno == errno.ENOSPC else "E_PAYLOAD_STORE"
        raise Invalid(code, f"{node_id} could not store the bundle of {record.command_id}: {exc}") from None
    m = stored.manifest
    downlink_deploy.check_cycles(args, m.kind)
    active = active_deployment(state, m.name) if m.kind == "controller" else None
    if active is not None and not newer(m.version, active.version):
        why = f"{m.name} {m.version} is not newer than the active {active.version} ({active.id})"
        raise Invalid("E_PAYLOAD_ROLLBACK", f"{why}; to go back: meshems deploy rollback --to {m.version}")
    canonical = (stored.path / MANIFEST_NAME).read_bytes()
    signatures = (stored.path / SIG_NAME).read_bytes()
    fields = downlink_deploy.raft_args(record.command_id, args, canonical, signatures, stored.digest, node_id,
                                       m.name, str(m.version))  # fmt: skip
    cmd = commands.decode(commands.encode("deploy", record.command_id, **fields))
    if isinstance(cmd, commands.Rejection):
        raise Invalid(cmd.code, cmd.message)
    refused = refusal(cmd)  # the check `meshems deploy`'s proposal passes: the node API's own
    if refused is not None:
        raise Invalid(str(refused[1].get("code")), str(refused[1].get("message")))
    named = {"deployment_id": fields["deployment_id"], "name": m.name, "version": str(m.version),
             "digest": stored.digest}  # fmt: skip
    return fields, named
