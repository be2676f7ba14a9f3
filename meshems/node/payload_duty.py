"""The node's payload distribution duty: every few seconds it reads the zone's deployments,
asks `core.deploy_duties` what it owes, fetches missing bundles from peers over the node API
(HTTPS with the node's own certificate, chunked and resumable: `adapters.payload_fetch`),
and proposes its `deploy_status` (stored, verified, or failed with the E_PAYLOAD_* code).
A node that was offline finds the deployments in the state and catches up on start. The
rollouts of controllers are `node.rollout_duty`'s, the data kinds `node.payload_data`'s, run
beside it.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from functools import partial

from meshems.adapters.payload_bundle import verify
from meshems.adapters.payload_fetch import fetch
from meshems.adapters.payload_store import PayloadStore
from meshems.core import commands
from meshems.core.config import ClusterConfig
from meshems.core.deploy_duties import Duty, duties
from meshems.core.deploy_records import Deployment
from meshems.core.errors import MeshemsError, PayloadError, UnreachableError
from meshems.core.node import Node
from meshems.logs import log
from meshems.node.consensus import RaftService
from meshems.node.payload_data import PolicyApply, check_data
from meshems.node.payload_routes import PayloadRoutes, node_checks
from meshems.node.payload_stage import PayloadStage, swap_forecast
from meshems.node.rollout_duty import RolloutDuty
from meshems.ops.client import NodeClient
from meshems.ops.http_exchange import exchange

EVERY_S = 1.0
#: how long a deployment waits after a fetch no peer could serve
RETRY_S = 5.0


class PayloadDuty:
    def __init__(
        self,
        cfg: ClusterConfig,
        node_id: str,
        raft: RaftService,
        machine: Node | None = None,
    ) -> None:
        """The duty of `node_id` over its store in its data folder, and the API routes to it;
        with the node's state `machine`, the rollouts too (the active payload's decisions go to
        its dispatch)."""
        self.cfg, self.node_id, self.state, self.commit = cfg, node_id, lambda: raft.state, raft.commit
        self.store = PayloadStore(cfg.data_dir(node_id))
        self.rollouts = None
        if machine is not None:
            advise = partial(setattr, machine, "payload_advice")
            self.rollouts = RolloutDuty(node_id, self.store, self.state, raft.view, raft.commit, advise)
        self.routes = PayloadRoutes(cfg, node_id, self.store)
        self.policy = PolicyApply(node_id, self.store, self.state, raft.view, raft.commit)
        swap = partial(swap_forecast, machine) if machine is not None else None
        self.stage = PayloadStage(node_id, cfg.data_dir(node_id), self.store, self.state, swap)
        self.busy: dict[str, asyncio.Task[None]] = {}
        self.not_before: dict[str, float] = {}
        self._client: NodeClient | None = None

    async def loop(self) -> None:
        """Work the duties (and the rollouts) until cancelled."""
        others = [asyncio.create_task(self.policy.loop()), asyncio.create_task(self.stage.loop())]
        if self.rollouts is not None:
            others.append(asyncio.create_task(self.rollouts.loop()))
        try:
            await self._fetch_loop()
        finally:
            for task in others:
                task.cancel()
            await asyncio.gather(*others, return_exceptions=True)

    async def _fetch_loop(self) -> None:
        while True:
            self.step(time.monotonic())
            await asyncio.sleep(EVERY_S)

    def step(self, now_s: float) -> None:
        waiting = frozenset(k for k, t in self.not_before.items() if t > now_s)
        for duty in duties(self.state(), self.node_id, self.store.digests(), frozenset(self.busy) | waiting):
            self.busy[duty.deployment.id] = asyncio.get_running_loop().create_task(self._do(duty))

    async def _do(self, duty: Duty) -> None:
        dep = duty.deployment
        try:
            try:
                await self._work(duty)
            except PayloadError as exc:
                log("warning", exc.code, f"deployment {dep.id}: {exc.message}", deployment=dep.id)
                await self._report(dep, "failed", exc.code, exc.message[:500])
        except (UnreachableError, _NotCommitted) as exc:
            log("warning", "W_PAYLOAD_FETCH", f"deployment {dep.id}: {exc}", deployment=dep.id)
            self.not_before[dep.id] = time.monotonic() + RETRY_S
        except Exception as exc:  # a bug or a disk error must not end the duty: logged, tried again
            log(
                "error",
                "E_PAYLOAD_DUTY",
                f"deployment {dep.id}: {type(exc).__name__}: {exc}",
                deployment=dep.id,
            )
            self.not_before[dep.id] = time.monotonic() + RETRY_S
        finally:
            self.busy.pop(dep.id, None)

    async def _work(self, duty: Duty) -> None:
        """Fetch (when the store lacks the bundle), say it is stored, check it, say it is verified."""
        dep = duty.deployment
        if duty.kind == "fetch":
            started = time.monotonic()
            got, moved = await asyncio.to_thread(
                fetch, self.store, dep.digest, dep.size, duty.sources, self._chunk, node_checks(self.cfg)
            )
            log("info", "I_PAYLOAD_FETCHED", f"fetched {got.name} {got.version} for {dep.id}",
                bytes=moved, seconds=round(time.monotonic() - started, 3), digest=dep.digest)  # fmt: skip
        if dep.status_of(self.node_id) == "pending":
            await self._report(dep, "stored")
        await self._check(dep)
        await self._report(dep, "verified")

    async def _check(self, dep: Deployment) -> None:
        """The stored bundle against this node's keys now and against the deployment record."""
        path = self.store.bundle(dep.digest)
        if path is None:
            raise UnreachableError(f"bundle {dep.digest[:16]} left the store")
        v = await asyncio.to_thread(verify, path, node_checks(self.cfg))
        if (v.canonical, v.signatures) != (dep.manifest, dep.signatures):
            raise PayloadError(
                f"the stored bundle's manifest or signatures differ from deployment {dep.id}'s"
            )
        if dep.kind != "controller":  # its files, for their kind (E_PAYLOAD_DATA)
            await asyncio.to_thread(check_data, path.parent, v.manifest, self.state())

    async def _report(self, dep: Deployment, status: str, code: str = "OK", message: str = "") -> None:
        key = f"{dep.id}/{self.node_id}/{status}/{dep.index}"
        rid = "ds-" + hashlib.sha256(key.encode()).hexdigest()[:32]  # the same on every retry
        data = commands.encode("deploy_status", rid, deployment_id=dep.id, node_id=self.node_id,
                               status=status, code=code, message=message)  # fmt: skip
        res = await self.commit(data)
        if not res.get("ok") and res.get("code") not in ("E_DEPLOY_STATE", "E_DEPLOY_ABORTED"):
            raise _NotCommitted(f"deploy_status {status}: {res.get('code')}: {res.get('message')}")
        log("info", "I_DEPLOY_STATUS", f"deployment {dep.id}: {status}", deployment=dep.id,
            **({"refusal": code} if status == "failed" else {}))  # fmt: skip

    def _chunk(self, peer_id: str, digest: str, offset: int, length: int) -> bytes:
        """One chunk from a peer's `GET /v1/payloads/DIGEST` (runs in a worker thread)."""
        if self._client is None:
            cert, key = (str(self.cfg.tls_dir / f"{self.node_id}.{ext}") for ext in ("crt", "key"))
            self._client = NodeClient(self.cfg, None, timeout_s=10.0, cert=cert, key=key)
        peer = self.cfg.node(peer_id)
        path = f"/v1/payloads/{digest}?offset={offset}&length={length}"
        status, body = exchange(peer.bind_host, peer.api_port, "GET", path, b"", {}, 10.0,
                                self._client.ssl_context)  # fmt: skip
        if status != 200:
            raise UnreachableError(f"{peer_id} answered {status}: {body[:200]!r}", node=peer_id)
        return body


class _NotCommitted(MeshemsError):
    """A status the zone did not take (no quorum, a timeout): tried again later."""
