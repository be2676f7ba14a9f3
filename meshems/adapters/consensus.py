"""The pysyncobj adapter: replicates `core.cluster.apply` across the zone.

Owns the SyncObj instance, its settings (measured choices, see LIBRARY-NOTES), the mapping
of pysyncobj's results to meshems error codes and a normalised status. Must not hold
zone logic: every state change goes through the pure `apply`. pysyncobj runs its own tick
thread; callbacks passed in here are called on that thread.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjConsumer, replicated
from pysyncobj.transport import TransportNotReadyError

from meshems.adapters import raft_journal
from meshems.adapters.journal import frame, unframe
from meshems.adapters.prevote import PreVoteSyncObj
from meshems.adapters.raft_transport import (
    APPEND_BATCH_BYTES,
    GroupCommitTransport,
    GuardedTransport,
    release_after_tick,
)
from meshems.core.cluster import ZoneState, apply
from meshems.core.commands import MAX_COMMAND_BYTES
from meshems.core.config import ClusterConfig
from meshems.core.errors import DiskFullError, MeshemsError
from meshems.core.snapshot import restore, snapshot
from meshems.core.zone_records import Result

ROLES = {0: "follower", 1: "candidate", 2: "leader"}

#: pysyncobj failure -> (meshems code, committed for sure not?, human text)
FAILURES: dict[int, tuple[str, str]] = {
    FAIL_REASON.QUEUE_FULL: ("E_BUSY", "the node's command queue is full; retry later"),
    FAIL_REASON.MISSING_LEADER: ("E_QUORUM", "no leader (election in progress or no quorum)"),
    FAIL_REASON.DISCARDED: ("E_LEADER_CHANGED", "the leader changed; the entry was discarded"),
    FAIL_REASON.NOT_LEADER: ("E_LEADER_CHANGED", "the leader changed before the entry was logged"),
    FAIL_REASON.LEADER_CHANGED: ("E_LEADER_CHANGED", "the leader changed before commit"),
    FAIL_REASON.REQUEST_DENIED: ("E_DENIED", "the leader denied the request"),
    FAIL_REASON.UNKNOWN_OUTCOME: (
        "E_UNKNOWN_OUTCOME",
        "the outcome is unknown; retry with the same request id",
    ),
}

#: bind attempts (one per second) before a node gives up on its Raft port
MAX_BIND_RETRIES = 5

ProposeCallback = Callable[[dict[str, Any] | None, str | None, str], None]
#: (state after, result, entry bytes, term, index); a duplicate's result names its first entry
AppliedCallback = Callable[[ZoneState, Result, bytes, int, int], None]


class ZoneReplica(SyncObjConsumer):
    """The replicated object: holds the ZoneState and applies committed entries to it."""

    def __init__(self, on_applied: AppliedCallback | None = None) -> None:
        super().__init__()
        self.state = ZoneState()
        self._on_applied = on_applied
        self.on_restored: Callable[[ZoneState], None] | None = None

    def _entry_position(self) -> tuple[int, int]:
        """(term, index) of the entry being applied; pysyncobj 0.3.17 internals."""
        so = self._syncObj
        index = so.raftLastApplied + 1
        log = so._SyncObj__raftLog
        first = log[0][1]
        entry = log[index - first]
        if entry[1] != index:  # pragma: no cover - would mean pysyncobj changed its layout
            raise RuntimeError(f"journal position mismatch: {entry[1]} != {index}")
        return entry[2], index

    @replicated
    def apply_entry(self, framed: bytes) -> dict[str, Any]:
        term, index = self._entry_position()
        data = unframe(framed)
        if data is None:
            # Same bytes on every replica, so every replica refuses it the same way.
            result = Result(False, "E_CMD_MALFORMED", "entry CRC mismatch", term, index)
        else:
            self.state, result = apply(self.state, data, term, index)
        if self._on_applied is not None:
            self._on_applied(self.state, result, framed, term, index)
        return result.to_dict()

    def _serialize(self) -> dict[str, bytes]:
        return {"zone": snapshot(self.state)}

    def _deserialize(self, data: dict[str, bytes]) -> None:
        self.state = restore(data["zone"])
        if self.on_restored is not None:
            self.on_restored(self.state)


class _ZoneSyncObj(PreVoteSyncObj):
    """The SyncObj of a zone member: the replies a tick held for the journal's sync leave
    at its end (`raft_journal`). A full disk ends a tick quietly and no tick runs after it
    (a leader would count its unsynced log in a commit): the journal has told the daemon,
    which stops the node (pysyncobj would log a traceback every tick)."""

    def _onTick(self, timeToWait: float = 0.0) -> None:
        if getattr(self._SyncObj__raftLog, "failed", None) is not None:  # type: ignore[attr-defined]
            time.sleep(timeToWait or 0.05)  # a log not known durable counts for nothing: no tick
            return
        try:
            super()._onTick(timeToWait)
            release_after_tick(self)
        except DiskFullError:
            time.sleep(timeToWait or 0.05)


@dataclass(frozen=True)
class RaftStatus:
    role: str
    term: int
    commit_index: int
    applied_index: int
    last_log_index: int
    leader: str | None
    has_quorum: bool
    uptime_s: int
    partners: dict[str, bool]
    match_index: dict[str, int]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def syncobj_conf(
    cfg: ClusterConfig, node_id: str, secret: str, journal: Path, **overrides: Any
) -> SyncObjConf:
    """pysyncobj settings from the cluster config (unknown kwargs are silently ignored by
    SyncObjConf, so every name here is checked against its attributes)."""
    r = cfg.raft
    settings: dict[str, Any] = {
        "password": secret,
        "bindAddress": cfg.node(node_id).raft_endpoint,  # the node's own address, never 0.0.0.0
        "maxBindRetries": MAX_BIND_RETRIES,
        "appendEntriesBatchSizeBytes": APPEND_BATCH_BYTES,
        "appendEntriesUseBatch": False,  # batching costs ~100 ms per commit (measured)
        "raftMinTimeout": r.election_timeout_min_s,
        "raftMaxTimeout": r.election_timeout_max_s,
        "appendEntriesPeriod": r.heartbeat_s,
        "leaderFallbackTimeout": r.effective_leader_fallback_s,
        "connectionTimeout": r.connection_timeout_s,
        "connectionRetryTime": 0.2,
        "journalFile": str(journal),
        "fullDumpFile": str(journal.with_name("raft.dump")),
        "dynamicMembershipChange": True,
        "useFork": False,  # a forked child of a threaded daemon is unsafe; dump in-process
        "commandsWaitLeader": False,
        "logCompactionMinEntries": 20000,
        "logCompactionMinTime": 600,
        **overrides,
    }
    conf = SyncObjConf(**settings)
    unknown = [k for k in settings if not hasattr(conf, k)]
    if unknown:  # pragma: no cover - guards against a pysyncobj upgrade renaming settings
        raise RuntimeError(f"pysyncobj ignores unknown settings: {unknown}")
    return conf


class RaftNode:
    """One Raft member: a SyncObj with a ZoneReplica, started and stopped explicitly."""

    def __init__(
        self,
        cfg: ClusterConfig,
        node_id: str,
        secret: str,
        on_applied: AppliedCallback | None = None,
        on_state_changed: Callable[[int, int], None] | None = None,
        partners: list[str] | None = None,
        on_violation: Callable[[str, str], None] | None = None,
        on_disk_full: Callable[[DiskFullError], None] | None = None,
    ) -> None:
        self.cfg = cfg
        self.node = cfg.node(node_id)
        self.replica = ZoneReplica(on_applied)
        data_dir = cfg.data_dir(node_id)
        self.journal = data_dir / "raft.journal"
        if partners is None:
            partners = initial_partners(cfg, node_id)
        self.partners = partners
        self._secret = secret
        self._on_state_changed = on_state_changed
        self._syncobj: SyncObj | None = None
        self._on_violation = on_violation
        self._on_disk_full = on_disk_full
        #: connections the transport refused (oversized frames, failed authentication, ...)
        self.violations = 0
        self._lock = threading.Lock()
        self.endpoint_to_id = {n.raft_endpoint: n.id for n in cfg.nodes}

    def start(self) -> None:
        self.journal.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        conf = syncobj_conf(self.cfg, self.node.id, self._secret, self.journal)
        if self._on_state_changed is not None:
            conf.onStateChanged = self._on_state_changed
        transport = type(
            "Transport",
            (GroupCommitTransport, GuardedTransport),
            {"on_violation": staticmethod(self._violation)},
        )
        with raft_journal.install(self._on_disk_full, fsync=self.cfg.raft.fsync, dump_path=conf.fullDumpFile):
            self._syncobj = _ZoneSyncObj(
                self.node.raft_endpoint,
                self.partners,
                conf,
                consumers=[self.replica],
                transportClass=transport,
            )
        try:
            self._syncobj.waitReady()
        except TransportNotReadyError:
            self.stop()
            raise MeshemsError(
                f"cannot listen for Raft on {self.node.raft_endpoint} after {MAX_BIND_RETRIES} attempts "
                "(is the address this gateway's, and the port free?)",
                endpoint=self.node.raft_endpoint,
            ) from None

    def ready(self) -> bool:
        """Caught up: applied everything a leader said was committed since this start
        (pysyncobj's isReady). Before that the state may be a replay of old history."""
        so = getattr(self, "_syncobj", None)
        return bool(so is not None and so.isReady())

    def _violation(self, peer: str, what: str) -> None:
        self.violations += 1
        if self._on_violation is not None:
            self._on_violation(peer, what)

    def stop(self) -> None:
        if self._syncobj is not None:
            self._syncobj.destroy()
            self._syncobj = None

    @property
    def syncobj(self) -> SyncObj:
        if self._syncobj is None:
            raise RuntimeError("RaftNode is not started")
        return self._syncobj

    @property
    def state(self) -> ZoneState:
        return self.replica.state

    def propose(self, data: bytes, callback: ProposeCallback) -> None:
        """Propose command bytes; `callback(result, error_code, error_text)` runs once on
        the Raft thread: result is the apply Result as a dict when committed."""
        if len(data) > MAX_COMMAND_BYTES:  # the last line: nothing larger enters the log
            callback(None, "E_CMD_TOO_LARGE", f"a command of {len(data)} bytes is over {MAX_COMMAND_BYTES}")
            return

        def done(res: dict[str, Any] | None, err: int) -> None:
            if err == FAIL_REASON.SUCCESS:
                callback(res, None, "")
            else:
                code, text = FAILURES.get(err, ("E_RAFT", f"pysyncobj failure {err}"))
                callback(None, code, text)

        self.replica.apply_entry(frame(data), callback=done)

    def add_member(self, endpoint: str, callback: Callable[[Any, int], None]) -> None:
        self.syncobj.addNodeToCluster(endpoint, callback=callback)

    def remove_member(self, endpoint: str, callback: Callable[[Any, int], None]) -> None:
        self.syncobj.removeNodeFromCluster(endpoint, callback=callback)

    def status(self) -> RaftStatus:
        st: dict[str, Any] = {}
        for _ in range(5):  # getStatus iterates dicts the Raft thread may change
            try:
                st = self.syncobj.getStatus()
                break
            except RuntimeError:
                continue
        leader = st.get("leader")
        leader_id = None
        if leader is not None:
            leader_id = self.endpoint_to_id.get(str(leader.id), str(leader.id))
        partners = {
            self.endpoint_to_id.get(k.removeprefix("partner_node_status_server_"), k): v == 2
            for k, v in st.items()
            if k.startswith("partner_node_status_server_")
        }
        match = {
            self.endpoint_to_id.get(k.removeprefix("match_idx_server_"), k): v
            for k, v in st.items()
            if k.startswith("match_idx_server_")
        }
        return RaftStatus(
            role=ROLES.get(st.get("state", 0), "unknown"),
            term=int(st.get("raft_term", 0)),
            commit_index=int(st.get("commit_idx", 0)),
            applied_index=int(st.get("last_applied", 0)),
            last_log_index=self.replica.state.last_index,
            leader=leader_id,
            has_quorum=bool(st.get("has_quorum", False)),
            uptime_s=int(st.get("uptime", 0)),
            partners=partners,
            match_index=match,
        )


def initial_partners(cfg: ClusterConfig, node_id: str) -> list[str]:
    """Raft partners at start: the other initial members. Later membership changes come
    from the replicated log (pysyncobj replays them), also for a node joining later."""
    cfg.node(node_id)
    return [n.raft_endpoint for n in cfg.nodes if n.id != node_id and n.initial]
