"""The cloud ingest worker: takes the zones' telemetry off a shared MQTT subscription in
batches, decodes it, stores each batch in one transaction and only then acknowledges it.

Owns the batching loop and its counters. At-least-once from the broker (an unacked message
comes again after a crash) plus insert-or-compare by (zone, seq) in the store gives every
record stored exactly once; a differing repeat is logged as E_DUPLICATE_DIFFERS and counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

from meshems.adapters.mqtt_subscriber import Message, MqttSubscriber
from meshems.cloud.store import IngestStore, open_store
from meshems.core.cloud_config import CloudIngestConfig
from meshems.core.errors import MeshemsError
from meshems.core.ingest_ledger import BadRecordError, GapNotice
from meshems.core.ingest_records import Incoming, decode
from meshems.logs import log

#: a counters line in the log this often
STATS_PERIOD_S = 10.0


@dataclass
class IngestStats:
    received: int = 0
    stored: int = 0
    duplicates: int = 0
    conflicts: int = 0
    gap_notices: int = 0
    bad: int = 0
    batches: int = 0
    store_errors: int = 0


def make_subscriber(cfg: CloudIngestConfig, client_id: str | None = None) -> MqttSubscriber:
    return MqttSubscriber(
        cfg.broker_host,
        cfg.broker_port,
        cfg.path(cfg.ca_file),
        cfg.path(cfg.cert_file),
        cfg.path(cfg.key_file),
        client_id=client_id or cfg.client_id,
        topic_filter=cfg.subscription,
        session_expiry_s=cfg.session_expiry_s,
        keepalive_s=cfg.keepalive_s,
        receive_maximum=cfg.receive_maximum,
    )


class IngestWorker:
    """`run(stop)` until `stop` is set. The store is opened in the thread that runs."""

    def __init__(
        self,
        cfg: CloudIngestConfig,
        subscriber: MqttSubscriber,
        store: Callable[[], IngestStore] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.cfg, self.sub, self.clock = cfg, subscriber, clock
        self._open_store = store or (lambda: open_store(cfg))
        self.stats = IngestStats()

    def run(self, stop: threading.Event) -> IngestStats:
        store = self._open_store()
        self.sub.start()
        try:
            if not self.sub.subscribed.wait(10.0):
                err = self.sub.last_error
                log("warning", err.code if err else "W_INGEST_SUBSCRIBE", f"not subscribed yet: {err}")
            else:
                log("info", "I_INGEST_SUBSCRIBED", f"subscribed to {self.cfg.subscription}",
                    broker=self.sub.endpoint, client_id=self.sub.client_id)  # fmt: skip
            last_stats = time.monotonic()
            while not stop.is_set():
                batch = self._batch()
                if batch:
                    self._store(store, batch, stop)
                if time.monotonic() - last_stats >= STATS_PERIOD_S:
                    last_stats = time.monotonic()
                    log("info", "I_INGEST_STATS", "ingest counters", **asdict(self.stats))
        finally:
            self.sub.stop()
            store.close()
            log("info", "I_INGEST_STOPPED", "ingest stopped", **asdict(self.stats))
        return self.stats

    def _batch(self) -> list[Message]:
        first = self.sub.get(0.2)
        if first is None:
            return []
        batch = [first]
        deadline = time.monotonic() + self.cfg.batch_wait_s
        while len(batch) < self.cfg.batch_max:
            batch += self.sub.drain(self.cfg.batch_max - len(batch))
            left = deadline - time.monotonic()
            if left <= 0 or len(batch) >= self.cfg.batch_max:
                break
            more = self.sub.get(min(left, 0.01))
            if more is not None:
                batch.append(more)
        return batch

    def _store(self, store: IngestStore, batch: list[Message], stop: threading.Event) -> None:
        now = self.clock()
        records: list[Incoming] = []
        gaps: list[GapNotice] = []
        for m in batch:
            try:
                got = decode(m.topic, m.payload, m.user_props, self.cfg.topic_prefix, now)
            except BadRecordError as exc:
                self.stats.bad += 1
                log("warning", exc.code, exc.message, topic=m.topic)
                continue
            (gaps if isinstance(got, GapNotice) else records).append(got)  # type: ignore[arg-type]
        self.stats.received += len(batch)
        delay = 0.5
        while True:
            try:
                out = store.ingest(records, gaps)
                break
            except MeshemsError as exc:  # not acknowledged: retried here, or redelivered after a restart
                self.stats.store_errors += 1
                log("error", exc.code, f"storing a batch failed, retrying: {exc.message}")
                if stop.wait(delay):
                    return
                delay = min(delay * 2, 10.0)
        for c in out.conflicts:
            log("error", c.code, c.message, **c.context)
        self.stats.stored += len(out.new)
        self.stats.duplicates += len(out.duplicates)
        self.stats.conflicts += len(out.conflicts)
        self.stats.gap_notices += len(out.gaps)
        self.stats.batches += 1
        self.sub.ack(batch)  # only now: a crash before this line gets the batch again
