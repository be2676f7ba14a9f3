"""Cloud sync: every node keeps the zone's telemetry stream in a durable outbox; the leader
publishes it to the MQTT broker and commits the broker's acknowledgement watermark.

Owns the outbox, the MQTT link, the leadership of the stream and a worker thread (the window is
`cloud_publisher`'s). Touches the zone state only through committed `cloud_ack` proposals.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Coroutine
from typing import Any

from meshems.adapters.mqtt_link import MqttLink
from meshems.adapters.outbox import Outbox
from meshems.adapters.outbox_file import OutboxError
from meshems.adapters.outbox_records import DropReport, Record, seq_ranges
from meshems.core import commands, telemetry
from meshems.core.cluster import ZoneState
from meshems.core.config import CloudConfig, ClusterConfig
from meshems.core.errors import MeshemsError
from meshems.core.outages import OutageLog
from meshems.logs import log, log_outage
from meshems.node.bridge import Bridge
from meshems.node.cloud_publisher import CloudStats, Publisher

#: commit the watermark at most this often (and when it moved by ACK_BATCH records)
ACK_PERIOD_S = 0.5
ACK_BATCH = 2000
#: derived records held in memory while the outbox cannot be written (about 200 MB at most)
MAX_UNSTORED = 200_000


class CloudSync:
    """A node's cloud sync: the Raft thread hands derived records over a queue (`on_applied`);
    the worker stores them, and publishes while this node leads.

    Why there is no gap across a leader change: the stream is not the leader's own. Every
    replica derives the same numbered records from the entries it applies (core/telemetry.py)
    and appends them to its own SQLite outbox; the leader publishes from the replicated
    watermark `ZoneState.cloud_acked` onwards and, as the broker acknowledges, commits
    `cloud_ack(seq)` through Raft; every node prunes its outbox through it. A new leader
    therefore holds every record above the watermark and resumes there. Records the old
    leader published but whose ack was not committed yet are sent again with the same seq and
    the same payload: duplicates a subscriber drops by seq (never silent or different).

    Order and live data: the backlog drains in seq order; while it drains, a share of the
    in-flight window (`live_share`) goes to records derived in the last few seconds, so live
    telemetry is not stuck behind an hour of backlog. Full outbox: the configured policy
    applies, every dropped seq range is counted, alarmed (A_CLOUD_BACKLOG_FULL in status) and
    announced on the zone's `gaps` topic. No subscriber: a record the broker accepts with
    "no matching subscribers" is not counted as delivered (`hold_unsubscribed`); the stream
    holds and offers one record every second until a subscriber takes it.
    """

    def __init__(
        self,
        cfg: ClusterConfig,
        node_id: str,
        is_leader: Callable[[], bool],
        state: Callable[[], ZoneState],
        propose: Callable[[bytes], Coroutine[Any, Any, dict[str, Any]]],
        link: MqttLink | None = None,
        bridge: Bridge | None = None,
    ) -> None:
        assert cfg.cloud is not None
        self.cfg, self.cc, self.node_id = cfg, cfg.cloud, node_id
        self.zone = cfg.zone
        self.is_leader, self.state, self._propose = is_leader, state, propose
        folder = cfg.path(self.cc.outbox_dir) / node_id
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.outbox_path = folder / "outbox.sqlite3"
        self.outbox: Outbox | None = None
        self.link = link or make_link(cfg, self.cc, node_id)
        self.pending: queue.SimpleQueue[Record] = queue.SimpleQueue()
        self.derived_seq = 0
        self.stats = CloudStats()
        #: the crossing from the worker thread to the node's loop (for the cloud_ack proposals)
        self.bridge = bridge or Bridge()
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        # worker thread only
        self.publisher = Publisher(self.link, self.cc, self.zone, self.node_id, self.stats)
        self._publishing = False
        self._connects_seen = 0
        self._ack_committed = 0
        self._ack_sent_at = 0.0
        self._unstored: list[Record] = []
        self._last_drop_s = 0.0
        self._leader_checked = 0.0
        self._status: dict[str, Any] = {"link": "starting"}
        self.outages = OutageLog(grace_s=1.0)  # a log line when the broker goes away, one when back

    # --- Raft thread ----------------------------------------------------------------------

    def on_applied(self, state: ZoneState, entry: bytes, term: int, index: int) -> None:
        """An entry was applied: if it raised the telemetry seq, derive and queue its record."""
        if state.telemetry_seq <= self.derived_seq:
            return
        self.derived_seq = state.telemetry_seq
        rec = telemetry.derive(state, entry[4:], term, index)  # entry = CRC-32 + command
        if rec is None:  # pragma: no cover - apply and derive disagree on the types
            return
        self.pending.put(
            Record(
                rec.seq,
                time.time(),
                telemetry.topic(self.cc.topic_prefix, self.zone, rec.kind, rec.subject),
                telemetry.payload(rec, self.zone, self.cc.payload_format),
            )
        )
        self._wake.set()

    # --- lifetime ---------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="cloud-sync", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self.link.stop()

    def status(self) -> dict[str, Any]:
        return dict(self._status)

    # --- worker thread ------------------------------------------------------------------

    def _run(self) -> None:
        # SQLite connections belong to the thread that opened them: this one
        self.outbox = Outbox(
            self.outbox_path, self.cc.outbox_max_bytes, self.cc.outbox_max_age_s, self.cc.outbox_full_policy
        )
        try:
            self._work()
        finally:
            self.outbox.close()

    def _work(self) -> None:
        last_caps = last_status = 0.0
        while not self._stop.is_set():
            self._wake.clear()  # before the work: a record queued during it wakes the next wait
            try:
                now = time.time()
                self._store_pending(now)
                if now - last_caps >= 1.0:
                    last_caps = now
                    assert self.outbox is not None
                    self._enforce_caps(now)
                self._lead_or_follow()
                if self._publishing and self.link.connected:
                    self._acks()
                    self._publish(now)
                if self._publishing:  # also while the link is down: fewer repeats after it
                    self._commit_watermark(now)
                if now - last_status >= 0.2:
                    last_status = now
                    self._update_status(now)
            except MeshemsError as exc:
                log("error", exc.code, f"cloud sync: {exc.message}")
                self._status["error"] = str(exc)
                self._stop.wait(1.0)
            # a new record wakes the worker at once; while a backlog drains, acks free the
            # window continuously, so look again soon instead of idling a whole tick
            draining = self._publishing and self.publisher.cursor < self.derived_seq
            self._wake.wait(0.002 if draining else 0.02)

    def _store_pending(self, now: float) -> None:
        """Move derived records into the outbox. When the outbox cannot be written (disk
        full, I/O error) they stay in memory, in order, and are stored once it can be; past
        MAX_UNSTORED the oldest are dropped, counted, alarmed and announced."""
        batch, self._unstored = self._unstored, []
        while len(batch) < MAX_UNSTORED + 5000:
            try:
                batch.append(self.pending.get_nowait())
            except queue.Empty:
                break
        if not batch:
            return
        assert self.outbox is not None
        try:
            res = self.outbox.append(batch, now)
        except OutboxError as exc:
            if len(batch) > MAX_UNSTORED:
                lost, batch = batch[: len(batch) - MAX_UNSTORED], batch[len(batch) - MAX_UNSTORED :]
                self._dropped(DropReport(bytes=seq_ranges(r.seq for r in lost)))
            self._unstored = batch
            if "A_CLOUD_OUTBOX_WRITE" not in self.stats.alarms:
                self.stats.alarms.append("A_CLOUD_OUTBOX_WRITE")
                log("error", "A_CLOUD_OUTBOX_WRITE", f"outbox not writable, {len(batch)} records held "
                    f"in memory: {exc.message}", held=len(batch))  # fmt: skip
            raise
        if "A_CLOUD_OUTBOX_WRITE" in self.stats.alarms:
            self.stats.alarms.remove("A_CLOUD_OUTBOX_WRITE")
            log("info", "I_CLOUD_OUTBOX_OK", "outbox writable again; held records stored")
        self._dropped(res.drops)

    def _enforce_caps(self, now: float) -> None:
        """Prune what is delivered, then apply the caps: a record the broker acknowledged to
        this leader (its `cloud_ack` not committed yet) is pruned here, never counted as dropped."""
        assert self.outbox is not None
        delivered = self.state().cloud_acked
        if self._publishing:
            delivered = max(delivered, self.publisher.acked_through)
        self.outbox.prune_through(delivered)
        self._dropped(self.outbox.enforce_caps(now))

    def _dropped(self, drops: DropReport) -> None:
        if not drops:
            return
        for reason, ranges in (("age", drops.age), ("bytes", drops.bytes), ("rejected", drops.rejected)):
            for r in ranges:
                self.publisher.note_gap(r.first, r.last, reason)
                n = r.last - r.first + 1
                self.stats.dropped += n
                log("error", "A_CLOUD_BACKLOG_FULL",
                    f"outbox {reason} cap: telemetry {r.first}..{r.last} ({n} records) dropped unsent",
                    first=r.first, last=r.last, reason=reason, policy=self.cc.outbox_full_policy)  # fmt: skip
        if "A_CLOUD_BACKLOG_FULL" not in self.stats.alarms:
            self.stats.alarms.append("A_CLOUD_BACKLOG_FULL")
        self._last_drop_s = time.time()

    def _lead_or_follow(self) -> None:
        now = time.monotonic()
        if now - self._leader_checked < 0.2:
            return
        self._leader_checked = now
        leader = self.is_leader()
        if leader and not self._publishing:
            try:
                self.link.start()
            except MeshemsError as exc:
                self._status["link"] = f"error: {exc}"
                raise
            self._publishing = True
            self.publisher.new_link()
            self._reset_cursor()
            log("info", "I_CLOUD_LEAD", f"leader: publishing telemetry from seq {self.publisher.cursor + 1}",
                broker=self.link.endpoint)  # fmt: skip
        elif not leader and self._publishing:
            self.link.stop()
            self._publishing = False
            log("info", "I_CLOUD_STANDBY", "no longer leader: stopped publishing")

    def _reset_cursor(self) -> None:
        """Publish again from the watermark (after taking the lead or a reconnect): what was
        in flight may or may not have arrived; a subscriber drops repeats by seq."""
        self.publisher.reset(max(self.state().cloud_acked, self.publisher.acked_through))
        # only what the zone holds is committed; acks gathered before the reset still go out
        self._ack_committed = max(self._ack_committed, self.state().cloud_acked)
        self._connects_seen = self.link.connects

    def _acks(self) -> None:
        if self.link.connects != self._connects_seen:
            self._reset_cursor()
            return
        if self.publisher.take_acks(time.time()):
            self._reset_cursor()

    def _publish(self, now: float) -> None:
        assert self.outbox is not None
        self.publisher.publish(now, self.outbox, self.derived_seq)

    def _commit_watermark(self, now: float) -> None:
        moved = self.publisher.acked_through - self._ack_committed
        if moved <= 0 or (moved < ACK_BATCH and now - self._ack_sent_at < ACK_PERIOD_S):
            return
        if self.bridge.loop is None:
            return
        seq = self.publisher.acked_through
        self._ack_sent_at = now
        data = commands.encode("cloud_ack", f"cloud-{uuid.uuid4().hex[:16]}", seq=seq)
        fut = self.bridge.run(self._propose(data))
        try:
            res = fut.result(timeout=self.cfg.raft.commit_timeout_s + 1)
        except Exception as exc:  # retried at the next period
            log("warning", "W_CLOUD_ACK", f"committing the cloud watermark {seq} failed: {exc}")
            return
        if res.get("ok"):
            self._ack_committed = seq
        else:
            log("warning", "W_CLOUD_ACK", f"cloud watermark {seq} not committed: {res.get('code')}")

    def _update_status(self, now: float) -> None:
        assert self.outbox is not None
        st = self.outbox.stats(now)
        acked = self.state().cloud_acked
        err = self.link.last_error
        broker = f"broker {self.link.endpoint}"
        if self._publishing:
            event = self.outages.observe(broker, self.link.connected, time.monotonic())
            log_outage(event, error=getattr(err, "code", str(err)) if err else None)
        else:
            log_outage(self.outages.forget(broker, time.monotonic()))
        if not self._publishing:
            link = "standby (not leader)"
        elif self.link.connected:
            link = f"connected ({self.link.tls_version or 'TLS'})"
            if self.publisher.probing:
                link += ", no subscriber: holding the stream"
        else:
            link = f"down: {err}" if err else "connecting"
        backlog = max(0, self.derived_seq - acked)
        # the alarm stands while records are at risk; the drop counters stay for the record
        if "A_CLOUD_BACKLOG_FULL" in self.stats.alarms and backlog == 0 and now - self._last_drop_s > 60:
            self.stats.alarms.remove("A_CLOUD_BACKLOG_FULL")
            log("info", "I_CLOUD_BACKLOG_OK", f"backlog drained; {self.stats.dropped} records were dropped")
        self._status = {
            "link": link,
            "broker": self.link.endpoint,
            "publishing": self._publishing,
            "stream_seq": self.derived_seq,
            "acked_through": acked,
            "backlog": backlog,
            "outbox_records": st.depth,
            "outbox_bytes": st.bytes,
            "oldest_unsent_age_s": (
                round(st.oldest_age_s, 1) if backlog and st.oldest_age_s is not None else None
            ),
            "published": self.stats.published,
            "acknowledged": self.stats.acknowledged,
            "unsubscribed": self.stats.unsubscribed,
            "dropped": self.stats.dropped,
            "gap_notices": self.stats.gap_notices,
            "alarms": list(self.stats.alarms),
        }


def make_link(cfg: ClusterConfig, cc: CloudConfig, node_id: str) -> MqttLink:
    cert, key = cc.node_cert_files(node_id)
    return MqttLink(
        cc.broker_host,
        cc.broker_port,
        cfg.path(cc.ca_file),
        cfg.path(cert),
        cfg.path(key),
        client_id=f"meshems-{cfg.cluster}-{node_id}",
        keepalive_s=cc.keepalive_s,
        reconnect_min_s=cc.reconnect_min_s,
        reconnect_max_s=cc.reconnect_max_s,
    )


__all__ = ["CloudSync", "make_link"]
