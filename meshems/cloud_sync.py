"""Cloud sync: every node keeps the zone's telemetry stream in a durable outbox; the leader
publishes it to the MQTT broker and commits the broker's acknowledgement watermark.

Design (why there is no gap across a leader change): the stream is not the leader's own.
Every replica derives the same numbered records from the entries it applies
(core/telemetry.py) and appends them to its own SQLite outbox; the leader publishes from
the replicated watermark `ZoneState.cloud_acked` onwards and, as the broker acknowledges,
commits `cloud_ack(seq)` through Raft; every node prunes its outbox through it. A new
leader therefore holds every record above the watermark and resumes there. Records the old
leader published but whose ack was not committed yet are sent again with the same seq and
the same payload: duplicates a subscriber drops by seq (never silent or different).

Order and live data: the backlog drains in seq order; while it drains, a share of the
in-flight window (`live_share`) goes to records derived in the last few seconds, so live
telemetry is not stuck behind an hour of backlog. Full outbox: the configured policy
applies, every dropped seq range is counted, alarmed (A_CLOUD_BACKLOG_FULL in status) and
announced on the zone's `gaps` topic.

Owns the outbox, the MQTT link and a worker thread. Must not touch the zone state but
through committed `cloud_ack` proposals; the Raft thread only hands records over a queue.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from meshems.adapters.mqtt_link import MqttLink
from meshems.adapters.outbox import Outbox
from meshems.adapters.outbox_file import OutboxError
from meshems.adapters.outbox_records import DropReport, Record, seq_ranges
from meshems.core import commands, telemetry
from meshems.core.cluster import ZoneState
from meshems.core.config import CloudConfig, ClusterConfig
from meshems.core.errors import MeshemsError
from meshems.logs import log

#: a record derived less than this long ago is "live" (may overtake the backlog)
LIVE_AGE_S = 5.0
#: commit the watermark at most this often (and when it moved by ACK_BATCH records)
ACK_PERIOD_S = 0.5
ACK_BATCH = 2000
#: derived records held in memory while the outbox cannot be written (about 200 MB at most)
MAX_UNSTORED = 200_000


@dataclass
class CloudStats:
    published: int = 0
    acknowledged: int = 0
    republished_after_reconnect: int = 0
    gap_notices: int = 0
    dropped: int = 0
    #: derivation -> broker acknowledgement of records that took the live lane (last 1000)
    live_ack_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    alarms: list[str] = field(default_factory=list)


class CloudSync:
    def __init__(
        self,
        cfg: ClusterConfig,
        node_id: str,
        is_leader: Callable[[], bool],
        state: Callable[[], ZoneState],
        propose: Callable[[bytes], Coroutine[Any, Any, dict[str, Any]]],
        link: MqttLink | None = None,
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
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake = threading.Event()
        # publisher state (worker thread only)
        self._publishing = False
        self._connects_seen = 0
        self._cursor = 0  # every seq <= cursor is published (or dropped and announced)
        self._inflight: dict[int, tuple[int, str, float]] = {}  # mid -> (seq, lane, created_s)
        self._lane_inflight = {"live": 0, "stream": 0}
        self._outstanding: set[int] = set()  # published, not yet acknowledged
        self._live_sent: set[int] = set()  # published ahead of the cursor
        self._acked_through = 0
        self._ack_committed = 0
        self._ack_sent_at = 0.0
        self._gaps: list[tuple[int, int, str]] = []
        self._announced: list[tuple[int, int]] = []
        self._unstored: list[Record] = []
        self._tokens, self._tokens_at = 0.0, 0.0
        self._last_drop_s = 0.0
        self._leader_checked = 0.0
        self._status: dict[str, Any] = {"link": "starting"}

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

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
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
                    self._dropped(self.outbox.enforce_caps(now))
                    self.outbox.prune_through(self.state().cloud_acked)
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
            draining = self._publishing and self._cursor < self.derived_seq
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

    def _dropped(self, drops: DropReport) -> None:
        if not drops:
            return
        for reason, ranges in (("age", drops.age), ("bytes", drops.bytes), ("rejected", drops.rejected)):
            for r in ranges:
                self._note_gap(r.first, r.last, reason)
                n = r.last - r.first + 1
                self.stats.dropped += n
                log("error", "A_CLOUD_BACKLOG_FULL",
                    f"outbox {reason} cap: telemetry {r.first}..{r.last} ({n} records) dropped unsent",
                    first=r.first, last=r.last, reason=reason, policy=self.cc.outbox_full_policy)  # fmt: skip
        if "A_CLOUD_BACKLOG_FULL" not in self.stats.alarms:
            self.stats.alarms.append("A_CLOUD_BACKLOG_FULL")
        self._last_drop_s = time.time()

    def _note_gap(self, first: int, last: int, reason: str) -> None:
        """Queue a gap notice (merged with the previous one when adjacent, so a long outage
        with drops every second keeps one entry, not one per second)."""
        if self._gaps and self._gaps[-1][2] == reason and self._gaps[-1][1] + 1 == first:
            self._gaps[-1] = (self._gaps[-1][0], last, reason)
        else:
            self._gaps.append((first, last, reason))
        if self._announced and self._announced[-1][1] + 1 == first:
            self._announced[-1] = (self._announced[-1][0], last)
        else:
            self._announced.append((first, last))

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
            self._reset_cursor()
            log("info", "I_CLOUD_LEAD", f"leader: publishing telemetry from seq {self._cursor + 1}",
                broker=self.link.endpoint)  # fmt: skip
        elif not leader and self._publishing:
            self.link.stop()
            self._publishing = False
            log("info", "I_CLOUD_STANDBY", "no longer leader: stopped publishing")

    def _reset_cursor(self) -> None:
        """Publish again from the watermark (after taking the lead or a reconnect): what was
        in flight may or may not have arrived; a subscriber drops repeats by seq."""
        acked = max(self.state().cloud_acked, self._acked_through)
        self.stats.republished_after_reconnect += len(self._outstanding)
        self._cursor = self._acked_through = acked
        # only what the zone holds is committed; acks gathered before the reset still go out
        self._ack_committed = max(self._ack_committed, self.state().cloud_acked)
        self._inflight.clear()
        self._lane_inflight = {"live": 0, "stream": 0}
        self._outstanding.clear()
        self._live_sent.clear()
        self._connects_seen = self.link.connects

    def _acks(self) -> None:
        if self.link.connects != self._connects_seen:
            self._reset_cursor()
            return
        now = time.time()
        for mid in self.link.drain_acks():
            sent = self._inflight.pop(mid, None)
            if sent is not None:
                seq, lane, created_s = sent
                self._lane_inflight[lane] -= 1
                self._outstanding.discard(seq)
                self.stats.acknowledged += 1
                if lane == "live":
                    self.stats.live_ack_ms.append((now - created_s) * 1000)
        for rej in self.link.drain_rejects():
            sent = self._inflight.pop(rej.mid, None)
            seq = sent[0] if sent else None
            log("warning", "W_CLOUD_REJECTED", f"broker refused telemetry {seq}: {rej.reason}")
            if sent is not None:  # sent again from the watermark
                self._outstanding.discard(sent[0])
                self._reset_cursor()
                return
        low = min(self._outstanding) - 1 if self._outstanding else self._cursor
        self._acked_through = max(self._acked_through, min(self._cursor, low))

    def _publish(self, now: float) -> None:
        """Fill the in-flight window: the stream lane in seq order from the cursor, within
        (1 - live_share) of the window; when the stream is behind, fresh records overtake
        it in the live lane, within the rest, so live data never waits for a backlog."""
        assert self.outbox is not None
        total = self.link.max_inflight
        live_cap = max(1, int(total * self.cc.live_share)) if self.cc.live_share > 0 else 0
        stream_room = total - live_cap - self._lane_inflight["stream"]
        cap = self.cc.drain_max_msgs_s
        if cap > 0:  # token bucket, half a second of burst
            self._tokens = min(cap * 0.5, self._tokens + max(0.0, now - self._tokens_at) * cap)
            self._tokens_at = now
            stream_room = min(stream_room, int(self._tokens))
        self._publish_gaps()
        behind = self.derived_seq - self._cursor - len(self._live_sent)
        live_room = min(live_cap - self._lane_inflight["live"], total - len(self._inflight))
        if behind > max(stream_room, 0) and live_room > 0:
            for rec in self.outbox.read_from(max(self._cursor, self.derived_seq - live_room), live_room):
                fresh = now - rec.created_s < LIVE_AGE_S
                if fresh and rec.seq > self._cursor and rec.seq not in self._live_sent:
                    self._send(rec, "live")
                    self._live_sent.add(rec.seq)
        if stream_room <= 0:
            return
        budget = stream_room
        for rec in self.outbox.read_from(self._cursor, stream_room + len(self._live_sent)):
            if stream_room <= 0:
                break
            if rec.seq > self._cursor + 1:
                self._hole(self._cursor + 1, rec.seq - 1)
            if rec.seq in self._live_sent:
                self._live_sent.discard(rec.seq)
            else:
                self._send(rec, "stream")
                stream_room -= 1
            self._cursor = rec.seq
        if cap > 0:
            self._tokens -= budget - stream_room

    def _hole(self, first: int, last: int) -> None:
        """Records missing from this outbox: dropped by a cap (already announced) or never
        derived here (this node joined from a snapshot): announce what was not announced."""
        pos = first
        for a, b in sorted(self._announced):
            if b < pos:
                continue
            if a > last:
                break
            if a > pos:
                self._note_gap(pos, a - 1, "not_on_this_node")
            pos = max(pos, b + 1)
        if pos <= last:
            self._note_gap(pos, last, "not_on_this_node")
        self._publish_gaps()

    def _send(self, rec: Record, lane: str) -> None:
        """Publish one record; `lane` is "stream" (in seq order) or "live" (a fresh record
        that overtook a draining backlog), also told to the subscriber."""
        term, index = telemetry.position(rec.payload)  # the entry's own, not the current one
        props = telemetry.user_properties(rec.seq, term, index, self.zone)
        mid = self.link.publish(
            rec.topic,
            rec.payload,
            [*props, ("publisher", self.node_id), ("lane", lane)],
            expiry_s=self.cc.message_expiry_s,
            qos=self.cc.qos,
        )
        self._inflight[mid] = (rec.seq, lane, rec.created_s)
        self._lane_inflight[lane] += 1
        self._outstanding.add(rec.seq)
        self.stats.published += 1

    def _publish_gaps(self) -> None:
        while self._gaps:
            first, last, reason = self._gaps.pop(0)
            body = telemetry.gap_notice(self.zone, first, last, reason, self.cc.outbox_full_policy)
            self.link.publish(
                telemetry.topic(self.cc.topic_prefix, self.zone, "gaps"),
                body,
                [("first", str(first)), ("last", str(last)), ("reason", reason)],
                expiry_s=self.cc.message_expiry_s,
                qos=1,
            )
            self.stats.gap_notices += 1

    def _commit_watermark(self, now: float) -> None:
        moved = self._acked_through - self._ack_committed
        if moved <= 0 or (moved < ACK_BATCH and now - self._ack_sent_at < ACK_PERIOD_S):
            return
        if self.loop is None:
            return
        seq = self._acked_through
        self._ack_sent_at = now
        data = commands.encode("cloud_ack", f"cloud-{uuid.uuid4().hex[:16]}", seq=seq)
        fut = asyncio.run_coroutine_threadsafe(self._propose(data), self.loop)
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
        if not self._publishing:
            link = "standby (not leader)"
        elif self.link.connected:
            link = f"connected ({self.link.tls_version or 'TLS'})"
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
