"""The outbox's SQLite file: WAL and the synchronous setting, and what opening refuses (not
SQLite, a damaged page, another SQLite file, a newer schema version) with the file left as it
was; quarantine moves a file and its -wal/-shm aside without overwriting."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from meshems.adapters.outbox import Outbox
from meshems.adapters.outbox_file import OutboxError
from meshems.adapters.outbox_records import Record
from meshems.core.errors import JournalCorruptError
from tests.adapters.test_outbox import open_outbox, recs


def test_wal_mode_and_synchronous_setting(tmp_path: Path) -> None:
    for mode, level in (("NORMAL", 1), ("FULL", 2)):
        with open_outbox(tmp_path / f"{mode}.db", synchronous=mode) as box:
            assert box._conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
            assert box._conn.execute("PRAGMA synchronous").fetchone()[0] == level


def test_garbage_file_is_refused_and_can_be_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    path.write_bytes(b"definitely not SQLite " * 300)
    with pytest.raises(JournalCorruptError, match="not an SQLite database") as exc:
        open_outbox(path)
    assert str(path) in exc.value.message and path.read_bytes().startswith(b"definitely")  # untouched
    moved = Outbox.quarantine(path, stamp="20250101T000000")
    assert moved == [tmp_path / "o.db.corrupt-20250101T000000"] and not path.exists()
    assert Outbox.quarantine(path, stamp="x") == []
    with open_outbox(path) as box:
        assert box.append(recs(range(1, 3)), now_s=0.0).inserted == 2


def test_damaged_page_fails_quick_check(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with open_outbox(path) as box:
        box.append([*recs(range(1, 50)), Record(50, 0.0, "zone/t", b"\x77" * 20_000)], now_s=0.0)
    assert not Path(f"{path}-wal").exists()  # checkpointed on close: every page is in the main file
    data = bytearray(path.read_bytes())
    page_size = 4096
    # an overflow page of the big payload: opening never reads it, only quick_check walks it
    overflow = next(
        i
        for i in range(len(data) // page_size)
        if data[i * page_size + 4 : (i + 1) * page_size] == b"\x77" * 4092
    )
    data[overflow * page_size : (overflow + 1) * page_size] = b"\xa5" * page_size
    path.write_bytes(bytes(data))
    with pytest.raises(JournalCorruptError, match="quick_check failed") as exc:
        open_outbox(path)
    assert str(path) in exc.value.message


def test_another_sqlite_file_is_not_an_outbox(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    raw = sqlite3.connect(path)
    raw.execute("CREATE TABLE readings (x INTEGER)")
    raw.commit()
    raw.close()
    with pytest.raises(JournalCorruptError, match="not a meshems outbox"):
        open_outbox(path)


def test_newer_schema_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    open_outbox(path).close()
    raw = sqlite3.connect(path)
    raw.execute("UPDATE meta SET value = 99 WHERE key = 'schema_version'")
    raw.commit()
    raw.close()
    with pytest.raises(OutboxError, match="schema version 99"):
        open_outbox(path)


def test_quarantine_moves_the_wal_with_its_database(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").write_bytes(b"x")
    first = Outbox.quarantine(path, stamp="T1")
    assert [p.name for p in first] == ["o.db.corrupt-T1", "o.db.corrupt-T1-wal", "o.db.corrupt-T1-shm"]
    path.write_bytes(b"y")
    assert [p.name for p in Outbox.quarantine(path, stamp="T1")] == ["o.db.corrupt-T1-1"]  # no overwrite
    assert (tmp_path / "o.db.corrupt-T1").read_bytes() == b"x"
