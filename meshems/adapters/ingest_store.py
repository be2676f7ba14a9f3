"""The cloud ingest's embedded store: SQLite in WAL mode, one file that several ingest
processes on one machine share (each batch is one `BEGIN IMMEDIATE` transaction).

Owns the schema and its queries: records keyed (zone, seq) with payload and digest, each
node record's readings per device, and per zone the ledger (`core.ingest_ledger`) with the
repeat and conflict counters. Decisions are the core's (`admit`); this file only reads what
is stored, writes what the core decided, inside the same transaction. A PostgreSQL store
does the same with PostgreSQL (`adapters.ingest_pg`); what both share is `core.ingest_rows`.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from meshems.core.errors import ConfigError
from meshems.core.ingest_ledger import Admitted, GapNotice, ZoneLedger, admit
from meshems.core.ingest_records import Incoming
from meshems.core.ingest_rows import (
    StoreError,
    ZoneRow,
    admitted_records,
    ledger_from_json,
    ledger_to_json,
    reading_rows,
    reading_values,
    record_dict,
)
from meshems.core.telemetry import parse_payload

__all__ = ["CHUNK", "SCHEMA", "SqliteStore", "StoreError", "ZoneRow"]

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
  zone TEXT NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL, node TEXT NOT NULL,
  term INTEGER NOT NULL, idx INTEGER NOT NULL, publisher TEXT NOT NULL,
  received_s REAL NOT NULL, digest TEXT NOT NULL, payload BLOB NOT NULL,
  PRIMARY KEY (zone, seq)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS records_by_time ON records (zone, received_s);
CREATE TABLE IF NOT EXISTS readings (
  zone TEXT NOT NULL, device TEXT NOT NULL, seq INTEGER NOT NULL, node TEXT NOT NULL,
  received_s REAL NOT NULL, state TEXT NOT NULL, reading TEXT NOT NULL,
  PRIMARY KEY (zone, device, seq)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS zones (
  zone TEXT PRIMARY KEY, ledger TEXT NOT NULL,
  duplicates INTEGER NOT NULL DEFAULT 0, conflicts INTEGER NOT NULL DEFAULT 0);
"""
#: SQLite's bound-parameter limit is 32766 since 3.32; stay well below it
CHUNK = 500
#: page cache per connection (KiB): a batch from 1,000 zones dirties pages all over the trees
CACHE_KIB = 65536
#: a reading as stored: json.dumps(reading, sort_keys=True) without an encoder per call
_READING = json.JSONEncoder(sort_keys=True, check_circular=False)


def _open(path: Path, busy_timeout_s: float) -> sqlite3.Connection:
    """A connection to `path` in WAL mode with the schema in place (closed again on failure)."""
    db = sqlite3.connect(str(path), timeout=busy_timeout_s, isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
        db.executescript(SCHEMA)
    except BaseException:
        db.close()
        raise
    return db


class SqliteStore:
    """`SqliteStore(path)`: the file is created with its folder (0700) on first use. Use one
    instance per thread; several processes may share the file."""

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        end = time.monotonic() + busy_timeout_s
        wait_s = 0.01
        while True:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                self.db = _open(self.path, busy_timeout_s)
                break
            except (OSError, sqlite3.Error) as exc:
                # two workers opening a new file at once: switching it to WAL or creating the
                # schema can answer "database is locked" without waiting (SQLite skips the busy
                # handler where waiting could deadlock): try again until the deadline
                busy = isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)
                if not busy or time.monotonic() > end:
                    msg = f"{self.path}: cannot open the ingest store: {exc}"
                    raise StoreError(msg, path=str(self.path)) from None
                time.sleep(wait_s)
                wait_s = min(0.5, wait_s + 0.01)
        #: zone -> (stored text, its ledger): the text is read in every transaction (the file is
        #: authoritative, other workers write it too) but decoded only when it changed
        self._decoded: dict[str, tuple[str, ZoneLedger]] = {}

    def close(self) -> None:
        self.db.close()

    # -- writing -------------------------------------------------------------------------

    def ingest(self, records: Sequence[Incoming], gaps: Sequence[GapNotice] = ()) -> Admitted:
        """Store one batch in one transaction: new (zone, seq) stored, repeats compared with
        what is stored (same digest: nothing; different: a conflict, counted, not stored), the
        zones' ledgers updated. Safe against other processes writing the same file."""
        zones = sorted({r.arrival.zone for r in records} | {g.zone for g in gaps})
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                ledgers = self._ledgers(zones)
                stored = self._digests(records)
                out = admit(ledgers, [r.arrival for r in records], stored, gaps)
                written: list[tuple[str, str, ZoneLedger]] = []
                self._write(records, out, written)
                self.db.execute("COMMIT")
                for zone, text, led in written:  # only once committed: a rollback keeps the old texts
                    self._decoded[zone] = (text, led)
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise StoreError(f"{self.path}: storing a batch of {len(records)} failed: {exc}") from None
        return out

    def _ledgers(self, zones: Sequence[str]) -> dict[str, ZoneLedger]:
        out: dict[str, ZoneLedger] = {}
        for i in range(0, len(zones), CHUNK):
            part = zones[i : i + CHUNK]
            marks = ",".join("?" * len(part))
            q = f"SELECT zone, ledger FROM zones WHERE zone IN ({marks})"
            for zone, text in self.db.execute(q, part):
                known = self._decoded.get(zone)
                if known is None or known[0] != text:
                    known = self._decoded[zone] = (text, ledger_from_json(zone, text))
                out[zone] = known[1]
        return out

    def _digests(self, records: Sequence[Incoming]) -> dict[tuple[str, int], str]:
        """The stored digest of each of the batch's keys that is stored: one query per CHUNK keys
        (a batch from 1,000 zones would otherwise be 1,000 queries)."""
        keys = sorted({(r.arrival.zone, r.arrival.seq) for r in records})
        out: dict[tuple[str, int], str] = {}
        for i in range(0, len(keys), CHUNK):
            part = keys[i : i + CHUNK]
            keys_sql = ",".join(["(?,?)"] * len(part))  # CROSS JOIN: a primary key lookup per key
            q = f"SELECT r.zone, r.seq, r.digest FROM (VALUES {keys_sql}) AS k CROSS JOIN records AS r "
            q += "ON r.zone = k.column1 AND r.seq = k.column2"
            for zone, seq, dig in self.db.execute(q, [x for key in part for x in key]):
                out[(zone, seq)] = dig
        return out

    def _write(
        self, records: Sequence[Incoming], out: Admitted, written: list[tuple[str, str, ZoneLedger]]
    ) -> None:
        rows, readings = [], []
        for r in admitted_records(records, out):
            a = r.arrival
            rows.append((a.zone, a.seq, r.kind, r.node, r.term, r.index, a.publisher, a.received_s, a.digest,
                         r.payload))  # fmt: skip
            for device, state, reading in reading_rows(r):
                readings.append(
                    (a.zone, device, a.seq, r.node, a.received_s, state, _READING.encode(reading))
                )
        self.db.executemany("INSERT INTO records VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
        self.db.executemany("INSERT INTO readings VALUES (?,?,?,?,?,?,?)", readings)
        zones = []
        for zone, led in out.ledgers.items():
            text = ledger_to_json(led)
            tally = out.per_zone.get(zone, {})
            zones.append((zone, text, tally.get("duplicates", 0), tally.get("conflicts", 0)))
            written.append((zone, text, led))
        self.db.executemany(
            "INSERT INTO zones (zone, ledger, duplicates, conflicts) VALUES (?,?,?,?) "
            "ON CONFLICT (zone) DO UPDATE SET ledger = excluded.ledger, "
            "duplicates = duplicates + excluded.duplicates, conflicts = conflicts + excluded.conflicts",
            zones,
        )

    # -- reading -------------------------------------------------------------------------

    def zones(self, now_s: float, rate_window_s: float = 60.0) -> list[ZoneRow]:
        """Every zone's ledger and counters, with messages/s over the last `rate_window_s`."""
        q = "SELECT zone, COUNT(*) FROM records WHERE received_s > ? GROUP BY zone"
        rates = dict(self.db.execute(q, (now_s - rate_window_s,)).fetchall())
        return [
            ZoneRow(ledger_from_json(zone, text), dups, conflicts, rates.get(zone, 0) / rate_window_s)
            for zone, text, dups, conflicts in self.db.execute(
                "SELECT zone, ledger, duplicates, conflicts FROM zones ORDER BY zone"
            )
        ]

    def ledger(self, zone: str) -> ZoneLedger:
        row = self.db.execute("SELECT ledger FROM zones WHERE zone = ?", (zone,)).fetchone()
        if row is None:
            raise ConfigError(f"{self.path}: no zone {zone!r} in the ingest store", zone=zone)
        return ledger_from_json(zone, row[0])

    def count(self, zone: str) -> int:
        return int(self.db.execute("SELECT COUNT(*) FROM records WHERE zone = ?", (zone,)).fetchone()[0])

    def query(
        self,
        zone: str,
        since_s: float = 0.0,
        node: str | None = None,
        device: str | None = None,
        limit: int = 100_000,
    ) -> list[dict[str, Any]]:
        """A zone's records received since `since_s` (oldest first), of one node; with
        `device`, that device's readings instead."""
        self.ledger(zone)  # ConfigError for an unknown zone
        if device is not None:
            q = "SELECT seq, received_s, node, device, state, reading FROM readings"
            q += " WHERE zone = ? AND device = ?"
            args: list[Any] = [zone, device]
            q += " AND received_s >= ?" + (" AND node = ?" if node else "") + " ORDER BY seq LIMIT ?"
            args += [since_s, *([node] if node else []), limit]
            return [
                {"seq": s, "received_s": t, "node": n, "device": d, "state": st, **reading_values(r)}
                for s, t, n, d, st, r in self.db.execute(q, args)
            ]
        q = "SELECT seq, received_s, kind, node, term, idx, publisher, payload FROM records WHERE zone = ?"
        q += " AND received_s >= ?" + (" AND node = ?" if node else "") + " ORDER BY seq LIMIT ?"
        out = []
        for s, t, kind, n, term, idx, pub, payload in self.db.execute(
            q, [zone, since_s, *([node] if node else []), limit]
        ):
            out.append(record_dict(s, t, kind, n, term, idx, pub, parse_payload(payload).get("data")))
        return out

    def twin(self, zone: str) -> list[dict[str, Any]]:
        """The latest reading of every device of the zone (the one of the highest seq)."""
        self.ledger(zone)
        rows = self.db.execute(
            "SELECT device, node, MAX(seq), received_s, state, reading FROM readings WHERE zone = ? "
            "GROUP BY device ORDER BY device",
            (zone,),
        )
        return [
            {"device": d, "node": n, "seq": s, "received_s": t, "state": st, **reading_values(r)}
            for d, n, s, t, st, r in rows
        ]
