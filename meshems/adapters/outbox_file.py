"""The outbox's SQLite file: its schema, the checks on opening (WAL, quick_check, tables,
schema version, counters), the stable errors for an unusable or damaged file, and quarantine.

Owns the file format and what a damaged file means; it never recreates or repairs a damaged
file (it raises JournalCorruptError). Records, caps and drops are `adapters.outbox`.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from meshems.core.errors import JournalCorruptError, MeshemsError

SCHEMA_VERSION = 1
Synchronous = Literal["NORMAL", "FULL"]
SYNCHRONOUS_MODES: frozenset[str] = frozenset({"NORMAL", "FULL"})
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26
#: the counters kept in the meta table (with the schema version)
COUNTERS = ("dropped_age", "dropped_bytes", "rejected", "last_pruned", "dropped_through")

_SCHEMA = f"""
BEGIN IMMEDIATE;
CREATE TABLE records (
    seq INTEGER PRIMARY KEY,
    created_s REAL NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    crc INTEGER NOT NULL
);
CREATE INDEX records_created_s ON records (created_s);
CREATE TABLE meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
INSERT INTO meta (key, value) VALUES
    ('schema_version', {SCHEMA_VERSION}), ('last_pruned', -1), ('dropped_through', -1),
    ('dropped_age', 0), ('dropped_bytes', 0), ('rejected', 0);
COMMIT;
"""


class OutboxError(MeshemsError):
    """The outbox file cannot be opened or used (locked, unwritable, wrong schema version)."""

    code = "E_OUTBOX"


@dataclass
class Counters:
    """What the outbox keeps track of: its depth and payload bytes, and the counters of the
    meta table (drops since the file was created, the highest seq pruned or given up)."""

    depth: int
    bytes: int
    dropped_age: int
    dropped_bytes: int
    rejected: int
    last_pruned: int
    dropped_through: int

    @property
    def floor(self) -> int:
        """Appends never insert at or below this seq: the outbox acknowledged or gave them up."""
        return max(self.last_pruned, self.dropped_through)


def connect(path: Path, synchronous: Synchronous) -> tuple[sqlite3.Connection, Counters]:
    """Open (or create) the outbox at `path` and check it; the connection and its counters.

    Raises OutboxError (locked, unwritable, no WAL, another schema version) or
    JournalCorruptError (damaged, not an outbox); a failed check closes the connection.
    """
    try:
        conn = sqlite3.connect(path, isolation_level=None)
    except sqlite3.Error as exc:
        raise sqlite_error(path, exc, "cannot open") from exc
    try:
        return conn, _checked_counters(conn, path, synchronous)
    except BaseException as exc:
        conn.close()
        if isinstance(exc, sqlite3.Error):
            raise sqlite_error(path, exc, "cannot open") from exc
        raise


def _checked_counters(conn: sqlite3.Connection, path: Path, synchronous: Synchronous) -> Counters:
    """Put the connection in WAL mode, check the file and read its counters."""
    mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise OutboxError(
            f"{path}: SQLite refused WAL mode (got {mode!r}); put the outbox on a local "
            "filesystem that supports shared memory",
            path=str(path),
        )
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA journal_size_limit=67108864")  # keep the -wal file from staying huge
    problems = [row[0] for row in conn.execute("PRAGMA quick_check")]
    if problems != ["ok"]:
        raise corrupt(path, f"quick_check failed: {'; '.join(map(str, problems[:3]))}")
    tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    if not tables:
        conn.executescript(_SCHEMA)  # one transaction: tables and meta rows, or nothing
    elif not {"records", "meta"} <= tables:
        raise corrupt(path, f"not a meshems outbox (tables: {', '.join(sorted(tables))})")
    meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
    version = meta.get("schema_version")
    if version != SCHEMA_VERSION:
        raise OutboxError(
            f"{path}: outbox schema version {version}, this meshems reads {SCHEMA_VERSION}; "
            "run the matching meshems version, or quarantine the file (the node re-derives its "
            "backlog from the Raft log)",
            path=str(path),
        )
    missing = [key for key in COUNTERS if not isinstance(meta.get(key), int)]
    if missing:
        raise corrupt(path, f"meta table lacks {', '.join(missing)}")
    depth, total = conn.execute("SELECT COUNT(*), COALESCE(SUM(length(payload)), 0) FROM records").fetchone()
    return Counters(depth=depth, bytes=total, **{key: meta[key] for key in COUNTERS})


def save_counters(conn: sqlite3.Connection, counters: Counters) -> None:
    """Write the meta counters (inside the caller's transaction)."""
    conn.executemany(
        "UPDATE meta SET value = ? WHERE key = ?", [(getattr(counters, key), key) for key in COUNTERS]
    )


def corrupt(path: Path, what: str, **ctx: object) -> JournalCorruptError:
    """The error for a damaged outbox file: what is wrong and what the operator does."""
    return JournalCorruptError(
        f"{path}: {what}. The outbox will not be used. Stop the node, move the file aside "
        "(Outbox.quarantine) and restart it: the node re-derives its backlog from the Raft log",
        path=str(path),
        **ctx,
    )


def sqlite_error(path: Path, exc: sqlite3.Error, doing: str) -> MeshemsError:
    """An SQLite failure as JournalCorruptError (damaged file) or OutboxError (anything else)."""
    if _is_corruption(exc):
        return corrupt(path, f"damaged or not an SQLite database ({exc})")
    return OutboxError(f"{path}: {doing} the outbox: {exc}", path=str(path))


def _is_corruption(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB)


def quarantine(path: Path | str, stamp: str | None = None) -> list[Path]:
    """Move a (damaged) outbox file and its -wal/-shm aside as `<name>.corrupt-<stamp>` so the
    caller can start a fresh one; the -wal keeps SQLite's naming so the copy opens with it.
    Call it only while no Outbox has the file open. Returns the new paths."""
    path = Path(path)
    stamp = stamp or time.strftime("%Y%m%dT%H%M%S")
    base, n = f"{path.name}.corrupt-{stamp}", 1
    while any(path.with_name(base + sfx).exists() for sfx in ("", "-wal", "-shm")):
        base, n = f"{path.name}.corrupt-{stamp}-{n}", n + 1
    moved = []
    for sfx in ("", "-wal", "-shm"):
        source = path.with_name(path.name + sfx)
        if source.exists():
            target = path.with_name(base + sfx)
            source.rename(target)
            moved.append(target)
    return moved
