"""The node API's payload routes and the trust check of a deploy before it is proposed.

`PUT /v1/payloads` (admin) streams an upload into a temporary file under the store (capped at
a bundle's size), verifies it against this node's trusted keys and keeps it; `GET
/v1/payloads/DIGEST?offset=N&length=M` (admin: operators and peer nodes) serves chunks of a
stored bundle, at most 1 MiB each. `refusal` is why a deploy may not be proposed here: its
bundle is not in the store, does not verify now (a data payload: its files are not valid for
their kind, E_PAYLOAD_DATA), or is not the one the command names.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from meshems.adapters.payload_bundle import MAX_BUNDLE_BYTES, Checks, verify
from meshems.adapters.payload_fetch import CHUNK_BYTES
from meshems.adapters.payload_store import PayloadStore
from meshems.core import commands
from meshems.core.config import ClusterConfig
from meshems.core.errors import PayloadError
from meshems.logs import log
from meshems.node.payload_data import check_data
from meshems.ops.http import HttpApi, Raw, Request


def running_version() -> str | None:
    """The installed meshems version (None, not checked, when it is not installed)."""
    import importlib.metadata

    try:
        return importlib.metadata.version("meshems")
    except importlib.metadata.PackageNotFoundError:
        return None


def node_checks(cfg: ClusterConfig) -> Checks:
    """What this node checks a bundle against: its config's trusted keys and threshold, now."""
    p = cfg.payloads
    return Checks(frozenset(p.trusted_keys), p.threshold, time.time(), running_version())


def refused(exc: PayloadError, node_id: str) -> tuple[int, dict[str, Any]]:
    return 422, {"ok": False, "code": exc.code, "message": exc.message, **exc.context, "node": node_id}


class PayloadRoutes:
    def __init__(self, cfg: ClusterConfig, node_id: str, store: PayloadStore) -> None:
        self.cfg, self.node_id, self.store = cfg, node_id, store

    def install(self, api: HttpApi) -> None:
        api.route("PUT", "/v1/payloads", self.upload, max_body=MAX_BUNDLE_BYTES, role="admin", streamed=True)
        api.route("GET", "/v1/payloads/*", self.chunk, role="admin")

    def _bad(self, status: int, code: str, message: str) -> tuple[int, dict[str, Any]]:
        return status, {"ok": False, "code": code, "message": message, "node": self.node_id}

    async def chunk(self, req: Request) -> tuple[int, Any]:
        digest = req.path.rsplit("/", 1)[1]
        try:
            offset = int(req.query.get("offset", "0"))
            length = int(req.query.get("length", str(CHUNK_BYTES)))
        except ValueError:
            offset = length = -1
        if offset < 0 or not 0 < length <= CHUNK_BYTES:
            return self._bad(400, "E_BAD_REQUEST", f"offset >= 0 and length 1..{CHUNK_BYTES}, please")
        path = self.store.bundle(digest)
        if path is None:
            return self._bad(404, "E_PAYLOAD_MISSING", f"{self.node_id} has no bundle {digest[:64]!r}")
        size = path.stat().st_size
        if offset > size:
            return self._bad(416, "E_BAD_REQUEST", f"offset {offset} is past the bundle's {size} bytes")
        data = await asyncio.to_thread(_read, path, offset, length)
        return 200, Raw(data, "application/octet-stream", {"X-Bundle-Size": str(size)})

    async def upload(self, req: Request) -> tuple[int, Any]:
        assert req.chunks is not None
        self.store.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, name = tempfile.mkstemp(prefix=".upload-", dir=self.store.root)
        tmp = Path(name)
        try:
            with os.fdopen(fd, "wb") as out:
                async for chunk in req.chunks:
                    await asyncio.to_thread(out.write, chunk)
            size = tmp.stat().st_size
            try:
                stored = await asyncio.to_thread(self.store.install, tmp, node_checks(self.cfg))
            except PayloadError as exc:
                log("warning", exc.code, f"upload refused: {exc.message}", peer=req.peer)
                return refused(exc, self.node_id)
        finally:
            with contextlib.suppress(OSError):
                tmp.unlink()
        m = stored.manifest
        log("info", "I_PAYLOAD_STORED", f"stored {m.name} {m.version}", digest=stored.digest, peer=req.peer)
        return 200, {"ok": True, "code": "OK", "digest": stored.digest, "name": m.name,
                     "version": str(m.version), "size": size, "node": self.node_id}  # fmt: skip

    async def refusal(self, cmd: commands.Command) -> tuple[int, dict[str, Any]] | None:
        """Why this node must not propose `deploy` (None: it may): the trust check, here and now."""
        f = cmd.fields
        path = self.store.bundle(f["digest"])
        if path is None:
            msg = f"bundle {f['digest'][:16]} is not on {self.node_id}; upload it first: PUT /v1/payloads"
            return self._bad(409, "E_PAYLOAD_MISSING", msg)
        try:
            v = await asyncio.to_thread(verify, path, node_checks(self.cfg))
            if v.manifest.kind != "controller":  # a data payload's files, for their kind
                await asyncio.to_thread(check_data, path.parent, v.manifest)
        except PayloadError as exc:
            return refused(exc, self.node_id)
        if (v.canonical, v.signatures, path.stat().st_size) != (f["manifest"], f["signatures"], f["size"]):
            msg = "the command's manifest, signatures or size differ from the stored bundle's"
            return self._bad(400, "E_PAYLOAD_MISMATCH", msg)
        return None


def _read(path: Path, offset: int, length: int) -> bytes:
    with path.open("rb") as f:
        f.seek(offset)
        return f.read(length)
