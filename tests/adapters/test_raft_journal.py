"""The Raft journal meshems gives pysyncobj: pysyncobj's own file format (both read each
other's files, and the pre-replay check accepts it), durable truncation and compaction,
and a failed write that changes nothing in memory and refuses every later write."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest
from pysyncobj.journal import FileJournal

from meshems.adapters import raft_journal
from meshems.adapters.journal import check_journal, check_meta
from meshems.adapters.raft_journal import MeshemsJournal
from meshems.core.errors import DiskFullError
from tests.adapters.test_journal import entry, make_journal


def fill(j: object, n: int, term: int = 1) -> None:
    j.add(b"\x01", 1, 0)  # type: ignore[attr-defined]
    for i in range(n):
        j.add(entry(i), i + 2, term)  # type: ignore[attr-defined]


def test_it_reads_a_pysyncobj_journal_and_pysyncobj_reads_it(tmp_path: Path) -> None:
    theirs = make_journal(tmp_path / "theirs.journal", n=20)
    ours = MeshemsJournal(str(theirs))
    assert len(ours) == 21 and ours[-1] == (entry(19), 21, 1)
    ours.add(entry(20), 22, 2)
    ours._destroy()
    back = FileJournal(str(theirs))
    assert len(back) == 22 and back[-1] == (entry(20), 22, 2)
    back._destroy()
    mine = tmp_path / "mine.journal"
    j = MeshemsJournal(str(mine))
    fill(j, 30)
    j._destroy()
    report = check_journal(mine)
    assert report is not None and (report.entries, report.last_index, report.last_term) == (31, 31, 1)
    read = FileJournal(str(mine))
    assert [e[1] for e in read] == list(range(1, 32))
    read._destroy()


def test_truncation_and_compaction_survive_a_reopen(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    j = MeshemsJournal(str(path))
    fill(j, 50)
    j.deleteEntriesFrom(41)  # drops indexes 42..51 (a follower's conflicting tail)
    j.add(entry(99), 42, 2)
    j.deleteEntriesTo(10)  # compaction: keeps indexes 11..42
    j.add(entry(100), 43, 2)
    j._destroy()
    again = MeshemsJournal(str(path))
    assert [e[1] for e in again] == list(range(11, 44))
    assert again[-2] == (entry(99), 42, 2) and again[-1] == (entry(100), 43, 2)
    assert not (tmp_path / "raft.journal.tmp").exists()
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    again._destroy()


def test_a_resend_of_fewer_entries_never_shrinks_the_file_past_what_it_held(tmp_path: Path) -> None:
    """pysyncobj deletes every entry after a message's prevLogIdx, matching ones too; a resend
    of 5 entries after prevLogIdx 30 would leave the file at 36 of the 51 it acknowledged."""
    path = tmp_path / "raft.journal"
    j = MeshemsJournal(str(path))
    fill(j, 50)  # indexes 1..51
    j.deleteEntriesFrom(30)  # after index 30
    assert len(j) == 30 and j[-1][1] == 30  # what pysyncobj sees: its own truncation
    for i in range(30, 35):  # the same entries again: taken back from the file, not written
        j.add(entry(i - 1), i + 1, 1)
    assert len(j) == 35 and j[-1] == (entry(33), 35, 1)
    j._destroy()
    again = MeshemsJournal(str(path))
    assert [e[1] for e in again] == list(range(1, 52))  # all 51 survive a stop
    report = check_journal(path)
    assert again[-1] == (entry(49), 51, 1) and report is not None and report.last_index == 51
    # a different entry in their place is a real conflict: what followed goes, on disk too
    again.deleteEntriesFrom(40)
    again.add(entry(99), 41, 2)
    again.add(entry(100), 42, 2)
    again._destroy()
    third = MeshemsJournal(str(path))
    assert [e[1] for e in third] == list(range(1, 43)) and third[-1] == (entry(100), 42, 2)
    assert third[39] == (entry(38), 40, 1)
    third._destroy()


def test_term_and_vote_are_stored_before_the_call_returns(tmp_path: Path) -> None:
    j = MeshemsJournal(str(tmp_path / "raft.journal"))
    j.setCurrentTerm(7, "127.0.0.1:9001")
    check_meta(tmp_path / "raft.journal.meta")
    other = MeshemsJournal(str(tmp_path / "raft.journal"))  # what a restart would read
    assert (other.getCurrentTerm(), other.getVotedForNodeId()) == (7, "127.0.0.1:9001")
    j.setRaftCommitIndex(5)
    j.onOneSecondTimer()
    assert MeshemsJournal(str(tmp_path / "raft.journal")).getRaftCommitIndex() == 5


def test_a_full_disk_adds_nothing_tells_once_and_refuses_every_later_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    told: list[DiskFullError] = []
    j = MeshemsJournal(str(tmp_path / "raft.journal"), told.append)
    fill(j, 3)

    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(raft_journal.os, "posix_fallocate", no_space)  # the disk is full now
    with pytest.raises(DiskFullError, match="no space left"):
        j.add(b"\x00" + b"x" * (2 << 20), 5, 1)  # needs a new reservation
    assert len(j) == 4 and len(told) == 1
    assert str(tmp_path / "raft.journal") in told[0].message and "KiB free" in told[0].message
    monkeypatch.undo()  # even with room again, this journal writes nothing more
    for write in (lambda: j.add(entry(9), 5, 1), lambda: j.setCurrentTerm(2, None)):
        with pytest.raises(DiskFullError):
            write()
    assert len(told) == 1
    j._destroy()
    report = check_journal(tmp_path / "raft.journal")
    assert report is not None and report.last_index == 4  # the file holds what memory held
