"""Pre-vote for pysyncobj: a node that cannot win an election does not disturb the zone.

Without it, a follower that restarts (or comes back from a cut link) times out before the
leader's heartbeats reach it, raises its term and sends vote requests; the healthy leader
sees the higher term and steps down (measured: 2-3 terms per graceful restart, leadership
moved once). Raft's pre-vote (Ongaro's thesis, 9.6; etcd's PreVote) fixes that: before it
raises its term, a would-be candidate asks its peers whether they would vote for it. A
peer says yes only if it has not heard from a leader recently and the candidate's log is
at least as up to date as its own. Only with a majority of yeses does the node start a
real election; a pre-vote changes no term and no vote, so nothing is persisted.

The messages are two new types on pysyncobj's own authenticated transport; a leadership
transfer (TimeoutNow) skips the pre-vote, as etcd's does. pysyncobj 0.3.17 internals are
read through their mangled names: the version is pinned. A cluster must run pre-vote on
every member (an older member never answers, so a newer one would never campaign).
"""

from __future__ import annotations

import time
from typing import Any

from pysyncobj import SyncObj

PRE_VOTE = "meshems_pre_vote"
PRE_VOTE_RESPONSE = "meshems_pre_vote_response"
_FOLLOWER, _CANDIDATE, _LEADER = 0, 1, 2
#: a peer that heard from a leader within this share of the minimum election timeout
#: refuses a pre-vote (a live leader sends a heartbeat every appendEntriesPeriod, which
#: the config keeps below a third of the minimum election timeout)
LEASE_SHARE = 0.75
#: a node that has just started knows nothing about the zone's leader: it refuses to vouch
#: for a candidate until it hears from a leader, for at most this many maximum election
#: timeouts (a quiet that outlived the first contact slowed every failover after a restart)
STARTUP_QUIET_TIMEOUTS = 2.0


class PreVoteSyncObj(SyncObj):
    """SyncObj that holds a pre-vote before every election it would start."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Set before SyncObj.__init__: it records the attributes present at the end of its
        # own __init__ as internal, so these never end up in snapshots.
        self._pv_round_term = 0
        self._pv_grants: set[Any] = set()
        self._pv_granted_term = 0
        self._pv_leader_contact = -1e9
        self._pv_quiet_until = float("inf")  # until set below, once the conf is known
        self.pre_votes_started = 0
        super().__init__(*args, **kwargs)
        quiet_s = STARTUP_QUIET_TIMEOUTS * self._SyncObj__conf.raftMaxTimeout  # type: ignore[attr-defined]
        if self._pv_quiet_until == float("inf"):  # no leader heard from during __init__
            self._pv_quiet_until = time.monotonic() + quiet_s

    # --- the would-be candidate --------------------------------------------------------

    def _onTick(self, timeToWait: float = 0.0) -> None:
        self._pre_vote_gate()
        super()._onTick(timeToWait)

    def _pre_vote_gate(self) -> None:
        """Turn an election pysyncobj is about to start into a pre-vote round, unless a
        majority already said yes for this term (then the election goes ahead)."""
        so: Any = self
        if so._SyncObj__raftState == _LEADER or so._SyncObj__selfNode is None:
            return
        now = time.monotonic()
        if so._SyncObj__raftElectionDeadline >= now or not so._SyncObj__connectedToAnyone():
            return
        if so._SyncObj__transferInProgress or not so._SyncObj__otherNodes:
            return  # asked to take over by the leader, or alone: no one to disturb
        term = so._SyncObj__raftCurrentTerm + 1
        if self._pv_granted_term == term:
            return  # a majority would vote for us: let pysyncobj campaign now
        so._SyncObj__raftElectionDeadline = now + so._SyncObj__generateRaftTimeout()
        self._pv_round_term = term
        self._pv_grants = {so._SyncObj__selfNode}
        self.pre_votes_started += 1
        message = {
            "type": PRE_VOTE,
            "term": term,
            "last_log_index": so._SyncObj__getCurrentLogIndex(),
            "last_log_term": so._SyncObj__getCurrentLogTerm(),
        }
        for node in so._SyncObj__otherNodes:
            so._SyncObj__transport.send(node, message)

    def _count_pre_vote(self, node: Any, message: dict[str, Any]) -> None:
        so: Any = self
        if message.get("term") != self._pv_round_term or message.get("granted") is not True:
            return
        if so._SyncObj__raftCurrentTerm + 1 != self._pv_round_term or so._SyncObj__raftState == _LEADER:
            return
        self._pv_grants.add(node)
        if len(self._pv_grants) > (len(so._SyncObj__otherNodes) + 1) / 2:
            self._pv_granted_term = self._pv_round_term
            so._SyncObj__raftElectionDeadline = 0  # campaign at the next tick

    # --- every peer ----------------------------------------------------------------------

    def _answer_pre_vote(self, node: Any, message: dict[str, Any]) -> None:
        so: Any = self
        term, last_index, last_term = (message.get(k) for k in ("term", "last_log_index", "last_log_term"))
        if not all(isinstance(v, int) for v in (term, last_index, last_term)):
            return
        lease_s = LEASE_SHARE * so._SyncObj__conf.raftMinTimeout
        my_term, my_index = so._SyncObj__getCurrentLogTerm(), so._SyncObj__getCurrentLogIndex()
        now = time.monotonic()
        granted = (
            now >= self._pv_quiet_until  # just (re)started: no idea yet whether a leader lives
            and term >= so._SyncObj__raftCurrentTerm
            and so._SyncObj__raftState != _LEADER
            and now - self._pv_leader_contact > lease_s
            and (last_term > my_term or (last_term == my_term and last_index >= my_index))
        )
        so._SyncObj__transport.send(node, {"type": PRE_VOTE_RESPONSE, "term": term, "granted": granted})

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:
        so: Any = self
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == PRE_VOTE:
            self._answer_pre_vote(node, message)
            return
        if kind == PRE_VOTE_RESPONSE:
            self._count_pre_vote(node, message)
            return
        if kind == "append_entries" and message.get("term", -1) >= so._SyncObj__raftCurrentTerm:
            self._pv_leader_contact = time.monotonic()
            self._pv_quiet_until = 0.0  # it knows a leader now: the lease rule decides from here
        SyncObj._SyncObj__onMessageReceived(self, node, message)  # type: ignore[attr-defined]
