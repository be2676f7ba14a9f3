"""The cloud ingest against a real mosquitto (TLS 1.3, client certificates): two `meshems
cloud ingest` processes on one shared subscription (into SQLite, and into PostgreSQL), one
killed -9 mid-stream and started again with its session, while the leader's own link
(`MqttLink`) publishes a zone's stream with a dropped range announced on `gaps`, repeats
and one differing repeat. Every seq is stored exactly once, the ledger is contiguous, the
conflict is counted, never stored."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshems.adapters import pki
from meshems.adapters.mqtt_link import MqttLink
from meshems.cloud.store import IngestStore, open_store
from meshems.core import telemetry
from meshems.core.cloud_config import parse_cloud_config
from meshems.core.errors import ConfigError
from tests.integration.test_cluster import wait_until
from tests.mqtt_broker import MosquittoBroker

pytestmark = pytest.mark.integration
ZONE, N, HOLE = "zone-i", 3000, (1501, 1510)


@pytest.fixture
def share_broker(tmp_path: Path) -> Iterator[MosquittoBroker]:
    """The broker queues for an away worker's session beyond mosquitto's default of 1000."""
    folder = tmp_path / "pki"
    pki.init_ca(folder, "test-ca")
    with MosquittoBroker(tmp_path, folder, extra_config=("max_queued_messages 100000",), log_all=False) as b:
        yield b


class Worker:
    def __init__(self, cfg: Path, name: str, folder: Path) -> None:
        self.cfg, self.name, self.folder = cfg, name, folder
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0

    @property
    def log(self) -> Path:
        return self.folder / f"{self.name}-{self.runs}.log"

    def start(self) -> None:
        self.runs += 1
        with open(self.log, "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "meshems", "cloud", "ingest", "--config", str(self.cfg),
                 "--client-id", self.name], stdout=subprocess.DEVNULL, stderr=err,
            )  # fmt: skip
        wait_until(lambda: "I_INGEST_SUBSCRIBED" in self.log.read_text(), 15, f"{self.name} subscribed")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def stop(self) -> dict[str, Any]:
        """SIGTERM and the counters of its final log line ({} when it had none)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        for line in reversed(self.log.read_text().splitlines()):
            if '"I_INGEST_STOPPED"' in line:
                return dict(json.loads(line))
        return {}


def record(seq: int, kw: float | None = None) -> tuple[str, bytes, list[tuple[str, str]]]:
    body = {"node": "n1", "readings": {"n1-meter": {"state": "ok", "values": {"power_kw": kw or seq / 10}}}}
    rec = telemetry.TelemetryRecord(seq, 2, 100 + seq, "node", "n1", body)
    props = [*telemetry.user_properties(seq, 2, 100 + seq, ZONE), ("publisher", "n1"), ("lane", "stream")]
    return telemetry.topic("meshems", ZONE, "node", "n1"), telemetry.payload(rec, ZONE), props


@pytest.fixture(params=["sqlite", "postgresql"])
def store_keys(request: pytest.FixtureRequest) -> dict[str, str]:
    """cloud.yaml's store keys: a SQLite file, or a new database (password in a 0600 file)."""
    if request.param == "sqlite":
        return {"store": "ingest.sqlite3"}
    pg = request.getfixturevalue("pg_server")
    return {"store": pg.url(pg.new_database(), with_password=False), "password_file": str(pg.password_file)}


def test_two_workers_one_killed_store_every_seq_once(
    share_broker: MosquittoBroker, tmp_path: Path, store_keys: dict[str, str]
) -> None:
    b = share_broker
    crt, key = b.client_files("ingest")
    cfg = tmp_path / "cloud.yaml"
    cfg.write_text(yaml.safe_dump({
        "broker_host": b.host, "broker_port": b.port, "ca_file": str(b.ca_file), "cert_file": str(crt),
        "key_file": str(key), "share_group": "ingest", "topic_prefix": "meshems", **store_keys,
        "session_expiry_s": 300,
    }))  # fmt: skip

    def store() -> IngestStore:
        return open_store(parse_cloud_config(yaml.safe_load(cfg.read_text()), str(cfg)))

    pub_crt, pub_key = b.client_files("n1", "node")
    link = MqttLink(b.host, b.port, b.ca_file, pub_crt, pub_key, "pub-n1", reconnect_min_s=0.2)
    workers = [Worker(cfg, "w1", tmp_path), Worker(cfg, "w2", tmp_path)]
    published = 0
    try:
        for w in workers:
            w.start()
        link.start()
        wait_until(lambda: link.connected, 10, "the publisher's connection")

        def publish(seqs: range, pace_s: float = 0.0) -> None:
            nonlocal published
            for seq in seqs:
                if HOLE[0] <= seq <= HOLE[1]:
                    continue
                link.publish(*record(seq))
                published += 1
                if pace_s and seq % 50 == 0:
                    time.sleep(pace_s)

        publish(range(1, 1001), pace_s=0.02)
        workers[0].kill()  # mid-stream: its in-flight and queued messages wait in its session
        body = telemetry.gap_notice(ZONE, *HOLE, "bytes", "drop_oldest")
        link.publish(telemetry.topic("meshems", ZONE, "gaps"), body, [("first", "1501"), ("last", "1510")])
        publish(range(1001, 2001), pace_s=0.02)
        workers[0].start()  # the same client id: its session resumes
        publish(range(2001, N + 1), pace_s=0.02)
        publish(range(1, 101))  # a new leader sends again from the watermark: same payloads
        link.publish(*record(5, kw=99.0)[:2], record(5)[2])  # a repeat that differs
        published += 1

        reader = store()  # one reader for the polls: each read sees the last commits

        def drained() -> bool:
            try:
                return (
                    reader.ledger(ZONE).watermark == N
                    and reader.count(ZONE) == N - 10
                    and _conflicts(reader) == 1
                )
            except ConfigError:  # no record of the zone yet
                return False

        try:
            wait_until(drained, 20, f"seq 1..{N} stored")
        finally:
            reader.close()
    finally:
        link.stop()
        stats = [w.stop() for w in workers]
    s = store()
    try:
        led = s.ledger(ZONE)
        assert led.missing == () and led.announced == (HOLE,) and led.received == ((1, 1500), (1511, N))
        assert s.count(ZONE) == N - 10  # (zone, seq) is the key: stored once each
        (row,) = s.zones(time.time())
        assert row.conflicts == 1 and row.duplicates >= 100
        by_seq = {r["seq"]: r["values"] for r in s.query(ZONE, device="n1-meter")}
        assert by_seq[5] == {"power_kw": 0.5}  # the differing repeat never replaced it
    finally:
        s.close()
    assert stats[0].get("stored", 0) > 0 and stats[1].get("stored", 0) > 0, stats  # both took a share
    logs = "".join(p.read_text() for p in tmp_path.glob("w*.log"))
    assert '"E_DUPLICATE_DIFFERS"' in logs
    if "password_file" in store_keys:  # the workers name the store, never its password
        assert Path(store_keys["password_file"]).read_text().strip() not in logs
        assert "I_STORE_PLAIN_TABLE" in logs or "I_STORE_HYPERTABLE" in logs


def _conflicts(s: IngestStore) -> int:
    return sum(z.conflicts for z in s.zones(time.time()))
