"""The node's part of the data kinds of logic payloads. Before a target says its copy is
verified, the files are checked for their kind with the loaders the node itself uses (a
policy by the rules of `policy set`, a forecast model by the .npz loader, device profiles by
the profile loader); a refusal is E_PAYLOAD_DATA naming the file and the key. Once a policy
deployment is done, the leader proposes `deploy_apply` (`core.data_handlers`) with the file's
fields; the forecast models and device profiles a node holds are `node.payload_stage`'s.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from meshems.adapters.config_file import parse_yaml
from meshems.adapters.forecast_store import load as load_model
from meshems.adapters.payload_store import PayloadStore
from meshems.adapters.profiles import load_profile
from meshems.core import commands
from meshems.core.cluster import ZoneState
from meshems.core.data_handlers import policy_due, policy_values
from meshems.core.deploy_records import Deployment
from meshems.core.errors import MeshemsError, PayloadDataError
from meshems.core.node_events import RaftChanged
from meshems.core.payload_manifest import Manifest
from meshems.logs import log

EVERY_S = 1.0
PROFILE_SUFFIXES = (".yaml", ".yml")


def entry_file(manifest: Manifest) -> str:
    """The file a policy or forecast-model payload holds: its entry point, or its only file."""
    if manifest.entry_point:
        return manifest.entry_point
    if len(manifest.files) == 1:
        return manifest.files[0].path
    names = ", ".join(f.path for f in manifest.files[:5])
    raise PayloadDataError(f"entry_point: a {manifest.kind} payload of {len(manifest.files)} files "
                           f"({names}) names the one to apply", key="entry_point")  # fmt: skip


def read_policy(folder: Path, manifest: Manifest, state: ZoneState | None = None) -> dict[str, Any]:
    """The checked policy fields of a stored policy payload (`core.data_handlers.policy_values`)."""
    rel = entry_file(manifest)
    source = f"files/{rel}"
    try:
        doc = parse_yaml((folder / "files" / rel).read_text(encoding="utf-8"), source)
    except (OSError, UnicodeDecodeError) as exc:
        raise PayloadDataError(f"{source}: cannot read the policy: {exc}", file=rel) from None
    except MeshemsError as exc:
        raise PayloadDataError(exc.message, file=rel) from None
    return policy_values(doc, rel, state)


def check_data(folder: Path, manifest: Manifest, state: ZoneState | None = None) -> None:
    """Refuse (PayloadDataError) a stored data payload whose files are not valid for its kind."""
    if manifest.kind == "policy":
        read_policy(folder, manifest, state)
    elif manifest.kind == "forecast-model":
        rel = entry_file(manifest)
        try:
            load_model(folder / "files" / rel)
        except MeshemsError as exc:
            raise PayloadDataError(f"files/{rel}: {exc.message}", file=rel) from None
    elif manifest.kind == "profiles":
        profiles = [f.path for f in manifest.files if f.path.endswith(PROFILE_SUFFIXES)]
        if not profiles:
            raise PayloadDataError("files: a profiles payload holds device profiles (*.yaml)", key="files")
        for rel in profiles:
            try:
                load_profile(str(folder / "files" / rel))
            except MeshemsError as exc:
                raise PayloadDataError(exc.message.replace(str(folder) + "/", ""), file=rel) from None


def proposes_apply(node_id: str, view: RaftChanged, dep: Deployment, stored: bool) -> bool:
    """Whether this node proposes a due policy's `deploy_apply`: the leader, when it holds the
    bundle; when the leader is no target, the first target that verified it."""
    if not stored:
        return False
    if view.role == "leader":
        return view.has_quorum
    if view.leader is None or view.leader in dep.targets:
        return False
    verified = sorted(t for t in dep.targets if dep.status_of(t) == "verified")
    return bool(verified) and verified[0] == node_id


async def repeat(step: Callable[[], Awaitable[object]], every_s: float = EVERY_S) -> None:
    """Run a data duty's `step` every `every_s` until cancelled; a failure (a disk error) is
    logged as E_PAYLOAD_APPLY and tried again, never the end of the duty."""
    while True:
        try:
            await step()
        except Exception as exc:
            log("error", "E_PAYLOAD_APPLY", f"{type(exc).__name__}: {exc}")
        await asyncio.sleep(every_s)


class PolicyApply:
    """Apply the zone's due policy payload: read its file here, propose it through Raft."""

    def __init__(
        self,
        node_id: str,
        store: PayloadStore,
        state: Callable[[], ZoneState],
        view: Callable[[], RaftChanged],
        commit: Callable[[bytes], Awaitable[dict[str, Any]]],
    ) -> None:
        self.node_id, self.store, self.state, self.view, self.commit = node_id, store, state, view, commit

    async def loop(self) -> None:
        await repeat(self.step)

    async def step(self) -> dict[str, Any] | None:
        """Propose the due policy once (None: nothing due here); the zone's answer."""
        state = self.state()
        dep = policy_due(state)
        if dep is None:
            return None
        if not proposes_apply(self.node_id, self.view(), dep, dep.digest in self.store.digests()):
            return None
        installed = next((i for i in self.store.installed() if i.digest == dep.digest), None)
        if installed is None:
            return None
        try:
            values = await asyncio.to_thread(read_policy, installed.path, installed.manifest)
        except PayloadDataError as exc:  # verified, then changed on disk: the zone says no
            log("error", exc.code, f"deployment {dep.id}: {exc.message}", deployment=dep.id)
            return None
        rid = "da-" + hashlib.sha256(dep.id.encode()).hexdigest()[:32]
        res = await self.commit(commands.encode("deploy_apply", rid, deployment_id=dep.id, values=values))
        log("info" if res.get("ok") else "warning", "I_PAYLOAD_APPLIED", str(res.get("message", "")),
            deployment=dep.id, result=res.get("code"))  # fmt: skip
        return res
