"""raft.fsync with real pysyncobj members on loopback (in this process): with it on, no
appendEntries reply, vote or vote request leaves a node while its journal has unsynced
changes, and a burst of proposals shares fdatasyncs (group commit); with it off nothing is
synced or held."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.transport import TCPTransport

from meshems.adapters.config_file import load_config
from meshems.adapters.consensus import RaftNode
from meshems.adapters.journal import check_journal
from meshems.adapters.raft_journal import MeshemsJournal
from meshems.adapters.raft_transport import DURABLE_MESSAGES
from meshems.core import commands
from meshems.core.errors import RETRYABLE_CODES
from tests.conftest import write_config

pytestmark = pytest.mark.integration
SECRET = "4f3c9a0e1b7d2c6a8e5f0b3d9c1a7e2f6b8d0c4a9e3f1b5d7c2a0e8f4b6d1c3a"
PROPOSALS = 300


@pytest.fixture
def wire(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bool]]:
    """Every message put on the wire: (type, was its sender's journal unsynced then)."""
    seen: list[tuple[str, bool]] = []
    real = TCPTransport.send

    def send(self: Any, node: Any, message: Any) -> bool:
        journal = self._syncObj._SyncObj__raftLog
        seen.append((str(message.get("type")), bool(journal.needs_sync)))
        return bool(real(self, node, message))

    monkeypatch.setattr(TCPTransport, "send", send)
    return seen


@pytest.fixture
def cluster() -> Iterator[list[RaftNode]]:
    nodes: list[RaftNode] = []
    yield nodes
    for n in nodes:
        n.stop()


def start(path: Path, nodes: list[RaftNode]) -> RaftNode:
    cfg = load_config(path)
    nodes += [RaftNode(cfg, n.id, SECRET) for n in cfg.nodes]
    for n in nodes:
        n.start()
    return wait_leader(nodes)


def wait_leader(nodes: list[RaftNode]) -> RaftNode:
    end = time.monotonic() + 10
    while time.monotonic() < end:
        leaders = [n for n in nodes if n.status().role == "leader"]
        if leaders and all(n.ready() for n in nodes):
            return leaders[0]
        time.sleep(0.02)
    raise AssertionError("no leader within 10 s")


def burst(node: RaftNode, n: int) -> list[str | None]:
    """n proposals, at most 100 in flight; the error code of each (None: committed)."""
    codes: list[str | None] = []
    window, done = threading.Semaphore(100), threading.Event()

    def cb(res: Any, code: str | None, text: str) -> None:
        codes.append(code)
        window.release()
        if len(codes) == n:
            done.set()

    for i in range(n):
        assert window.acquire(timeout=10)
        node.propose(commands.encode("set_setpoint", f"r-{i}", device_id="n1-bat", kw=1.0, source="t"), cb)
    assert done.wait(20), f"{len(codes)} of {n} answered"
    return codes


def burst_through_elections(nodes: list[RaftNode], leader: RaftNode, n: int) -> list[str | None]:
    """`burst` on the leader; when an election cut it (a loaded machine: every refusal a leader
    change's), the same proposals again on whoever leads then (same request ids: each applied
    once), at most 3 times. The codes of the last burst."""
    codes = burst(leader, n)
    for _ in range(2):
        if all(c is None for c in codes) or not {c for c in codes if c} <= RETRYABLE_CODES:
            break
        leader = wait_leader(nodes)
        codes = burst(leader, n)
    return codes


def journal(node: RaftNode) -> MeshemsJournal:
    return node.syncobj._SyncObj__raftLog  # type: ignore[no-any-return]


def test_with_fsync_no_message_leaves_ahead_of_the_journal_and_a_burst_shares_syncs(
    tmp_path: Path, cluster: list[RaftNode], wire: list[tuple[str, bool]]
) -> None:
    leader = start(write_config(tmp_path), cluster)
    codes = burst_through_elections(cluster, leader, PROPOSALS)
    assert codes == [None] * PROPOSALS  # all committed (refused by the zone, but committed)
    kinds = {k for k, _ in wire}
    assert {"request_vote", "response_vote", "append_entries", "next_node_idx"} <= kinds
    assert [m for m in wire if m[1] and m[0] in DURABLE_MESSAGES] == []  # not one while unsynced
    assert any(m[1] and m[0] == "append_entries" for m in wire)  # the leader writes in parallel
    for n in cluster:
        j = journal(n)
        assert 0 < j.syncs < PROPOSALS, (n.node.id, j.syncs)  # group commit: fewer syncs than entries
        if n is not leader:  # its replies waited for its sync
            assert n.syncobj._SyncObj__transport.held_sent > 0
    term = leader.status().term
    for n in cluster:
        n.stop()
    holding = []
    for n in cluster:
        data = n.cfg.data_dir(n.node.id)
        report = check_journal(data / "raft.journal")
        assert report is not None
        if report.last_index >= PROPOSALS:
            holding.append(n)
        again = MeshemsJournal(str(data / "raft.journal"), fsync=False)
        assert again.getCurrentTerm() == term  # the term every member voted in is on disk
        again._destroy()
    # every committed entry is on the disks of a majority, the leader's among them; the third
    # member may still have been catching up when it stopped (Raft needs only a majority)
    assert leader in holding and len(holding) >= 2, [n.node.id for n in holding]


def test_with_fsync_off_nothing_is_synced_or_held(
    tmp_path: Path, cluster: list[RaftNode], wire: list[tuple[str, bool]]
) -> None:
    leader = start(write_config(tmp_path, fsync=False), cluster)
    assert burst_through_elections(cluster, leader, PROPOSALS) == [None] * PROPOSALS
    for n in cluster:
        assert journal(n).syncs == 0 and not journal(n).fsync
        assert n.syncobj._SyncObj__transport.held_sent == 0
