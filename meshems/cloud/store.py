"""What the cloud ingest needs of a store, and the store a config's `store:` names.

`IngestStore` is the interface every backend implements: SQLite (WAL) in
`adapters.ingest_store`, PostgreSQL (psycopg 3, batched COPY) in `adapters.ingest_pg`.
Must not hold state of its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from meshems.core.cloud_config import CloudIngestConfig
from meshems.core.ingest_ledger import Admitted, GapNotice, ZoneLedger
from meshems.core.ingest_records import Incoming


class ZoneView(Protocol):
    ledger: ZoneLedger
    duplicates: int
    conflicts: int

    def to_dict(self, now_s: float) -> dict[str, Any]: ...


class IngestStore(Protocol):
    """One batch is one transaction: the store reads the stored digests and ledgers of the
    batch's keys, lets `core.ingest_ledger.admit` decide and writes its decision, so several
    workers may write at once."""

    def ingest(self, records: Sequence[Incoming], gaps: Sequence[GapNotice] = ()) -> Admitted: ...

    def zones(self, now_s: float, rate_window_s: float = 60.0) -> Sequence[ZoneView]: ...

    def ledger(self, zone: str) -> ZoneLedger: ...

    def count(self, zone: str) -> int: ...

    def query(
        self, zone: str, since_s: float = 0.0, node: str | None = None, device: str | None = None,
        limit: int = 100_000,
    ) -> list[dict[str, Any]]: ...  # fmt: skip

    def twin(self, zone: str) -> list[dict[str, Any]]: ...

    def close(self) -> None: ...


def open_store(cfg: CloudIngestConfig) -> IngestStore:
    """The store `cfg.store` names: a SQLite file (relative to the config), or a
    `postgresql://` URL, its password from the URL or from `password_file` (0600)."""
    if cfg.postgres:
        from meshems.adapters.ingest_pg import PostgresStore, read_password_file

        password = read_password_file(cfg.path(cfg.password_file)) if cfg.password_file else None
        return PostgresStore(cfg.store, password)
    from meshems.adapters.ingest_store import SqliteStore

    return SqliteStore(cfg.path(cfg.store))
