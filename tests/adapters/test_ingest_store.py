"""Unit tests for `meshems.adapters.ingest_store`: the SQLite ingest store in a temp folder.

A batch is stored once per (zone, seq); repeats with the same payload change nothing, a
repeat that differs is counted as a conflict and never replaces the stored record; the
ledger survives reopening; two connections (two processes' worth) interleave batches on
one file; a new file another worker is writing opens once it lets go; zones, query and
twin read back what was stored.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from meshems.adapters.ingest_store import SqliteStore
from meshems.core import telemetry
from meshems.core.errors import ConfigError
from meshems.core.ingest_ledger import GapNotice
from meshems.core.ingest_records import Incoming, decode
from meshems.core.ingest_rows import StoreError


def rec(seq: int, node: str = "n1", kw: float = 1.0, zone: str = "z1", at: float = 100.0) -> Incoming:
    body = {"node": node, "readings": {f"{node}-meter": {"state": "ok", "values": {"power_kw": kw}}}}
    payload = telemetry.payload(telemetry.TelemetryRecord(seq, 2, 10 + seq, "node", node, body), zone)
    got = decode(f"meshems/{zone}/telemetry/node/{node}", payload, [("publisher", "n1")], "meshems", at + seq)
    assert isinstance(got, Incoming)
    return got


@pytest.fixture
def store(tmp_path: Path) -> SqliteStore:
    s = SqliteStore(tmp_path / "db" / "ingest.sqlite3")
    yield s
    s.close()


def test_store_once_repeat_is_no_op_and_a_differing_repeat_is_a_conflict(store: SqliteStore) -> None:
    out = store.ingest([rec(1), rec(2), rec(2)])
    assert len(out.new) == 2 and len(out.duplicates) == 1
    out = store.ingest([rec(2), rec(3, kw=7.0), rec(3, kw=9.0)])
    assert len(out.new) == 1 and len(out.duplicates) == 1 and len(out.conflicts) == 1
    out = store.ingest([rec(3, kw=8.0)])
    assert out.conflicts[0].code == "E_DUPLICATE_DIFFERS"
    assert store.count("z1") == 3
    assert store.query("z1", device="n1-meter")[-1]["values"] == {"power_kw": 7.0}  # never replaced
    (row,) = store.zones(now_s=200.0)
    assert (row.duplicates, row.conflicts) == (2, 2)
    assert row.ledger.watermark == 3


def test_ledger_with_gaps_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "ingest.sqlite3"
    s = SqliteStore(path)
    s.ingest([rec(1), rec(5)], [GapNotice("z1", 2, 3, "age")])
    s.close()
    s = SqliteStore(path)
    led = s.ledger("z1")
    assert led.watermark == 3 and led.missing == ((4, 4),) and led.announced == ((2, 3),)
    s.ingest([rec(4)])
    assert s.ledger("z1").watermark == 5
    s.close()


def test_two_connections_interleave_on_one_file(tmp_path: Path) -> None:
    path = tmp_path / "ingest.sqlite3"
    a, b = SqliteStore(path), SqliteStore(path)
    try:
        for i in range(1, 41, 2):
            a.ingest([rec(i), rec(i + 1)])
            b.ingest([rec(i + 1), rec(i)])  # the other worker got the same records again
        led = a.ledger("z1")
        assert led.watermark == 40 and a.count("z1") == 40 and led.missing == ()
        (row,) = b.zones(now_s=200.0)
        assert row.duplicates == 40 and row.conflicts == 0
    finally:
        a.close()
        b.close()


def test_a_new_file_another_worker_is_writing_opens_once_it_lets_go(tmp_path: Path) -> None:
    """Two workers starting at once on a new file: while one writes, switching the file to
    WAL answers "database is locked" at once (no busy wait, SQLite's deadlock rule); the store
    tries again until its busy timeout instead of failing the worker's start."""
    path = tmp_path / "ingest.sqlite3"
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("CREATE TABLE t(a)")
    other.execute("BEGIN IMMEDIATE")
    other.execute("INSERT INTO t VALUES (1)")
    release = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    release.start()
    try:
        s = SqliteStore(path, busy_timeout_s=10.0)
        s.ingest([rec(1)])
        assert s.count("z1") == 1
        s.close()
    finally:
        release.join()
        other.close()


def test_a_file_locked_past_the_busy_timeout_is_an_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "ingest.sqlite3"
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("CREATE TABLE t(a)")
    other.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(
            StoreError, match=r"ingest\.sqlite3: cannot open the ingest store: database is locked"
        ):
            SqliteStore(path, busy_timeout_s=0.2)
    finally:
        other.close()


def test_zones_query_and_twin(store: SqliteStore) -> None:
    store.ingest([rec(1, "n1", 1.0), rec(2, "n2", 2.0), rec(3, "n1", 3.0), rec(1, zone="z2")])
    rows = {r.ledger.zone: r.to_dict(now_s=110.0) for r in store.zones(now_s=110.0)}
    assert set(rows) == {"z1", "z2"}
    assert rows["z1"]["contiguous_through"] == 3 and rows["z1"]["publisher"] == "n1"
    assert rows["z1"]["lag_s"] == pytest.approx(7.0) and rows["z1"]["msgs_s"] == pytest.approx(0.1)
    got = store.query("z1", node="n1")
    assert [r["seq"] for r in got] == [1, 3] and got[0]["data"]["node"] == "n1"
    assert [r["seq"] for r in store.query("z1", since_s=102.5)] == [3]
    twin = {t["device"]: t for t in store.twin("z1")}
    assert twin["n1-meter"]["values"] == {"power_kw": 3.0} and twin["n1-meter"]["seq"] == 3
    assert twin["n2-meter"]["values"] == {"power_kw": 2.0}
    with pytest.raises(ConfigError):
        store.twin("nope")


def test_a_ledger_another_connection_changed_is_read_again(tmp_path: Path) -> None:
    """The store keeps decoded ledgers, but the file stays authoritative: a worker that wrote
    a zone, then saw another worker extend it, continues from the other's ledger."""
    path = tmp_path / "ingest.sqlite3"
    a, b = SqliteStore(path), SqliteStore(path)
    try:
        a.ingest([rec(1), rec(2)])
        b.ingest([rec(3), rec(4)], [GapNotice("z1", 6, 6)])
        a.ingest([rec(5), rec(8)])
        for s in (a, b):
            led = s.ledger("z1")
            assert led.received == ((1, 5), (8, 8)) and led.announced == ((6, 6),)
            assert led.missing == ((7, 7),) and s.count("z1") == 6
        a.ingest([rec(7)])
        assert b.ingest([rec(9)]).ledgers["z1"].watermark == 9
    finally:
        a.close()
        b.close()
