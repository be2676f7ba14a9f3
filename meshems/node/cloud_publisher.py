"""The leader's publishing of the zone telemetry stream: the link's in-flight window split into
a stream lane (seq order from the watermark) and a live lane (fresh records overtaking a backlog),
the acknowledged-through watermark, gap notices, and the hold while the broker has no subscriber
for the stream. Owns that bookkeeping only: the outbox, the leadership and the Raft watermark
commit are `node.cloud.CloudSync`'s (one worker thread).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from meshems.adapters.mqtt_link import NO_MATCHING_SUBSCRIBERS, MqttLink
from meshems.adapters.outbox import Outbox
from meshems.adapters.outbox_records import Record
from meshems.core import telemetry
from meshems.core.config import CloudConfig
from meshems.logs import log

#: a record derived less than this long ago is "live" (may overtake the backlog)
LIVE_AGE_S = 5.0
#: after the broker said nobody subscribed, the stream waits this long, then offers one record
HOLD_S = 1.0


@dataclass
class CloudStats:
    published: int = 0
    acknowledged: int = 0
    #: acknowledged with "no matching subscribers" (held and sent again when `hold_unsubscribed`)
    unsubscribed: int = 0
    republished_after_reconnect: int = 0
    gap_notices: int = 0
    dropped: int = 0
    #: derivation -> broker acknowledgement of records that took the live lane (last 1000)
    live_ack_ms: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    alarms: list[str] = field(default_factory=list)


class Publisher:
    """What is in flight on the link, per lane, and how far the broker acknowledged the stream.

    Every seq <= `cursor` is published (or dropped and announced); `acked_through` is the
    highest seq below which the broker acknowledged everything. Use from one thread.
    """

    def __init__(self, link: MqttLink, cc: CloudConfig, zone: str, node_id: str, stats: CloudStats) -> None:
        self.link, self.cc, self.zone, self.node_id, self.stats = link, cc, zone, node_id, stats
        self.cursor = 0
        self.inflight: dict[int, tuple[int, str, float]] = {}  # mid -> (seq, lane, created_s)
        self.lane_inflight = {"live": 0, "stream": 0}
        self.outstanding: set[int] = set()  # published, not yet acknowledged
        self.live_sent: set[int] = set()  # published ahead of the cursor
        self.acked_through = 0
        self.gaps: list[tuple[int, int, str]] = []  # gap notices not published yet
        self.announced: list[tuple[int, int]] = []  # seq ranges announced as gaps
        self.gaps_inflight: dict[int, tuple[int, int, str]] = {}  # mid -> a notice not acknowledged
        #: no subscriber: nothing goes out before `hold_until`, then one record at a time (`probing`)
        self.hold_until, self.probing = 0.0, False
        self._tokens, self._tokens_at = 0.0, 0.0

    def reset(self, acked: int) -> None:
        """Publish again from the watermark `acked` (after taking the lead or a reconnect): what
        was in flight may or may not have arrived; a subscriber drops repeats by seq."""
        self.stats.republished_after_reconnect += len(self.outstanding)
        self.cursor = self.acked_through = acked
        self.inflight.clear()
        self.lane_inflight = {"live": 0, "stream": 0}
        self.outstanding.clear()
        self.live_sent.clear()

    def new_link(self) -> None:
        """The link is a new client (this node took the lead): the notices the old one had
        not got acknowledged went with it, so they are published again."""
        self.gaps[:0] = sorted(self.gaps_inflight.values())
        self.gaps_inflight.clear()

    def take_acks(self, now: float) -> bool:
        """Account for the link's acknowledgements; True when the stream is sent again from
        the watermark (the caller resets): the broker refused a record, or (with
        `hold_unsubscribed`) accepted one with no subscriber, which nobody will get: a broker
        restart can lose a shared subscription until its workers come back. Then the stream
        holds for HOLD_S and offers one record at a time until one is delivered."""
        unrouted = False
        for mid, code in self.link.drain_ack_codes():
            nobody = code == NO_MATCHING_SUBSCRIBERS and self.cc.hold_unsubscribed
            sent = self.inflight.pop(mid, None)
            if sent is None:
                notice = self.gaps_inflight.pop(mid, None)
                if notice is not None and nobody:
                    self.gaps.append(notice)  # announced again after the hold
                    unrouted = True
                continue
            seq, lane, created_s = sent
            self.lane_inflight[lane] -= 1
            self.stats.acknowledged += 1
            if nobody:  # stays outstanding: the watermark stops below it
                self.stats.unsubscribed += 1
                unrouted = True
                continue
            self.outstanding.discard(seq)
            if self.probing:
                self.probing = False
                log("info", "I_CLOUD_SUBSCRIBER", "the broker delivers the telemetry again: holding ended")
            if lane == "live":
                self.stats.live_ack_ms.append((now - created_s) * 1000)
        low = min(self.outstanding) - 1 if self.outstanding else self.cursor
        self.acked_through = max(self.acked_through, min(self.cursor, low))
        if unrouted:
            if not self.probing:
                log("warning", "W_CLOUD_NO_SUBSCRIBER", "the broker has no subscriber for the zone's "
                    f"telemetry: holding it, offering one record every {HOLD_S:g} s")  # fmt: skip
            self.hold_until, self.probing = now + HOLD_S, True
            return True
        for rej in self.link.drain_rejects():
            sent = self.inflight.pop(rej.mid, None)
            seq = sent[0] if sent else None
            log("warning", "W_CLOUD_REJECTED", f"broker refused telemetry {seq}: {rej.reason}")
            if sent is not None:  # sent again from the watermark (which stopped below it)
                self.outstanding.discard(sent[0])
                return True
        return False

    def publish(self, now: float, outbox: Outbox, derived_seq: int) -> None:
        """Fill the in-flight window: the stream lane in seq order from the cursor, within
        (1 - live_share) of the window; when the stream is behind, fresh records overtake
        it in the live lane, within the rest, so live data never waits for a backlog."""
        if now < self.hold_until:
            return
        total = 1 if self.probing else self.link.max_inflight
        live_cap = (
            max(1, int(total * self.cc.live_share)) if self.cc.live_share > 0 and not self.probing else 0
        )
        stream_room = total - live_cap - self.lane_inflight["stream"]
        cap = self.cc.drain_max_msgs_s
        if cap > 0:  # token bucket, half a second of burst
            self._tokens = min(cap * 0.5, self._tokens + max(0.0, now - self._tokens_at) * cap)
            self._tokens_at = now
            stream_room = min(stream_room, int(self._tokens))
        self._publish_gaps()
        behind = derived_seq - self.cursor - len(self.live_sent)
        live_room = min(live_cap - self.lane_inflight["live"], total - len(self.inflight))
        if behind > max(stream_room, 0) and live_room > 0:
            for rec in outbox.read_from(max(self.cursor, derived_seq - live_room), live_room):
                fresh = now - rec.created_s < LIVE_AGE_S
                if fresh and rec.seq > self.cursor and rec.seq not in self.live_sent:
                    self._send(rec, "live")
                    self.live_sent.add(rec.seq)
        if stream_room <= 0:
            return
        budget = stream_room
        for rec in outbox.read_from(self.cursor, stream_room + len(self.live_sent)):
            if stream_room <= 0:
                break
            if rec.seq > self.cursor + 1:
                self._hole(self.cursor + 1, rec.seq - 1)
            if rec.seq in self.live_sent:
                self.live_sent.discard(rec.seq)
            else:
                self._send(rec, "stream")
                stream_room -= 1
            self.cursor = rec.seq
        if cap > 0:
            self._tokens -= budget - stream_room

    def note_gap(self, first: int, last: int, reason: str) -> None:
        """Queue a gap notice (merged with the previous one when adjacent, so a long outage
        with drops every second keeps one entry, not one per second)."""
        if self.gaps and self.gaps[-1][2] == reason and self.gaps[-1][1] + 1 == first:
            self.gaps[-1] = (self.gaps[-1][0], last, reason)
        else:
            self.gaps.append((first, last, reason))
        if self.announced and self.announced[-1][1] + 1 == first:
            self.announced[-1] = (self.announced[-1][0], last)
        else:
            self.announced.append((first, last))

    def _hole(self, first: int, last: int) -> None:
        """Records missing from this outbox: dropped by a cap (already announced) or never
        derived here (this node joined from a snapshot): announce what was not announced."""
        pos = first
        for a, b in sorted(self.announced):
            if b < pos:
                continue
            if a > last:
                break
            if a > pos:
                self.note_gap(pos, a - 1, "not_on_this_node")
            pos = max(pos, b + 1)
        if pos <= last:
            self.note_gap(pos, last, "not_on_this_node")
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
        self.inflight[mid] = (rec.seq, lane, rec.created_s)
        self.lane_inflight[lane] += 1
        self.outstanding.add(rec.seq)
        self.stats.published += 1

    def _publish_gaps(self) -> None:
        while self.gaps:
            first, last, reason = self.gaps.pop(0)
            body = telemetry.gap_notice(self.zone, first, last, reason, self.cc.outbox_full_policy)
            mid = self.link.publish(
                telemetry.topic(self.cc.topic_prefix, self.zone, "gaps"),
                body,
                [("first", str(first)), ("last", str(last)), ("reason", reason)],
                expiry_s=self.cc.message_expiry_s,
                qos=1,
            )
            self.gaps_inflight[mid] = (first, last, reason)
            self.stats.gap_notices += 1
