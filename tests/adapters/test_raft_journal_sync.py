"""A durable Raft journal (raft.fsync): appends are synced in groups, term and vote before
the call returns, a failed sync is a full disk, and a held message leaves only after the
sync; with fsync off nothing is synced or held."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path
from typing import Any

import pytest
from pysyncobj.transport import TCPTransport

from meshems.adapters import raft_journal
from meshems.adapters.raft_journal import MeshemsJournal
from meshems.adapters.raft_transport import GroupCommitTransport, release_after_tick
from meshems.core.errors import DiskFullError
from tests.adapters.test_journal import entry


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every fdatasync and fsync the journal module makes, in order (they still happen)."""
    seen: list[tuple[str, int]] = []
    fdatasync, fsync = os.fdatasync, os.fsync

    def on_fdatasync(fd: int) -> None:
        seen.append(("fdatasync", fd))
        fdatasync(fd)

    def on_fsync(fd: int) -> None:
        seen.append(("fsync", fd))
        fsync(fd)

    monkeypatch.setattr(raft_journal.os, "fdatasync", on_fdatasync)
    monkeypatch.setattr(raft_journal.os, "fsync", on_fsync)
    return seen


def test_a_batch_of_appends_costs_one_fdatasync(tmp_path: Path, calls: list[tuple[str, int]]) -> None:
    j = MeshemsJournal(str(tmp_path / "raft.journal"))
    assert j.needs_sync  # a new file: its header and its directory entry
    j.sync()
    assert [c[0] for c in calls] == ["fdatasync", "fsync"]  # the file, then the directory
    calls.clear()
    for i in range(50):
        j.add(entry(i), i + 1, 1)
    assert j.needs_sync and calls == []  # an append only marks the journal unsynced
    j.sync()
    assert calls == [("fdatasync", j._fd)] and not j.needs_sync
    j.sync()  # nothing new: no second sync
    j.deleteEntriesFrom(40)  # pysyncobj's truncation leaves the file as it is: nothing to sync
    assert not j.needs_sync
    j.add(entry(99), 41, 2)  # a different entry in the deleted ones' place is a change
    assert j.needs_sync
    j.sync()
    assert [c[0] for c in calls] == ["fdatasync", "fdatasync"] and j.syncs == 3
    j._destroy()


def test_term_and_vote_are_fsynced_with_their_directory_before_the_call_returns(
    tmp_path: Path, calls: list[tuple[str, int]]
) -> None:
    j = MeshemsJournal(str(tmp_path / "raft.journal"))
    j.sync()
    calls.clear()
    j.setCurrentTerm(3, "127.0.0.1:9001")
    assert [c[0] for c in calls] == ["fsync", "fsync"]  # the new meta file, then the rename
    assert not (tmp_path / "raft.journal.meta.tmp").exists()
    again = MeshemsJournal(str(tmp_path / "raft.journal"))
    assert (again.getCurrentTerm(), again.getVotedForNodeId()) == (3, "127.0.0.1:9001")
    again._destroy()
    j._destroy()


def test_compaction_syncs_the_snapshot_before_it_drops_entries(
    tmp_path: Path, calls: list[tuple[str, int]]
) -> None:
    dump = tmp_path / "raft.dump"
    dump.write_bytes(b"state")
    j = MeshemsJournal(str(tmp_path / "raft.journal"), dump_path=str(dump))
    for i in range(10):
        j.add(entry(i), i + 1, 1)
    j.sync()
    calls.clear()
    j.deleteEntriesTo(5)
    # the snapshot and its directory, the new journal, the directory after the rename
    assert [c[0] for c in calls] == ["fsync", "fsync", "fsync", "fsync"]
    assert [e[1] for e in j] == [6, 7, 8, 9, 10]
    j._destroy()


def test_fsync_off_syncs_nothing(tmp_path: Path, calls: list[tuple[str, int]]) -> None:
    dump = tmp_path / "raft.dump"
    dump.write_bytes(b"state")
    j = MeshemsJournal(str(tmp_path / "raft.journal"), fsync=False, dump_path=str(dump))
    for i in range(10):
        j.add(entry(i), i + 1, 1)
    j.setCurrentTerm(2, None)
    assert not j.needs_sync
    j.sync()
    j.deleteEntriesTo(5)
    assert [c for c in calls if c[0] == "fdatasync"] == []
    assert len(calls) == 1  # only the compaction's own fsync of its new file, as before
    j._destroy()


@pytest.mark.parametrize("code", [errno.EIO, errno.ENOSPC])
def test_a_failed_sync_is_a_full_disk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    told: list[DiskFullError] = []
    j = MeshemsJournal(str(tmp_path / "raft.journal"), told.append)
    j.sync()
    j.add(entry(1), 1, 1)

    def fails(fd: int) -> None:
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(raft_journal.os, "fdatasync", fails)
    with pytest.raises(DiskFullError) as caught:
        j.sync()
    assert caught.value.code == "E_DISK_FULL" and len(told) == 1
    assert os.strerror(code) in told[0].message
    monkeypatch.undo()  # the disk is back, but what the page cache held is not to be trusted
    for write in (j.sync, lambda: j.add(entry(2), 2, 1), lambda: j.setCurrentTerm(2, None)):
        with pytest.raises(DiskFullError):
            write()
    assert len(told) == 1
    j._destroy()


# --- the transport: a message leaves only after the sync -------------------------------------


class _SyncObj:
    def __init__(self, journal: MeshemsJournal) -> None:
        self._SyncObj__raftLog = journal
        self._SyncObj__transport: Any = None
        self._SyncObj__raftElectionDeadline = 100.0
        self._SyncObj__lastResponseTime = {"n2": 50.0}


def transport_for(
    journal: MeshemsJournal, monkeypatch: pytest.MonkeyPatch, log: list[Any]
) -> GroupCommitTransport:
    """A GroupCommitTransport whose wire is a list (no sockets, no pysyncobj tick)."""
    t = GroupCommitTransport.__new__(GroupCommitTransport)
    t._held, t._held_for, t.held_sent = [], set(), 0
    t._syncObj = _SyncObj(journal)
    t._syncObj._SyncObj__transport = t
    monkeypatch.setattr(
        TCPTransport, "send", lambda self, node, message: not log.append(("send", node, message))
    )
    real = os.fdatasync

    def on_fdatasync(fd: int) -> None:
        log.append(("fdatasync", fd))
        real(fd)

    monkeypatch.setattr(raft_journal.os, "fdatasync", on_fdatasync)
    return t


def test_replies_wait_for_one_sync_of_the_appends_they_acknowledge(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = MeshemsJournal(str(tmp_path / "raft.journal"))
    j.sync()
    wire: list[Any] = []
    t = transport_for(j, monkeypatch, wire)
    assert t.send("n1", {"type": "next_node_idx", "success": False}) and len(wire) == 1  # nothing unsynced
    for i in range(5):  # one poll's appendEntries: five appends, five replies
        j.add(entry(i), i + 1, 1)
        t.send("n1", {"type": "next_node_idx", "next_node_idx": i + 2, "success": True})
    t.send("n1", {"type": "apply_command", "command": b"x"})  # behind the held ones to n1
    t.send("n2", {"type": "response_vote", "term": 1})
    assert len(wire) == 1  # all held
    release_after_tick(t._syncObj)
    assert [w[0] for w in wire] == ["send", "fdatasync"] + ["send"] * 7  # one sync, then all of them
    assert [w[2].get("next_node_idx") for w in wire[2:7]] == [2, 3, 4, 5, 6]  # in order
    assert wire[7][2]["type"] == "apply_command"
    assert t.held_sent == 7 and not t._held
    t.release()  # nothing new: no sync
    assert len(wire) == 9
    j._destroy()


def test_a_leader_replicates_before_its_own_sync_and_syncs_before_its_poll(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = MeshemsJournal(str(tmp_path / "raft.journal"))
    j.sync()
    wire: list[Any] = []
    t = transport_for(j, monkeypatch, wire)
    monkeypatch.setattr(TCPTransport, "_onTick", lambda self: None)
    for i in range(3):  # a tick's proposals: append, replicate at once (Raft 10.2.1)
        j.add(entry(i), i + 1, 1)
        t.send("n2", {"type": "append_entries", "entries": [(entry(i), i + 1, 1)]})
    assert [w[0] for w in wire] == ["send"] * 3 and j.needs_sync
    t._onTick()  # before the poll that can bring the replies: the leader's own log is durable
    assert [w[0] for w in wire] == ["send"] * 3 + ["fdatasync"] and not j.needs_sync
    j._destroy()


def test_a_failed_sync_drops_the_held_replies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = MeshemsJournal(str(tmp_path / "raft.journal"))
    j.sync()
    wire: list[Any] = []
    t = transport_for(j, monkeypatch, wire)
    j.add(entry(1), 1, 1)
    t.send("n1", {"type": "next_node_idx", "next_node_idx": 2, "success": True})
    t.send("n1", {"type": "apply_command", "command": b"x"})

    def fails(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(raft_journal.os, "fdatasync", fails)
    with pytest.raises(DiskFullError):
        t.release()
    assert wire == [] and not t._held  # never acknowledged
    t.send("n1", {"type": "next_node_idx", "success": False})
    with pytest.raises(DiskFullError):  # and nothing leaves after it either
        t.release()
    assert wire == []
    j._destroy()


def test_with_fsync_off_messages_leave_at_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    j = MeshemsJournal(str(tmp_path / "raft.journal"), fsync=False)
    wire: list[Any] = []
    t = transport_for(j, monkeypatch, wire)
    j.add(entry(1), 1, 1)
    t.send("n1", {"type": "next_node_idx", "next_node_idx": 2, "success": True})
    assert [w[0] for w in wire] == ["send"]
    t.release()
    assert [w[0] for w in wire] == ["send"]
    j._destroy()


def test_time_spent_in_a_slow_sync_is_no_silence_of_the_peers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    j = MeshemsJournal(str(tmp_path / "raft.journal"))
    j.sync()
    wire: list[Any] = []
    t = transport_for(j, monkeypatch, wire)
    monkeypatch.setattr(raft_journal.os, "fdatasync", lambda fd: time.sleep(0.2))  # a stalled disk
    j.add(entry(1), 1, 1)
    t.release()
    so = t._syncObj
    assert so._SyncObj__raftElectionDeadline >= 100.2  # no election for the time it was blocked
    assert so._SyncObj__lastResponseTime["n2"] >= 50.2  # nor a leader's step-down
