"""The cloud ingest's PostgreSQL store (psycopg 3): the same methods as the SQLite store, for
many ingest workers on many machines writing one database.

A batch is one transaction: COPY (binary) into a temporary staging table, then
`INSERT … SELECT … ORDER BY zone, seq ON CONFLICT DO NOTHING RETURNING`: the primary key
arbitrates (zone, seq) between concurrent workers (a key another open transaction holds waits
for it), the stored digests of the keys not inserted are read back for `admit` to tell a
repeat from E_DUPLICATE_DIFFERS; the new records' readings are copied too. Only then are the
zones' ledger rows created or locked in one sorted upsert (held until the commit), merged by
the core and written back, so no update is lost and sorted order keeps concurrent workers
free of deadlocks. `readings` becomes a TimescaleDB hypertable when the extension is there.
Must never log or print the password.
"""

from __future__ import annotations

import stat
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from meshems.core.errors import ConfigError
from meshems.core.ingest_ledger import Admitted, GapNotice, ZoneLedger, admit
from meshems.core.ingest_records import Incoming
from meshems.core.ingest_rows import (
    StoreError,
    ZoneRow,
    first_of_batch,
    ledger_from_json,
    ledger_to_json,
    reading_rows,
    reading_values,
    record_dict,
)
from meshems.core.telemetry import parse_payload
from meshems.logs import log

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
  zone TEXT NOT NULL, seq BIGINT NOT NULL, kind TEXT NOT NULL, node TEXT NOT NULL,
  term BIGINT NOT NULL, idx BIGINT NOT NULL, publisher TEXT NOT NULL,
  received_at TIMESTAMPTZ NOT NULL, digest TEXT NOT NULL, payload BYTEA NOT NULL,
  PRIMARY KEY (zone, seq));
CREATE INDEX IF NOT EXISTS records_by_time ON records (zone, received_at);
CREATE INDEX IF NOT EXISTS records_brin_time ON records USING brin (received_at);
CREATE TABLE IF NOT EXISTS readings (
  zone TEXT NOT NULL, device TEXT NOT NULL, seq BIGINT NOT NULL, node TEXT NOT NULL,
  received_at TIMESTAMPTZ NOT NULL, state TEXT NOT NULL, reading JSONB NOT NULL);
CREATE INDEX IF NOT EXISTS readings_by_device ON readings (zone, device, seq);
CREATE TABLE IF NOT EXISTS zones (
  zone TEXT PRIMARY KEY, ledger TEXT NOT NULL,
  duplicates BIGINT NOT NULL DEFAULT 0, conflicts BIGINT NOT NULL DEFAULT 0);
"""
#: held while a worker creates the schema, so workers starting together do not race
SCHEMA_LOCK = 0x6D657368
RECORD_TYPES = ["text", "int8", "text", "text", "int8", "int8", "text", "timestamptz", "text", "bytea"]
READING_TYPES = ["text", "text", "int8", "text", "timestamptz", "text", "jsonb"]
#: a deadlock or serialization failure is retried this often before it is a StoreError
RETRIES = 5
EPOCH = "extract(epoch FROM received_at)::float8"


def redact(url: str) -> str:
    """The URL with its password (if any) replaced by ***, for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "postgresql://***"
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))


def read_password_file(path: Path) -> str:
    """The password in `path` (first line); ConfigError when missing, empty, or readable by
    group or others (chmod 600), as the project's other secrets."""
    try:
        st = path.stat()
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"password_file: no such file {path}", key="password_file", path=str(path)
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"password_file: cannot read {path}: {exc}", key="password_file") from None
    if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o077:
        raise ConfigError(
            f"{path} has mode {stat.S_IMODE(st.st_mode):04o}; the database password must not be "
            f"readable by group or others: chmod 600 {path}",
            key="password_file",
            path=str(path),
        )
    password = text.splitlines()[0].strip() if text.strip() else ""
    if not password:
        raise ConfigError(f"password_file: {path} is empty", key="password_file", path=str(path))
    return password


def _ts(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


class PostgresStore:
    """`PostgresStore(url, password=None)`: connects, creates the schema if missing (and the
    hypertable where TimescaleDB is available). One instance per thread; any number of
    workers may write the same database."""

    def __init__(self, url: str, password: str | None = None, connect_timeout_s: int = 10) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigError(
                "store: a postgresql:// store needs psycopg 3: pip install 'meshems[cloud]'", key="store"
            ) from None
        self._psycopg = psycopg
        self.url, self.where = url, redact(url)
        self._password, self._timeout = password, connect_timeout_s
        self.hypertable, self._told = False, False
        self.db = self._connect()

    # -- connection ----------------------------------------------------------------------

    def _connect(self) -> Any:
        """A connection with the schema in place and this session's staging table."""
        psycopg = self._psycopg
        extra = {"password": self._password} if self._password is not None else {}
        try:
            db = psycopg.connect(
                self.url, connect_timeout=self._timeout, application_name="meshems-ingest", **extra
            )
        except psycopg.Error as exc:
            raise StoreError(f"{self.where}: cannot open the ingest store: {self._clean(exc)}") from None
        try:
            with db.transaction():
                db.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                db.execute(SCHEMA)
                self.hypertable, why = self._hypertable(db)
                db.execute(
                    "CREATE TEMP TABLE IF NOT EXISTS ingest_stage (LIKE records) ON COMMIT DELETE ROWS"
                )
        except psycopg.Error as exc:
            db.close()
            raise StoreError(f"{self.where}: cannot create the ingest schema: {self._clean(exc)}") from None
        if not self._told:  # once, not on every reconnect
            self._told = True
            if self.hypertable:
                log("info", "I_STORE_HYPERTABLE", "readings is a TimescaleDB hypertable", store=self.where)
            else:
                log("info", "I_STORE_PLAIN_TABLE", f"readings is a plain table: {why}", store=self.where)
        return db

    def _clean(self, exc: BaseException) -> str:
        text = str(exc).strip().replace("\n", " ")
        return text.replace(self._password, "***") if self._password else text

    def _hypertable(self, db: Any) -> tuple[bool, str]:
        """Make `readings` a hypertable when TimescaleDB can be had: (done, why not)."""
        psycopg = self._psycopg
        q = "SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb'"
        if db.execute(q).fetchone() is None:
            return False, "the timescaledb extension is not installed on the server"
        try:
            with db.transaction():  # a savepoint: a refusal leaves the schema in place
                db.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
                db.execute(
                    "SELECT create_hypertable('readings', 'received_at', if_not_exists => TRUE, "
                    "migrate_data => TRUE)"
                )
        except psycopg.Error as exc:
            return False, f"CREATE EXTENSION timescaledb failed: {self._clean(exc)}"
        return True, ""

    def close(self) -> None:
        self.db.close()

    # -- writing -------------------------------------------------------------------------

    def ingest(self, records: Sequence[Incoming], gaps: Sequence[GapNotice] = ()) -> Admitted:
        """Store one batch in one transaction (see the module's docstring): new (zone, seq)
        stored, a repeat compared by digest, the zones' ledgers merged; safe against any
        number of other workers on the same database."""
        psycopg = self._psycopg
        retryable = (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure)
        for attempt in range(RETRIES):
            try:
                if self.db.closed or self.db.broken:
                    self.db = self._connect()
                with self.db.transaction():
                    return self._ingest(records, gaps)
            except retryable as exc:
                if attempt == RETRIES - 1:
                    raise StoreError(f"{self.where}: a batch kept conflicting: {self._clean(exc)}") from None
            except psycopg.Error as exc:
                msg = f"{self.where}: storing a batch of {len(records)} failed: {self._clean(exc)}"
                raise StoreError(msg) from None
        raise AssertionError("unreachable")

    def _ingest(self, records: Sequence[Incoming], gaps: Sequence[GapNotice]) -> Admitted:
        cur = self.db.cursor()
        firsts = first_of_batch(records)
        inserted: set[tuple[str, int]] = set()
        stored: dict[tuple[str, int], str] = {}
        if firsts:
            with cur.copy("COPY ingest_stage FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(RECORD_TYPES)
                for r in firsts:
                    a = r.arrival
                    cp.write_row((a.zone, a.seq, r.kind, r.node, r.term, r.index, a.publisher,
                                  _ts(a.received_s), a.digest, r.payload))  # fmt: skip
            cur.execute(
                "INSERT INTO records SELECT * FROM ingest_stage ORDER BY zone, seq "
                "ON CONFLICT (zone, seq) DO NOTHING RETURNING zone, seq"
            )
            inserted = {(z, int(s)) for z, s in cur.fetchall()}
            if len(inserted) < len(firsts):  # repeats: what is stored decides (committed by now)
                cur.execute(
                    "SELECT r.zone, r.seq, r.digest FROM records r JOIN ingest_stage s USING (zone, seq)"
                )
                stored = {(z, int(s)): d for z, s, d in cur.fetchall() if (z, int(s)) not in inserted}
            with cur.copy("COPY readings FROM STDIN (FORMAT BINARY)") as cp:  # before any zone lock
                cp.set_types(READING_TYPES)
                for r in firsts:
                    a = r.arrival
                    if (a.zone, a.seq) in inserted:
                        for device, state, reading in reading_rows(r):
                            cp.write_row((a.zone, device, a.seq, r.node, _ts(a.received_s), state, reading))
        zones = sorted({r.arrival.zone for r in records} | {g.zone for g in gaps})
        cur.execute(  # creates or row-locks each zone, in sorted order
            "INSERT INTO zones (zone, ledger) SELECT z, '' FROM unnest(%s::text[]) AS z ORDER BY z "
            "ON CONFLICT (zone) DO UPDATE SET zone = excluded.zone RETURNING zone, ledger",
            (zones,),
        )
        ledgers: dict[str, ZoneLedger] = {z: ledger_from_json(z, t) for z, t in cur.fetchall() if t}
        out = admit(ledgers, [r.arrival for r in records], stored, gaps)
        if {(a.zone, a.seq) for a in out.new} != inserted:  # rolled back with the readings above
            raise StoreError(f"{self.where}: the batch's inserts and the ledger's decision disagree")
        names = sorted(out.ledgers)
        cur.execute(
            "UPDATE zones SET ledger = v.ledger, duplicates = zones.duplicates + v.dups, "
            "conflicts = zones.conflicts + v.conflicts FROM (SELECT unnest(%s::text[]) AS zone, "
            "unnest(%s::text[]) AS ledger, unnest(%s::int8[]) AS dups, unnest(%s::int8[]) AS conflicts) v "
            "WHERE zones.zone = v.zone",
            (
                names,
                [ledger_to_json(out.ledgers[z]) for z in names],
                [out.per_zone.get(z, {}).get("duplicates", 0) for z in names],
                [out.per_zone.get(z, {}).get("conflicts", 0) for z in names],
            ),
        )
        return out

    # -- reading -------------------------------------------------------------------------

    def _rows(self, q: str, args: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            rows = self.db.execute(q, args).fetchall()
            self.db.commit()
            return rows
        except self._psycopg.Error as exc:
            self.db.rollback()
            raise StoreError(f"{self.where}: reading the ingest store failed: {self._clean(exc)}") from None

    def zones(self, now_s: float, rate_window_s: float = 60.0) -> list[ZoneRow]:
        """Every zone's ledger and counters, with messages/s over the last `rate_window_s`."""
        q = "SELECT zone, COUNT(*) FROM records WHERE received_at > to_timestamp(%s) GROUP BY zone"
        rates = dict(self._rows(q, (now_s - rate_window_s,)))
        rows = self._rows(
            "SELECT zone, ledger, duplicates, conflicts FROM zones WHERE ledger <> '' ORDER BY zone"
        )
        return [
            ZoneRow(ledger_from_json(z, t), int(d), int(c), rates.get(z, 0) / rate_window_s)
            for z, t, d, c in rows
        ]

    def ledger(self, zone: str) -> ZoneLedger:
        rows = self._rows("SELECT ledger FROM zones WHERE zone = %s AND ledger <> ''", (zone,))
        if not rows:
            raise ConfigError(f"{self.where}: no zone {zone!r} in the ingest store", zone=zone)
        return ledger_from_json(zone, rows[0][0])

    def count(self, zone: str) -> int:
        return int(self._rows("SELECT COUNT(*) FROM records WHERE zone = %s", (zone,))[0][0])

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
        by_node = " AND node = %s" if node else ""
        if device is not None:
            q = f"SELECT seq, {EPOCH}, node, device, state, reading FROM readings WHERE zone = %s"
            q += f" AND device = %s AND received_at >= to_timestamp(%s){by_node} ORDER BY seq LIMIT %s"
            rows = self._rows(q, [zone, device, since_s, *([node] if node else []), limit])
            return [
                {"seq": int(s), "received_s": t, "node": n, "device": d, "state": st, **reading_values(r)}
                for s, t, n, d, st, r in rows
            ]
        q = f"SELECT seq, {EPOCH}, kind, node, term, idx, publisher, payload FROM records WHERE zone = %s"
        q += f" AND received_at >= to_timestamp(%s){by_node} ORDER BY seq LIMIT %s"
        rows = self._rows(q, [zone, since_s, *([node] if node else []), limit])
        return [
            record_dict(int(s), t, kind, n, int(term), int(idx), pub, parse_payload(bytes(p)).get("data"))
            for s, t, kind, n, term, idx, pub, p in rows
        ]

    def twin(self, zone: str) -> list[dict[str, Any]]:
        """The latest reading of every device of the zone (the one of the highest seq)."""
        self.ledger(zone)
        rows = self._rows(
            f"SELECT DISTINCT ON (device) device, node, seq, {EPOCH}, state, reading FROM readings "
            "WHERE zone = %s ORDER BY device, seq DESC",
            (zone,),
        )
        return [
            {"device": d, "node": n, "seq": int(s), "received_s": t, "state": st, **reading_values(r)}
            for d, n, s, t, st, r in rows
        ]
