"""The PostgreSQL ingest store against a real PostgreSQL (a throw-away cluster, one database
per test): each (zone, seq) stored once, a differing repeat refused and counted, gaps and
announced ranges, the same answers as the SQLite store; four workers writing their shares
and redeliveries of others' in shuffled batches at once lose nothing and deadlock never; the
password comes from the URL or a 0600 password_file and never shows in an error; the
plain-table fallback is logged once."""

from __future__ import annotations

import logging
import random
import threading
from pathlib import Path
from typing import Any

import pytest

from meshems.adapters.ingest_pg import PostgresStore, read_password_file, redact
from meshems.cloud.store import open_store
from meshems.core.cloud_config import parse_cloud_config
from meshems.core.errors import ConfigError
from meshems.core.ingest_ledger import GapNotice
from meshems.core.ingest_rows import StoreError
from tests.adapters.test_ingest_store import rec

pytestmark = pytest.mark.integration


@pytest.fixture
def url(pg_server: Any) -> str:
    return pg_server.url(pg_server.new_database())


@pytest.fixture
def store(url: str) -> PostgresStore:
    s = PostgresStore(url)
    yield s
    s.close()


def test_store_once_repeat_is_no_op_and_a_differing_repeat_is_a_conflict(store: PostgresStore) -> None:
    out = store.ingest([rec(1), rec(2), rec(2)])
    assert len(out.new) == 2 and len(out.duplicates) == 1
    out = store.ingest([rec(2), rec(3, kw=7.0), rec(3, kw=9.0)])
    assert len(out.new) == 1 and len(out.duplicates) == 1 and len(out.conflicts) == 1
    out = store.ingest([rec(3, kw=8.0)])
    assert out.conflicts[0].code == "E_DUPLICATE_DIFFERS" and not out.new
    assert store.count("z1") == 3
    assert store.query("z1", device="n1-meter")[-1]["values"] == {"power_kw": 7.0}  # never replaced
    (row,) = store.zones(now_s=200.0)
    assert (row.duplicates, row.conflicts) == (2, 2)
    assert row.ledger.watermark == 3


def test_gaps_and_announced_ranges_survive_reopening(url: str) -> None:
    s = PostgresStore(url)
    s.ingest([rec(1), rec(5)], [GapNotice("z1", 2, 3, "age")])
    s.close()
    s = PostgresStore(url)
    try:
        led = s.ledger("z1")
        assert led.watermark == 3 and led.missing == ((4, 4),) and led.announced == ((2, 3),)
        s.ingest([], [GapNotice("z2", 1, 4)])  # a zone known only from a notice
        s.ingest([rec(4)])
        assert s.ledger("z1").watermark == 5 and s.ledger("z2").watermark == 4
    finally:
        s.close()


def test_zones_query_and_twin_answer_as_sqlite_does(store: PostgresStore, tmp_path: Path) -> None:
    from meshems.adapters.ingest_store import SqliteStore

    lite = SqliteStore(tmp_path / "ingest.sqlite3")
    batch = [rec(1, "n1", 1.0), rec(2, "n2", 2.0), rec(3, "n1", 3.0), rec(1, zone="z2")]
    try:
        for s in (store, lite):
            s.ingest(batch)
        for s in (store, lite):
            rows = {r.ledger.zone: r.to_dict(now_s=110.0) for r in s.zones(now_s=110.0)}
            assert set(rows) == {"z1", "z2"} and rows["z1"]["publisher"] == "n1"
            assert rows["z1"]["lag_s"] == pytest.approx(7.0) and rows["z1"]["msgs_s"] == pytest.approx(0.1)
            assert [r["seq"] for r in s.query("z1", since_s=102.5)] == [3]
        assert [z.to_dict(110.0) for z in store.zones(110.0)] == [z.to_dict(110.0) for z in lite.zones(110.0)]
        assert store.query("z1", node="n1") == lite.query("z1", node="n1")
        assert store.query("z1", device="n1-meter") == lite.query("z1", device="n1-meter")
        assert store.twin("z1") == lite.twin("z1")
        twin = {t["device"]: t for t in store.twin("z1")}
        assert twin["n1-meter"]["values"] == {"power_kw": 3.0} and twin["n1-meter"]["seq"] == 3
        with pytest.raises(ConfigError):
            store.twin("nope")
    finally:
        lite.close()


def test_four_concurrent_writers_store_every_seq_once(url: str) -> None:
    """Like a shared subscription: each writer takes its own share of three zones' 600 seqs
    plus redeliveries of others' (every 5th seq), shuffled, in batches of 50 at once; one
    also sends differing repeats. Nothing is lost or stored twice, no ledger update is lost
    (a share is in no other writer's batches), no batch fails."""
    zones, n, writers = ("za", "zb", "zc"), 200, 4
    errors: list[BaseException] = []
    start = threading.Barrier(writers)
    shares = {
        k: [(z, seq) for z in zones for seq in range(1, n + 1) if seq % writers == k] for k in range(writers)
    }
    again = [(z, seq) for z in zones for seq in range(1, n + 1) if seq % 5 == 0]

    def work(k: int) -> None:
        rng = random.Random(k)
        s = PostgresStore(url)
        try:
            mine = shares[k] + [key for key in again if key[1] % writers != k]
            items = [rec(seq, zone=z) for z, seq in mine]
            rng.shuffle(items)
            if k == 0:
                items += [rec(seq, kw=99.0, zone="zb") for seq in (7, 8)]
            start.wait(10)
            for i in range(0, len(items), 50):
                s.ingest(items[i : i + 50])
        except BaseException as exc:
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors, errors
    s = PostgresStore(url)
    try:
        rows = {r.ledger.zone: r for r in s.zones(now_s=1000.0)}
        for z in zones:
            assert s.count(z) == n and rows[z].ledger.received == ((1, n),) and rows[z].ledger.missing == ()
            assert rows[z].duplicates == (writers - 1) * (n // 5)
        assert rows["zb"].conflicts == 2 and rows["za"].conflicts == 0
        assert {r["values"]["power_kw"] for r in s.query("zb", device="n1-meter")} == {1.0}
    finally:
        s.close()


def test_password_from_a_0600_file_and_never_in_messages(pg_server: Any, tmp_path: Path) -> None:
    db = pg_server.new_database()
    bare = pg_server.url(db, with_password=False)
    pw_file = tmp_path / "pg.password"
    pw_file.write_text(pg_server.password + "\n")
    pw_file.chmod(0o644)
    with pytest.raises(ConfigError, match="chmod 600"):
        read_password_file(pw_file)
    pw_file.chmod(0o600)
    cfg = {"broker_host": "b", "ca_file": "ca", "cert_file": "c", "key_file": "k", "store": bare,
           "password_file": str(pw_file)}  # fmt: skip
    s = open_store(parse_cloud_config(cfg, str(tmp_path / "cloud.yaml")))
    try:
        s.ingest([rec(1)])
        assert s.ledger("z1").watermark == 1
    finally:
        s.close()
    with pytest.raises(StoreError, match="password authentication failed") as exc:
        PostgresStore(bare, password="wrong-" + pg_server.password[:6])
    assert pg_server.password[:6] not in exc.value.message
    with pytest.raises(StoreError) as exc:  # a URL's password: redacted where the URL is named
        PostgresStore(pg_server.url("no_such_db"))
    assert pg_server.password not in exc.value.message and ":***@" in exc.value.message
    assert pg_server.password not in redact(pg_server.url(db))
    with pytest.raises(ConfigError, match="password_file: only a postgresql"):
        parse_cloud_config({**cfg, "store": "ingest.sqlite3"}, "cloud.yaml")


def test_plain_table_fallback_is_logged_once_across_reconnects(url: str, caplog: Any) -> None:
    caplog.set_level(logging.INFO, logger="meshems")
    s = PostgresStore(url)
    try:
        s.ingest([rec(1)])
        s.db.close()  # the server went away and came back: the next batch reconnects
        s.ingest([rec(2)])
        assert s.ledger("z1").watermark == 2
        hyper = s.db.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone()[0]
    finally:
        s.close()
    codes = [getattr(r, "code", "") for r in caplog.records]
    expected = "I_STORE_HYPERTABLE" if hyper else "I_STORE_PLAIN_TABLE"
    assert codes.count(expected) == 1, codes
