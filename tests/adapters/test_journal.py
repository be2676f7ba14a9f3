"""The journal check on real pysyncobj journal files: good files pass, every kind of damage
is reported with the file and the record, and the check itself never runs pickled code."""

from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import pytest
from pysyncobj.journal import FileJournal

from meshems.adapters.journal import (
    FIRST_RECORD_OFFSET,
    check_dump,
    check_journal,
    check_meta,
    check_node_files,
    frame,
    quarantine,
    unframe,
)
from meshems.core import commands
from meshems.core.errors import JournalCorruptError


def entry(i: int) -> bytes:
    data = commands.encode("set_setpoint", f"r{i}", device_id="d", kw=float(i), source="t")
    return b"\x00" + pickle.dumps((0, (frame(data),)), protocol=2)


def make_journal(path: Path, n: int = 5, term: int = 1) -> Path:
    j = FileJournal(str(path))
    j.add(b"\x01", 1, 0)  # pysyncobj's initial no-op
    for i in range(n):
        j.add(entry(i), i + 2, term)
    j.flush()
    j._destroy()
    return path


def records(path: Path) -> list[tuple[int, int]]:
    """(offset, size) of each record."""
    buf = path.read_bytes()
    end = struct.unpack_from("<I", buf, FIRST_RECORD_OFFSET - 4)[0]
    out, off = [], FIRST_RECORD_OFFSET
    while off < end:
        size = struct.unpack_from("<I", buf, off)[0]
        out.append((off, size))
        off += size + 8
    return out


def test_frame_round_trip_and_damage() -> None:
    assert unframe(frame(b"abc")) == b"abc"
    damaged = bytearray(frame(b"abc"))
    damaged[-1] ^= 1
    assert unframe(bytes(damaged)) is None
    assert unframe(b"\x00") is None


def test_good_journal_passes(tmp_path: Path) -> None:
    report = check_journal(make_journal(tmp_path / "raft.journal"))
    assert report is not None
    assert (report.entries, report.first_index, report.last_index, report.last_term) == (6, 1, 6, 1)


def test_missing_journal_is_fine(tmp_path: Path) -> None:
    assert check_journal(tmp_path / "raft.journal") is None
    assert check_node_files(tmp_path / "raft.journal") is None


def test_truncated_journal_is_reported(tmp_path: Path) -> None:
    path = make_journal(tmp_path / "raft.journal")
    off, _ = records(path)[3]
    path.write_bytes(path.read_bytes()[: off + 10])
    with pytest.raises(JournalCorruptError, match="truncated") as exc:
        check_journal(path)
    assert str(path) in exc.value.message and "--reset-journal" in exc.value.message


def test_truncated_header_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    path.write_bytes(b"PYSYNCOBJ")
    with pytest.raises(JournalCorruptError, match="truncated header"):
        check_journal(path)


@pytest.mark.parametrize(
    ("where", "match"),
    [
        (lambda off, size: off + 4 + size + 1, "size trailer"),  # the size trailer
        (lambda off, size: off + 4, "index"),  # low byte of the entry index
        (lambda off, size: off + 1, "bad size"),  # the size prefix
    ],
    ids=["trailer", "index", "size"],
)
def test_flipped_byte_is_reported(tmp_path: Path, where, match: str) -> None:
    path = make_journal(tmp_path / "raft.journal")
    off, size = records(path)[2]
    buf = bytearray(path.read_bytes())
    buf[where(off, size)] ^= 0x40
    path.write_bytes(bytes(buf))
    with pytest.raises(JournalCorruptError, match=match) as exc:
        check_journal(path)
    assert exc.value.code == "E_JOURNAL_CORRUPT"


def test_damaged_entry_data_fails_its_crc(tmp_path: Path) -> None:
    path = make_journal(tmp_path / "raft.journal")
    off, _ = records(path)[2]
    buf = bytearray(path.read_bytes())
    pos = buf.index(b"source", off)  # inside the msgpack command, still valid pickle text
    buf[pos] ^= 0x01
    path.write_bytes(bytes(buf))
    with pytest.raises(JournalCorruptError, match=r"record 2 .*CRC mismatch"):
        check_journal(path)


def test_not_a_journal(tmp_path: Path) -> None:
    path = tmp_path / "raft.journal"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(JournalCorruptError, match="bad header"):
        check_journal(path)


def test_pickled_code_is_never_run(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "raft.journal"
    j = FileJournal(str(path))
    j.add(b"\x01", 1, 0)
    j.add(b"\x00" + pickle.dumps((0, (Boom(),)), protocol=2), 2, 1)
    j._destroy()
    with pytest.raises(JournalCorruptError, match=r"forbidden class .*print"):
        check_journal(path)


def test_meta_and_dump_damage(tmp_path: Path) -> None:
    meta = tmp_path / "raft.journal.meta"
    meta.write_bytes(pickle.dumps({"currentTerm": 3, "votedForNodeId": None}, protocol=2))
    check_meta(meta)
    meta.write_bytes(b"garbage")
    with pytest.raises(JournalCorruptError, match="meta"):
        check_meta(meta)
    dump = tmp_path / "raft.dump"
    with gzip.open(dump, "wb") as g:
        g.write(pickle.dumps(([{}, {"zone": b"x"}], None, None, set()), protocol=2))
    check_dump(dump)
    data = bytearray(dump.read_bytes())
    data[len(data) // 2] ^= 0xFF
    dump.write_bytes(bytes(data))
    with pytest.raises(JournalCorruptError, match="damaged snapshot"):
        check_dump(dump)


def test_quarantine_moves_raft_files_aside(tmp_path: Path) -> None:
    make_journal(tmp_path / "raft.journal")
    (tmp_path / "raft.journal.meta").write_bytes(b"x")
    (tmp_path / "other.txt").write_text("keep")
    moved = quarantine(tmp_path)
    assert len(moved) == 2 and all(".corrupt-" in p.name for p in moved)
    assert not (tmp_path / "raft.journal").exists()
    assert (tmp_path / "other.txt").exists()


# Found by an attack probe: a deleted .meta (the node's term and vote) was accepted silently,
# so a restarted node could vote twice in one term.
def test_a_journal_without_its_meta_is_refused(tmp_path: Path) -> None:
    journal = make_journal(tmp_path / "raft.journal", term=2)
    with pytest.raises(JournalCorruptError, match=r"raft.journal.meta: missing.*term 2"):
        check_node_files(journal)
    (tmp_path / "raft.journal.meta").write_bytes(pickle.dumps({"currentTerm": 2, "votedForNodeId": None}, 2))
    assert check_node_files(journal) is not None
    fresh = (
        make_journal(tmp_path / "fresh" / "raft.journal", n=0, term=0)
        if (tmp_path / "fresh").mkdir() is None
        else None
    )
    assert fresh is not None and check_node_files(fresh) is not None  # a new node: only the term-0 no-op
