"""The zone's Raft member as the node's loop sees it: proposals, its view, membership.

Wraps `adapters.consensus.RaftNode` (pysyncobj). Every proposal is validated here first
(type, size, schema: a command every replica would refuse must not cost a log entry), at
most `raft.max_in_flight` are in flight, and each waits at most its commit timeout. The
member's status becomes a `RaftChanged` event. Zone logic stays in the core.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from meshems.adapters.consensus import FAILURES, AppliedCallback, RaftNode
from meshems.core import commands
from meshems.core.cluster import ZoneState
from meshems.core.config import ClusterConfig
from meshems.core.errors import DiskFullError
from meshems.core.node_events import RaftChanged
from meshems.core.outages import OutageLog
from meshems.logs import log_outage
from meshems.node.bridge import Bridge, settle
from meshems.node.histogram import COMMIT_BUCKETS_S, Histogram
from meshems.ports import ProposeDone

#: pysyncobj's code for a membership change it refuses (another one in progress, or done)
REQUEST_DENIED = 6


class RaftService:
    def __init__(
        self,
        cfg: ClusterConfig,
        node_id: str,
        secret: str,
        bridge: Bridge,
        on_applied: AppliedCallback,
        on_state_changed: Callable[[int, int], None],
        on_violation: Callable[[str, str], None],
        on_disk_full: Callable[[DiskFullError], None],
    ) -> None:
        self.cfg, self.bridge = cfg, bridge
        self.raft = RaftNode(
            cfg,
            node_id,
            secret,
            on_applied=on_applied,
            on_state_changed=on_state_changed,
            on_violation=on_violation,
            on_disk_full=on_disk_full,
        )
        self._in_flight = asyncio.Semaphore(cfg.raft.max_in_flight)
        self._tasks: set[asyncio.Task[Any]] = set()
        # for /metrics (node.metrics): proposals by outcome, propose->commit seconds, leaders seen
        self.committed = 0
        self.failed: Counter[str] = Counter()
        self.pending = 0
        self.commit_latency = Histogram(COMMIT_BUCKETS_S)
        self.leader_changes = 0
        self._leader_seen: str | None = None
        self.outages = OutageLog()  # one log line when a peer stays unreachable, one when it returns

    @property
    def state(self) -> ZoneState:
        return self.raft.state

    def start(self) -> None:
        self.raft.start()

    def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        self.raft.stop()

    def view(self) -> RaftChanged:
        st = self.raft.status()
        connected = frozenset(n for n, up in st.partners.items() if up)
        now_s = time.monotonic()
        for peer, up in st.partners.items():
            log_outage(self.outages.observe(f"peer {peer}", up, now_s))
        if st.leader is not None and st.leader != self._leader_seen:  # as etcd: the first one counts
            self._leader_seen = st.leader
            self.leader_changes += 1
        return RaftChanged(st.role, st.term, st.leader, st.has_quorum, self.raft.ready(), connected)

    def propose(self, data: bytes, done: ProposeDone, timeout_s: float | None = None) -> None:
        """`ports.Consensus`: propose and call `done(result, None, "")` on the loop once it is
        applied (refused or not), or `done(None, code, text)` when it did not commit."""

        def finished(task: asyncio.Task[dict[str, Any]]) -> None:
            self._tasks.discard(task)
            if task.cancelled():
                return
            res = task.result()
            if "term" in res and "index" in res:
                done(res, None, "")
            else:
                done(None, str(res.get("code")), str(res.get("message", "")))

        task = asyncio.get_running_loop().create_task(self.commit(data, timeout_s))
        self._tasks.add(task)
        task.add_done_callback(finished)

    async def commit(self, data: bytes, timeout_s: float | None = None) -> dict[str, Any]:
        """Propose command bytes and wait for commit; returns a result dict with `code`."""
        timeout_s = timeout_s or self.cfg.raft.commit_timeout_s
        checked = commands.decode(data)
        if isinstance(checked, commands.Rejection):
            return {"ok": False, "code": checked.code, "message": checked.message, "proposed": False}
        try:
            await asyncio.wait_for(self._in_flight.acquire(), timeout=0.5)
        except TimeoutError:
            self.failed["E_BUSY"] += 1
            return {"ok": False, "code": "E_BUSY", "message": "too many proposals in flight"}
        self.pending += 1
        try:
            fut: asyncio.Future[tuple[Any, Any, str]] = asyncio.get_running_loop().create_future()
            started = time.monotonic()
            self.raft.propose(data, lambda res, code, text: self.bridge.call(settle, fut, (res, code, text)))
            try:
                res, code, text = await asyncio.wait_for(fut, timeout_s)
            except TimeoutError:
                self.failed["E_TIMEOUT"] += 1
                return {
                    "ok": False,
                    "code": "E_TIMEOUT",
                    "message": f"no commit within {timeout_s} s; outcome unknown, retry with the same "
                    "request id",
                }
            if code is not None:
                self.failed[str(code)] += 1
                return {"ok": False, "code": code, "message": text}
            self.committed += 1
            self.commit_latency.observe(time.monotonic() - started)
            return dict(res)
        finally:
            self.pending -= 1
            self._in_flight.release()

    async def change_membership(self, action: str, endpoint: str) -> tuple[bool, str, str]:
        """Add or remove a Raft member; (ok, code, message)."""
        fut: asyncio.Future[tuple[Any, int]] = asyncio.get_running_loop().create_future()

        def done(res: Any, err: int) -> None:
            self.bridge.call(settle, fut, (res, err))

        if action == "add":
            self.raft.add_member(endpoint, done)
        else:
            self.raft.remove_member(endpoint, done)
        try:
            _, err = await asyncio.wait_for(fut, self.cfg.raft.commit_timeout_s)
        except TimeoutError:
            return False, "E_TIMEOUT", "membership change timed out"
        if err == 0:
            return True, "OK", ""
        code, text = FAILURES.get(err, ("E_RAFT", f"pysyncobj failure {err}"))
        if err == REQUEST_DENIED:
            text = "denied: another membership change is in progress or the node is already in that state"
        return False, code, text
