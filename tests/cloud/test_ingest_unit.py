"""Unit tests of the cloud ingest without a broker: the cloud config (errors name the key),
the worker's batching with a fake subscriber (acknowledged only after the store committed,
conflicts counted, foreign messages skipped), and `meshems cloud zones | query | twin` on a
store in a temp folder."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshems.adapters.ingest_store import SqliteStore
from meshems.adapters.mqtt_subscriber import Message
from meshems.cli import main
from meshems.cloud.ingest import IngestWorker
from meshems.cloud.store import open_store
from meshems.core import telemetry
from meshems.core.cloud_config import parse_cloud_config
from meshems.core.errors import ConfigError

BASE = {"broker_host": "127.0.0.1", "ca_file": "ca.crt", "cert_file": "w.crt", "key_file": "w.key"}


def test_config_defaults_and_subscription(tmp_path: Path) -> None:
    cfg = parse_cloud_config({**BASE, "share_group": "g1", "topic_prefix": "a/b"}, str(tmp_path / "c.yaml"))
    assert cfg.subscription == "$share/g1/a/b/+/#"
    assert cfg.path(cfg.store) == tmp_path / "ingest.sqlite3"


@pytest.mark.parametrize(
    ("extra", "key"),
    [({"brokr_port": 1}, "brokr_port"), ({"broker_port": 0}, "broker_port"),
     ({"share_group": "A B"}, "share_group"), ({"topic_prefix": "x/#"}, "topic_prefix"),
     ({"batch_max": "5"}, "batch_max")],
)  # fmt: skip
def test_config_errors_name_the_key(extra: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_cloud_config({**BASE, **extra}, "cloud.yaml")
    assert exc.value.context["key"] == key and f"cloud.yaml: {key}:" in exc.value.message


def test_a_missing_key_is_named_and_an_exposed_password_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cert_file"):
        parse_cloud_config({k: v for k, v in BASE.items() if k != "cert_file"}, "cloud.yaml")
    pw = tmp_path / "pg.password"
    pw.write_text("s3cret-pass\n")
    pw.chmod(0o640)
    doc = {**BASE, "store": "postgresql://u@127.0.0.1:1/x", "password_file": "pg.password"}
    cfg = parse_cloud_config(doc, str(tmp_path / "cloud.yaml"))
    assert cfg.postgres and cfg.path(cfg.password_file or "") == pw
    with pytest.raises(ConfigError, match="chmod 600") as exc:  # refused before any connection
        open_store(cfg)
    assert exc.value.context["key"] == "password_file" and "s3cret" not in exc.value.message


def msg(seq: int, mid: int, kw: float = 1.0, zone: str = "zone-a") -> Message:
    body = {"readings": {"n1-meter": {"state": "ok", "values": {"power_kw": kw}}}}
    rec = telemetry.TelemetryRecord(seq, 1, seq, "node", "n1", body)
    props = (*telemetry.user_properties(seq, 1, seq, zone), ("publisher", "n1"))
    return Message(f"meshems/{zone}/telemetry/node/n1", telemetry.payload(rec, zone), props, mid, 1)


class FakeSubscriber:
    """Hands out its messages, records acks, and asks the worker to stop once drained."""

    endpoint, client_id = "fake:1", "fake"

    def __init__(self, messages: list[Message], stop: threading.Event, store_path: Path) -> None:
        self.pending, self.stop_when_done, self.store_path = list(messages), stop, store_path
        self.acked: list[int] = []
        self.stored_at_ack: list[int] = []
        self.subscribed = threading.Event()
        self.last_error = None

    def start(self) -> None:
        self.subscribed.set()

    def stop(self) -> None:
        pass

    def get(self, timeout_s: float) -> Message | None:
        if not self.pending:
            self.stop_when_done.set()
            return None
        return self.pending.pop(0)

    def drain(self, most: int) -> list[Message]:
        out, self.pending = self.pending[:most], self.pending[most:]
        return out

    def ack(self, messages: list[Message]) -> None:
        s = SqliteStore(self.store_path)  # what another reader sees when the ack leaves
        self.stored_at_ack.append(s.count("zone-a"))
        s.close()
        self.acked += [m.mid for m in messages]


def test_worker_stores_then_acks_and_counts(tmp_path: Path) -> None:
    cfg = parse_cloud_config({**BASE, "batch_max": 3}, str(tmp_path / "cloud.yaml"))
    stop = threading.Event()
    msgs = [msg(1, 1), msg(2, 2), msg(2, 3), msg(3, 4, kw=5.0), msg(3, 5, kw=6.0)]
    bad = Message("meshems/zone-a/setpoints", b"\xc1", (), 6, 1)
    gap = Message("meshems/zone-a/gaps", telemetry.gap_notice("zone-a", 4, 6, "age", "drop_oldest"), (), 7, 1)
    sub = FakeSubscriber([*msgs, bad, gap, msg(7, 8)], stop, tmp_path / "ingest.sqlite3")
    stats = IngestWorker(cfg, sub).run(stop)  # type: ignore[arg-type]
    assert (stats.received, stats.stored, stats.duplicates, stats.conflicts, stats.bad) == (8, 4, 1, 1, 1)
    assert sorted(sub.acked) == list(range(1, 9))  # the bad one too: it would only come again
    assert sub.stored_at_ack[0] >= 2  # the first batch was committed before its ack
    s = SqliteStore(tmp_path / "ingest.sqlite3")
    led = s.ledger("zone-a")
    assert led.watermark == 7 and led.announced == ((4, 6),)
    by_seq = {r["seq"]: r["values"] for r in s.query("zone-a", device="n1-meter")}
    assert by_seq[3] == {"power_kw": 5.0}  # the first of seq 3 is kept
    assert s.twin("zone-a")[0]["seq"] == 7
    s.close()


def _cli_store(tmp_path: Path) -> Path:
    cfg = tmp_path / "cloud.yaml"
    cfg.write_text(yaml.safe_dump({**BASE, "store": "db.sqlite3"}))
    from meshems.core.ingest_records import decode

    s = SqliteStore(tmp_path / "db.sqlite3")
    recs = [decode(m.topic, m.payload, m.user_props, "meshems", 1e12) for m in (msg(1, 1), msg(3, 2, kw=4.0))]
    s.ingest(recs)  # type: ignore[arg-type]
    s.close()
    return cfg


def test_cli_zones_query_twin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = str(_cli_store(tmp_path))
    assert main(["cloud", "zones", "--config", cfg, "-o", "json"]) == 0
    (zone,) = json.loads(capsys.readouterr().out)
    assert zone["contiguous_through"] == 1 and zone["missing"] == [[2, 2]] and zone["last_seq"] == 3
    assert main(["cloud", "zones", "--config", cfg]) == 0
    assert "zone-a" in capsys.readouterr().out
    query = ["cloud", "query", "--config", cfg, "--zone", "zone-a"]
    assert main([*query, "--device", "n1-meter", "-o", "csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split(",")[:2] == ["seq", "received_s"] and lines[0].endswith("power_kw")
    assert lines[2].endswith(",4.0")
    assert main([*query, "--since", "2d", "-o", "json"]) == 0
    assert [r["seq"] for r in json.loads(capsys.readouterr().out)] == [1, 3]
    assert main(["cloud", "twin", "--config", cfg, "--zone", "zone-a", "-o", "json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["values"] == {"power_kw": 4.0}
    assert main(["cloud", "twin", "--config", cfg, "--zone", "nope"]) == 2
    assert main([*query, "--since", "soon"]) == 2
