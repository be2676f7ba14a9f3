"""Unit tests of CloudSync's publisher bookkeeping, without a broker.

A FakeLink stands in for the MQTT link (these tests are about seq bookkeeping, not MQTT;
tests/integration/test_cloud_sync.py runs the real broker). The worker thread is not
started: each test drives its steps (on_applied, _store_pending, _lead_or_follow, _acks,
_publish, _update_status) in the test thread against a real SQLite outbox and a zone state
built with `apply`, and checks the stream lane, acks, reconnects, the live lane, holes and
gap notices, and the status fields with exact values.
"""

from __future__ import annotations

import asyncio
import queue
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from meshems.adapters.config_file import load_config
from meshems.adapters.journal import frame
from meshems.adapters.mqtt_link import NO_MATCHING_SUBSCRIBERS, Reject
from meshems.adapters.outbox import Outbox
from meshems.adapters.outbox_records import DropReport, Record, SeqRange
from meshems.core import telemetry
from meshems.core.cluster import ZoneState, apply
from meshems.core.commands import Command, decode, encode
from meshems.core.config import ClusterConfig
from meshems.core.zone_records import Result
from meshems.node.cloud import ACK_PERIOD_S, CloudSync
from meshems.node.cloud_publisher import HOLD_S, LIVE_AGE_S

ZONE = "zone-a"
TERM = 3
SETPOINTS_TOPIC = f"meshems/{ZONE}/setpoints"
GAPS_TOPIC = f"meshems/{ZONE}/gaps"
PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]

# --- the fake link -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One message the fake link was asked to publish."""

    mid: int
    topic: str
    payload: bytes
    props: dict[str, str]
    expiry_s: int | None
    qos: int
    connection: int  # the link's `connects` when it was published

    @property
    def seq(self) -> int | None:
        return int(self.props["seq"]) if "seq" in self.props else None


class FakeLink:
    """What CloudSync uses of MqttLink; publishes are recorded and acked by the test."""

    endpoint = "broker.test:8883"

    def __init__(self, max_inflight: int = 8) -> None:
        self.max_inflight = max_inflight
        self.connected = False
        self.connects = 0
        self.last_error: str | None = None
        self.tls_version: str | None = None
        self.starts = 0
        self.stops = 0
        self.sent: list[Sent] = []
        self._acks: list[tuple[int, int]] = []  # (mid, PUBACK reason code)
        self._rejects: list[Reject] = []

    def start(self) -> None:
        self.starts += 1
        self.connect()

    def stop(self) -> None:
        self.stops += 1
        self.connected = False
        self.tls_version = None

    def connect(self) -> None:
        """A (re)connection: CONNACK received."""
        self.connects += 1
        self.connected, self.tls_version, self.last_error = True, "TLSv1.3", None

    def drop(self, error: str) -> None:
        self.connected, self.tls_version, self.last_error = False, None, error

    def publish(
        self, topic: str, payload: bytes, user_props: Any = (), expiry_s: int | None = None, qos: int = 1
    ) -> int:
        mid = len(self.sent) + 1
        self.sent.append(Sent(mid, topic, payload, dict(user_props), expiry_s, qos, self.connects))
        return mid

    def drain_ack_codes(self) -> list[tuple[int, int]]:
        out, self._acks = self._acks, []
        return out

    def drain_rejects(self) -> list[Reject]:
        out, self._rejects = self._rejects, []
        return out

    # -- test side -----------------------------------------------------------------------------

    def last_mid(self, seq: int) -> int:
        return next(m.mid for m in reversed(self.sent) if m.seq == seq)

    def ack(self, *seqs: int) -> None:
        """The broker acknowledges the newest publication of each seq."""
        self._acks += [(self.last_mid(seq), 0) for seq in seqs]

    def ack_unsubscribed(self, *seqs: int) -> None:
        """The broker accepts the newest publication of each seq with "no matching subscribers"."""
        self._acks += [(self.last_mid(seq), NO_MATCHING_SUBSCRIBERS) for seq in seqs]

    def ack_mid(self, mid: int, code: int = 0) -> None:
        self._acks.append((mid, code))

    def reject(self, seq: int, reason: str = "not authorized") -> None:
        self._rejects.append(Reject(self.last_mid(seq), reason, 135))

    def telemetry(self, connection: int | None = None) -> list[tuple[int, str]]:
        """(seq, lane) of the telemetry messages, in publish order."""
        return [
            (int(m.props["seq"]), m.props["lane"])
            for m in self.sent
            if m.seq is not None and (connection is None or m.connection == connection)
        ]

    def gaps(self) -> list[tuple[int, int, str]]:
        out = []
        for m in self.sent:
            if m.topic == GAPS_TOPIC:
                out.append((int(m.props["first"]), int(m.props["last"]), m.props["reason"]))
        return out

    def unacked(self) -> list[int]:
        """Seqs of telemetry published on the current connection, not acked yet (test view)."""
        return [m.seq for m in self.sent if m.seq is not None and m.connection == self.connects]


# --- the rig: zone, CloudSync, outbox ----------------------------------------------------------


def dev(id_: str, kind: str = "battery", min_kw: float = -10.0, max_kw: float = 10.0) -> dict[str, Any]:
    return {"id": id_, "kind": kind, "min_kw": min_kw, "max_kw": max_kw}


DECLARE = encode(
    "declare_node",
    "decl-n1",
    node_id="n1",
    raft="n1.local:4321",
    api="n1.local:8080",
    devices=[dev("m1", "meter"), dev("b1")],
)


def setpoint(k: int) -> bytes:
    """A setpoint command whose payload size does not depend on k (k < 10000)."""
    return encode("set_setpoint", f"sp-{k:04d}", device_id="b1", kw=1.0, source="operator")


def make_config(folder: Path, **cloud: Any) -> ClusterConfig:
    doc = {
        "cluster": "test",
        "zone": ZONE,
        "raft": {"secret_file": "raft.secret"},
        "cloud": {"broker_host": "broker.test", "outbox_dir": "outbox", "message_expiry_s": 600, **cloud},
        "nodes": [{"id": "n1", "address": "127.0.0.1", "raft_port": 4001, "api_port": 5001}],
    }
    path = folder / "cluster.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return load_config(path)


class Rig:
    """A CloudSync on node n1 with a fake link, a real outbox and a zone driven by `apply`."""

    def __init__(
        self,
        folder: Path,
        max_inflight: int = 8,
        max_bytes: int = 10_000_000,
        max_age_s: float = 3600.0,
        **cloud: Any,
    ) -> None:
        self.cfg = make_config(folder, live_share=cloud.pop("live_share", 0.25), **cloud)
        assert self.cfg.cloud is not None
        self.link = FakeLink(max_inflight)
        self.leader = True
        self.leader_asked = 0
        self.zone = ZoneState()
        self.proposals: list[bytes] = []
        self.propose_result: dict[str, Any] = {"ok": True, "code": "OK"}
        self.payloads: dict[int, bytes] = {}
        self.k = 0
        link: Any = self.link  # stands in for MqttLink
        self.cs = CloudSync(self.cfg, "n1", self._is_leader, lambda: self.zone, self._propose, link=link)
        self.cs.outbox = Outbox(
            folder / "test-outbox.sqlite3", max_bytes, max_age_s, self.cfg.cloud.outbox_full_policy
        )
        self.apply(DECLARE)

    def _is_leader(self) -> bool:
        self.leader_asked += 1
        return self.leader

    async def _propose(self, data: bytes) -> dict[str, Any]:
        self.proposals.append(data)
        return dict(self.propose_result)

    @property
    def outbox(self) -> Outbox:
        assert self.cs.outbox is not None
        return self.cs.outbox

    def apply(self, data: bytes, notify: bool = True) -> Result:
        """Commit one entry; `notify=False` leaves CloudSync unaware (the entry reached this
        node inside a snapshot)."""
        index = self.zone.last_index + 1
        before = self.zone.telemetry_seq
        self.zone, res = apply(self.zone, data, TERM, index)
        if self.zone.telemetry_seq > before:
            rec = telemetry.derive(self.zone, data, TERM, index)
            assert rec is not None
            fmt = self.cfg.cloud.payload_format if self.cfg.cloud else "msgpack"
            self.payloads[rec.seq] = telemetry.payload(rec, ZONE, fmt)
        if notify:
            self.cs.on_applied(self.zone, frame(data), TERM, index)
        return res

    def add(self, n: int, created_s: float | None = None, notify: bool = True) -> list[int]:
        """Commit n setpoints (n telemetry records); optionally restamp their creation time."""
        first = self.zone.telemetry_seq + 1
        for _ in range(n):
            self.k += 1
            assert self.apply(setpoint(self.k), notify).ok
        seqs = list(range(first, first + n))
        if created_s is not None:
            self.restamp(created_s, seqs)
        return seqs

    def restamp(self, created_s: float, seqs: list[int]) -> None:
        """Give the queued records of `seqs` another creation time."""
        for rec in self.drain_pending():
            self.cs.pending.put(replace(rec, created_s=created_s) if rec.seq in seqs else rec)

    def drain_pending(self) -> list[Record]:
        out = []
        while True:
            try:
                out.append(self.cs.pending.get_nowait())
            except queue.Empty:
                return out

    def store(self, now: float | None = None) -> None:
        self.cs._store_pending(time.time() if now is None else now)

    def lead(self) -> None:
        self.cs._leader_checked = float("-inf")
        self.cs._lead_or_follow()

    def published(self, n: int, now: float) -> None:
        """Commit n records, store them, take the lead and publish them at `now`."""
        self.add(n)
        self.store()
        self.lead()
        self.step(now)

    def step(self, now: float) -> None:
        self.cs._acks()
        self.cs._publish(now)

    def status(self, now: float) -> dict[str, Any]:
        self.cs._update_status(now)
        return self.cs.status()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.outbox.close()


RigFactory = Callable[..., Rig]


@pytest.fixture
def rigs(tmp_path: Path) -> Iterator[RigFactory]:
    """A factory of rigs with custom settings, each closed at teardown."""
    made: list[Rig] = []

    def make(**kw: Any) -> Rig:
        folder = tmp_path / f"rig{len(made)}"
        folder.mkdir()
        made.append(Rig(folder, **kw))
        return made[-1]

    yield make
    for r in made:
        r.outbox.close()


def later() -> float:
    """A clock reading at which records derived now are a minute old (not live)."""
    return time.time() + 60.0


# --- on_applied ----------------------------------------------------------------------------------


def test_on_applied_queues_one_record_per_raised_seq(rig: Rig) -> None:
    before = time.time()
    rig.apply(encode("barrier", "bar-1"))
    assert rig.apply(setpoint(1)).ok
    assert (
        rig.apply(encode("set_setpoint", "too-big", device_id="b1", kw=99.0, source="op")).code == "E_LIMIT"
    )
    report = encode(
        "report",
        "rep-1",
        node_id="n1",
        seq=1,
        devices=[{"id": "m1", "state": "ok", "values": {"power_kw": 2.5}}],
    )
    assert rig.apply(report).ok
    after = time.time()
    recs = rig.drain_pending()
    assert [(r.seq, r.topic) for r in recs] == [
        (1, SETPOINTS_TOPIC),
        (2, f"meshems/{ZONE}/telemetry/node/n1"),
    ]
    assert all(before <= r.created_s <= after for r in recs)
    assert [r.payload for r in recs] == [rig.payloads[1], rig.payloads[2]]
    assert telemetry.parse_payload(recs[0].payload) == {
        "v": 1,
        "zone": ZONE,
        "seq": 1,
        "term": TERM,
        "index": 3,
        "kind": "setpoints",
        "data": {"setpoints": {"b1": 1.0}, "source": "operator", "rid": "sp-0001"},
    }
    assert rig.cs.derived_seq == 2
    # the same state handed over again (a replayed hook call) queues nothing
    rig.cs.on_applied(rig.zone, frame(report), TERM, rig.zone.last_index)
    assert rig.drain_pending() == []


def test_on_applied_uses_the_configured_payload_format(rigs: RigFactory) -> None:
    r = rigs(payload_format="json")
    r.add(1)
    (rec,) = r.drain_pending()
    assert rec.payload[:1] == b"{"
    assert telemetry.parse_payload(rec.payload)["data"]["rid"] == "sp-0001"


def test_a_node_that_joined_from_a_snapshot_derives_from_the_next_seq(rig: Rig) -> None:
    rig.add(4, notify=False)
    rig.add(2)
    assert [r.seq for r in rig.drain_pending()] == [5, 6]
    assert rig.cs.derived_seq == 6


# --- the stream lane -----------------------------------------------------------------------------


def test_stream_publishes_in_seq_order_from_the_replicated_watermark(rig: Rig) -> None:
    rig.add(8)
    assert rig.apply(encode("cloud_ack", "ack-3", seq=3)).ok
    rig.store()
    rig.lead()
    assert (rig.link.starts, rig.cs._publishing) == (1, True)
    rig.step(later())
    assert rig.link.telemetry() == [(s, "stream") for s in range(4, 9)]
    first = rig.link.sent[0]
    assert (first.topic, first.payload, first.expiry_s, first.qos) == (
        SETPOINTS_TOPIC,
        rig.payloads[4],
        600,
        1,
    )
    assert {k: v for k, v in first.props.items() if k not in ("term", "index")} == {
        "seq": "4",
        "zone": ZONE,
        "publisher": "n1",
        "lane": "stream",
    }
    assert set(first.props) == {"seq", "term", "index", "zone", "publisher", "lane"}
    assert [m.payload for m in rig.link.sent] == [rig.payloads[s] for s in range(4, 9)]
    # nothing is published twice while it is in flight
    rig.step(later())
    assert len(rig.link.sent) == 5
    assert rig.cs.stats.published == 5


def test_the_stream_lane_keeps_the_live_share_of_the_window_free(rigs: RigFactory) -> None:
    r = rigs(max_inflight=4)  # live_share 0.25: one slot of four is the live lane's
    r.published(10, later())
    assert r.link.telemetry() == [(1, "stream"), (2, "stream"), (3, "stream")]
    r.step(later())  # nothing acknowledged: nothing more
    assert [s for s, _ in r.link.telemetry()] == [1, 2, 3]
    r.link.ack(1, 2)
    r.step(later())
    assert [s for s, _ in r.link.telemetry()] == [1, 2, 3, 4, 5]
    assert r.cs.publisher.lane_inflight == {"live": 0, "stream": 3}


def test_acks_advance_the_watermark_only_contiguously(rig: Rig) -> None:
    rig.published(6, later())
    assert [s for s, _ in rig.link.telemetry()] == [1, 2, 3, 4, 5, 6]
    assert rig.cs.publisher.acked_through == 0
    rig.link.ack(1, 2, 4, 5)
    rig.cs._acks()
    assert (rig.cs.publisher.acked_through, rig.cs.stats.acknowledged) == (2, 4)
    rig.link.ack_mid(999)  # not one of ours: ignored
    rig.cs._acks()
    assert (rig.cs.publisher.acked_through, rig.cs.stats.acknowledged) == (2, 4)
    rig.link.ack(3)
    rig.cs._acks()
    assert rig.cs.publisher.acked_through == 5
    rig.link.ack(6)
    rig.cs._acks()
    assert (rig.cs.publisher.acked_through, rig.cs.stats.acknowledged) == (6, 6)


def test_a_reconnect_restarts_from_the_watermark_with_identical_duplicates(rig: Rig) -> None:
    rig.published(10, later())
    assert rig.link.telemetry(connection=1) == [(s, "stream") for s in range(1, 7)]
    rig.link.ack(1, 2, 3)
    rig.cs._acks()
    assert rig.cs.publisher.acked_through == 3
    rig.link.connect()  # the link dropped and came back: in-flight messages may be lost
    rig.step(later())
    assert rig.link.telemetry(connection=2) == [(s, "stream") for s in range(4, 10)]
    assert rig.cs.stats.republished_after_reconnect == 3
    assert rig.cs.stats.published == 12
    first = {m.seq: m for m in rig.link.sent if m.connection == 1}
    for m in (m for m in rig.link.sent if m.connection == 2):
        assert m.payload == rig.payloads[m.seq]
        if m.seq in first:
            assert (m.topic, m.payload, m.props["seq"]) == (
                first[m.seq].topic,
                first[m.seq].payload,
                str(m.seq),
            )


def test_a_reconnect_resumes_after_a_watermark_committed_elsewhere(rig: Rig) -> None:
    rig.published(10, later())
    assert rig.apply(encode("cloud_ack", "ack-elsewhere", seq=6)).ok  # committed, acks not seen here
    rig.link.connect()
    rig.step(later())
    assert rig.link.telemetry(connection=2) == [(s, "stream") for s in range(7, 11)]


def test_user_properties_carry_the_records_own_position(rig: Rig) -> None:
    rig.published(2, later())
    rig.apply(encode("barrier", "bar-later"))  # the log moves on
    rig.link.connect()
    rig.step(later())
    copies = [m for m in rig.link.sent if m.seq == 1]
    assert len(copies) == 2
    doc = telemetry.parse_payload(copies[0].payload)
    for m in copies:
        assert (m.props["term"], m.props["index"]) == (str(doc["term"]), str(doc["index"]))


def test_a_rejected_publish_is_sent_again_from_the_watermark(rig: Rig) -> None:
    rig.published(5, later())
    rig.link.ack(1, 2)
    rig.cs._acks()
    rig.link.reject(4)
    rig.step(later())
    assert [s for s, _ in rig.link.telemetry()] == [1, 2, 3, 4, 5, 3, 4, 5]
    assert rig.cs.stats.republished_after_reconnect == 2  # 3 and 5 were still outstanding
    assert rig.cs.publisher.acked_through == 2


def test_a_record_nobody_subscribed_to_is_held_then_offered_one_at_a_time(rig: Rig) -> None:
    """A broker restart can lose the ingest's shared subscription (mosquitto < 2.0.19): until a
    worker is back, the broker accepts telemetry with "no matching subscribers" and gives it to
    nobody. The watermark stops below it; the stream waits, then offers one record at a time."""
    rig.published(5, time.time())
    rig.link.ack(1, 2)
    rig.link.ack_unsubscribed(3)
    rig.link.ack(4, 5)
    rig.step(time.time())
    pub = rig.cs.publisher
    assert (pub.acked_through, rig.cs.stats.unsubscribed, pub.probing) == (2, 1, True)
    assert [s for s, _ in rig.link.telemetry()] == [1, 2, 3, 4, 5]  # holding: nothing more
    assert rig.status(time.time())["link"] == "connected (TLSv1.3), no subscriber: holding the stream"
    assert rig.status(time.time())["unsubscribed"] == 1
    rig.step(time.time() + HOLD_S + 0.1)  # the hold is over: one record in flight at most
    rig.step(time.time() + HOLD_S + 0.2)
    assert [s for s, _ in rig.link.telemetry()][5:] == [3]
    rig.link.ack_unsubscribed(3)  # still nobody: held again
    rig.step(time.time())
    assert [s for s, _ in rig.link.telemetry()][5:] == [3]
    rig.step(time.time() + HOLD_S + 0.1)
    assert [s for s, _ in rig.link.telemetry()][5:] == [3, 3]
    rig.link.ack(3)  # a worker is back: delivered, the whole window again
    rig.step(time.time() + HOLD_S + 0.2)
    assert [s for s, _ in rig.link.telemetry()][5:] == [3, 3, 4, 5] and not pub.probing
    rig.link.ack(4, 5)
    rig.cs._acks()
    assert pub.acked_through == 5
    assert rig.status(time.time())["link"] == "connected (TLSv1.3)"


def test_a_record_the_broker_acknowledged_is_pruned_not_dropped_when_it_ages(rigs: RigFactory) -> None:
    """Delivered, its cloud_ack not committed yet: past the age cap it is pruned, not counted,
    alarmed or announced as dropped unsent (only the undelivered one is)."""
    r = rigs(max_age_s=60.0)
    r.published(3, later())
    r.link.ack(1, 2)
    r.cs._acks()
    assert (r.cs.publisher.acked_through, r.zone.cloud_acked) == (2, 0)
    r.cs._enforce_caps(time.time() + 1000.0)
    assert r.cs.stats.dropped == 1 and r.cs.publisher.gaps == [(3, 3, "age")]
    assert r.outbox.stats(time.time()).depth == 0


def test_without_hold_unsubscribed_no_subscriber_counts_as_delivered(rigs: RigFactory) -> None:
    r = rigs(hold_unsubscribed=False)
    r.published(3, time.time())
    r.link.ack_unsubscribed(1, 2, 3)
    r.step(time.time())
    assert (r.cs.publisher.acked_through, r.cs.publisher.probing, r.cs.stats.unsubscribed) == (3, False, 0)


def test_a_gap_notice_nobody_got_is_announced_again_also_by_a_new_link(rigs: RigFactory) -> None:
    r = rigs(max_age_s=60.0)
    r.add(3)
    r.store(time.time() + 1000.0)  # dropped: announced when this node leads
    r.published(2, time.time())
    assert r.link.gaps() == [(1, 3, "age")]
    r.link.ack_mid(r.link.sent[0].mid, NO_MATCHING_SUBSCRIBERS)
    r.step(time.time())
    assert r.link.gaps() == [(1, 3, "age")]  # holding
    r.step(time.time() + HOLD_S + 0.1)
    assert r.link.gaps() == [(1, 3, "age")] * 2
    r.leader = False  # the lead goes away before the broker answered, and comes back: a new client
    r.lead()
    r.leader = True
    r.lead()
    r.step(time.time() + HOLD_S + 0.2)
    assert r.link.gaps() == [(1, 3, "age")] * 3
    notice = next(m for m in reversed(r.link.sent) if m.topic == GAPS_TOPIC)
    r.link.ack_mid(notice.mid)  # delivered: never again
    r.cs._acks()
    r.leader = False
    r.lead()
    r.leader = True
    r.lead()
    r.step(time.time() + HOLD_S + 0.3)
    assert r.link.gaps() == [(1, 3, "age")] * 3


def test_losing_the_lead_stops_the_link_and_retaking_it_resumes_from_the_watermark(rig: Rig) -> None:
    rig.published(4, later())
    rig.leader = False
    rig.lead()
    assert (rig.cs._publishing, rig.link.stops) == (False, 1)
    assert rig.status(later())["link"] == "standby (not leader)"
    assert rig.apply(encode("cloud_ack", "ack-by-other-leader", seq=2)).ok
    rig.leader = True
    rig.lead()
    assert (rig.cs._publishing, rig.link.starts) == (True, 2)
    rig.step(later())
    assert rig.link.telemetry(connection=2) == [(3, "stream"), (4, "stream")]


def test_leadership_is_checked_at_most_every_200_ms(rig: Rig) -> None:
    rig.lead()
    asked = rig.leader_asked
    rig.leader = False
    rig.cs._lead_or_follow()  # just checked: not asked again
    assert (rig.leader_asked, rig.cs._publishing) == (asked, True)
    rig.cs._leader_checked = time.monotonic() - 0.25
    rig.cs._lead_or_follow()
    assert (rig.leader_asked, rig.cs._publishing) == (asked + 1, False)


# --- committing the watermark ------------------------------------------------------------------


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    thread = threading.Thread(target=lp.run_forever, daemon=True)
    thread.start()
    yield lp
    lp.call_soon_threadsafe(lp.stop)
    thread.join(timeout=5)
    lp.close()


def proposed(rig: Rig) -> list[tuple[str, int]]:
    out = []
    for data in rig.proposals:
        cmd = decode(data)
        assert isinstance(cmd, Command) and cmd.rid.startswith("cloud-")
        out.append((cmd.type, cmd.fields["seq"]))
    return out


def test_the_watermark_is_committed_through_raft_at_most_every_period(
    rig: Rig, loop: asyncio.AbstractEventLoop
) -> None:
    rig.cs.bridge.bind(loop)
    rig.published(6, later())
    rig.cs._commit_watermark(100.0)
    assert rig.proposals == []  # nothing acknowledged yet
    rig.link.ack(1, 2, 3, 5)
    rig.cs._acks()
    rig.cs._commit_watermark(100.0)
    assert proposed(rig) == [("cloud_ack", 3)]
    assert rig.cs._ack_committed == 3
    rig.link.ack(4)
    rig.cs._acks()
    rig.cs._commit_watermark(100.0 + ACK_PERIOD_S / 2)
    assert proposed(rig) == [("cloud_ack", 3)]
    rig.propose_result = {"ok": False, "code": "E_LEADER_CHANGED"}
    rig.cs._commit_watermark(100.0 + ACK_PERIOD_S)
    assert proposed(rig) == [("cloud_ack", 3), ("cloud_ack", 5)]
    assert rig.cs._ack_committed == 3  # refused: retried at the next period
    rig.propose_result = {"ok": True}
    rig.cs._commit_watermark(100.0 + 2 * ACK_PERIOD_S)
    assert proposed(rig) == [("cloud_ack", 3), ("cloud_ack", 5), ("cloud_ack", 5)]
    assert rig.cs._ack_committed == 5
    # the proposed command applies on the zone: the watermark the cluster keeps
    assert rig.apply(rig.proposals[-1]).ok and rig.zone.cloud_acked == 5


# --- the live lane -------------------------------------------------------------------------------


def drain(rig: Rig, now: float, rounds: int = 20) -> None:
    """Acknowledge everything on the current connection and publish, until nothing moves."""
    for _ in range(rounds):
        before = len(rig.link.sent)
        rig.link.ack(*sorted(set(rig.link.unacked())))
        rig.step(now)
        if len(rig.link.sent) == before:
            return


def test_fresh_records_overtake_a_backlog_on_the_live_lane_once(rig: Rig) -> None:
    now = time.time()
    rig.add(30, created_s=now - 600.0)  # an old backlog
    rig.add(3)  # derived just now
    rig.store(now)
    rig.lead()
    rig.step(now)
    # 8 in flight, live_share 0.25: the 2 newest fresh records go first, then the backlog
    assert rig.link.telemetry() == [(32, "live"), (33, "live")] + [(s, "stream") for s in range(1, 7)]
    # acks of the stream part alone move the watermark; the live records above stay outstanding
    rig.link.ack(*range(1, 7))
    rig.cs._acks()
    assert rig.cs.publisher.acked_through == 6
    drain(rig, now)
    sent = rig.link.telemetry()
    assert sorted(s for s, _ in sent) == list(range(1, 34))  # each seq exactly once
    assert [s for s, lane in sent if lane == "stream"] == list(range(1, 32))
    assert [s for s, lane in sent if lane == "live"] == [32, 33]
    assert rig.cs.publisher.live_sent == set()
    assert (rig.cs.publisher.cursor, rig.cs.publisher.acked_through) == (33, 33)


def test_a_live_record_acknowledged_alone_does_not_move_the_watermark(rig: Rig) -> None:
    now = time.time()
    rig.add(20, created_s=now - 600.0)
    rig.add(2)
    rig.store(now)
    rig.lead()
    rig.step(now)
    rig.link.ack(21, 22)
    rig.cs._acks()
    assert rig.cs.publisher.acked_through == 0


def test_records_older_than_the_live_age_stay_in_the_stream(rig: Rig) -> None:
    now = time.time()
    rig.add(20, created_s=now - 600.0)
    rig.add(3, created_s=now - LIVE_AGE_S - 0.5)
    rig.store(now)
    rig.lead()
    rig.step(now)
    assert rig.link.telemetry() == [(s, "stream") for s in range(1, 7)]


def test_the_live_lane_is_idle_while_the_stream_keeps_up(rig: Rig) -> None:
    rig.published(3, time.time())
    assert rig.link.telemetry() == [(1, "stream"), (2, "stream"), (3, "stream")]


def test_fresh_records_take_the_free_live_slots_while_the_stream_window_is_full(rig: Rig) -> None:
    now = time.time()
    rig.add(20, created_s=now - 600.0)
    rig.store(now)
    rig.lead()
    rig.step(now)
    assert rig.link.telemetry() == [(s, "stream") for s in range(1, 7)]
    for _ in range(3):  # three fresh records, one at a time; two live slots (8 x 0.25)
        rig.add(1)
        rig.store(now)
        rig.step(now)
    assert rig.link.telemetry()[6:] == [(21, "live"), (22, "live")]
    assert rig.cs.publisher.lane_inflight == {"live": 2, "stream": 6}
    rig.link.ack(21)
    rig.step(now)
    assert rig.link.telemetry()[6:] == [(21, "live"), (22, "live"), (23, "live")]
    assert len(rig.cs.stats.live_ack_ms) == 1
    assert 0.0 <= rig.cs.stats.live_ack_ms[0] < 60_000.0


# --- holes and gap notices -----------------------------------------------------------------------


def gap_message(first: int, last: int, reason: str, policy: str = "drop_oldest") -> tuple[Any, ...]:
    body = telemetry.gap_notice(ZONE, first, last, reason, policy)
    props = {"first": str(first), "last": str(last), "reason": reason}
    return (GAPS_TOPIC, body, props, 600, 1)


def as_tuple(m: Sent) -> tuple[Any, ...]:
    return (m.topic, m.payload, m.props, m.expiry_s, m.qos)


def test_records_never_derived_here_are_announced_once(rig: Rig) -> None:
    rig.add(5, notify=False)  # this node joined from a snapshot at seq 5
    rig.published(3, later())
    assert as_tuple(rig.link.sent[0]) == gap_message(1, 5, "not_on_this_node")
    assert [(m.seq, m.props.get("lane")) for m in rig.link.sent[1:]] == [
        (6, "stream"),
        (7, "stream"),
        (8, "stream"),
    ]
    rig.link.connect()  # nothing acknowledged: the stream starts again at 1 and crosses the hole
    rig.step(later())
    assert rig.link.gaps() == [(1, 5, "not_on_this_node")]
    assert rig.cs.stats.gap_notices == 1
    assert rig.link.telemetry(connection=2) == [(6, "stream"), (7, "stream"), (8, "stream")]
    rig.link.ack(6, 7, 8)
    rig.cs._acks()
    assert rig.cs.publisher.acked_through == 8  # the announced hole does not hold the watermark back


def test_age_drops_are_announced_with_their_reason_and_not_again_as_a_hole(rigs: RigFactory) -> None:
    r = rigs(max_age_s=60.0)
    r.add(3)
    r.store(time.time() + 1000.0)  # too old to store: dropped, counted, reported
    r.add(3)
    r.store()
    assert r.cs.stats.dropped == 3
    r.lead()
    r.step(time.time() + 30.0)
    assert as_tuple(r.link.sent[0]) == gap_message(1, 3, "age")
    assert r.link.gaps() == [(1, 3, "age")]
    assert r.link.telemetry() == [(4, "stream"), (5, "stream"), (6, "stream")]


def test_a_hole_over_two_announced_drop_ranges_announces_only_the_rest(rigs: RigFactory) -> None:
    r = rigs(max_age_s=60.0)
    r.add(2, notify=False)  # joined from a snapshot at seq 2
    r.add(3)  # 3..5
    r.store(time.time() + 1000.0)  # dropped by age
    r.add(5)  # 6..10
    size = len(r.payloads[6])
    assert {len(r.payloads[s]) for s in range(6, 11)} == {size}
    r.outbox.max_bytes = 2 * size + size // 2  # room for two records
    r.store()  # 6..8 dropped oldest-first by the byte cap
    assert [x.seq for x in r.outbox.read_from(0, 100)] == [9, 10]
    r.lead()
    r.step(later())
    assert r.link.gaps() == [(3, 5, "age"), (6, 8, "bytes"), (1, 2, "not_on_this_node")]
    assert r.link.telemetry() == [(9, "stream"), (10, "stream")]
    assert (r.cs.stats.dropped, r.cs.stats.gap_notices) == (6, 3)


@pytest.mark.parametrize(
    "drops",
    [
        DropReport(age=(SeqRange(3, 4),), bytes=(SeqRange(5, 6),)),
        DropReport(bytes=(SeqRange(5, 6),), rejected=(SeqRange(3, 4),)),
    ],
    ids=["age-then-bytes", "rejected-then-bytes"],
)
def test_a_hole_around_announced_ranges_announces_both_sides(rig: Rig, drops: DropReport) -> None:
    now = time.time() - 120.0
    rig.outbox.append([Record(s, now, SETPOINTS_TOPIC, b"payload-%d" % s) for s in (9, 10)], now)
    rig.cs.derived_seq = 10
    rig.cs._dropped(drops)
    rig.lead()
    rig.step(time.time())
    announced = [(a, b, reason) for a, b, reason in rig.link.gaps() if reason != "not_on_this_node"]
    assert sorted(announced) == sorted(
        [(r.first, r.last, reason) for reason in ("age", "bytes", "rejected") for r in getattr(drops, reason)]
    )
    assert [g for g in rig.link.gaps() if g[2] == "not_on_this_node"] == [
        (1, 2, "not_on_this_node"),
        (7, 8, "not_on_this_node"),
    ]
    assert rig.link.telemetry() == [(9, "stream"), (10, "stream")]
    rig.link.connect()
    rig.step(time.time())
    assert len(rig.link.gaps()) == 4  # crossing the hole again announces nothing new
    assert rig.link.telemetry(connection=2) == [(9, "stream"), (10, "stream")]


def test_reject_new_drops_are_announced_with_the_policy(rigs: RigFactory) -> None:
    r = rigs(outbox_full_policy="reject_new")
    r.add(2)
    size = len(r.payloads[1])
    r.outbox.max_bytes = size + size // 2  # room for one record
    r.store()
    assert r.cs.stats.dropped == 1
    r.lead()
    r.step(later())
    assert as_tuple(r.link.sent[0]) == gap_message(2, 2, "rejected", "reject_new")
    assert r.link.telemetry() == [(1, "stream")]


# --- status --------------------------------------------------------------------------------------


def test_status_of_a_publishing_leader(rig: Rig) -> None:
    t0 = time.time() - 100.0
    for i in range(5):
        rig.add(1, created_s=t0 + i)
    rig.store(t0 + 5)
    rig.lead()
    rig.step(t0 + 10)
    rig.link.ack(1, 2, 3)
    rig.cs._acks()
    assert rig.apply(encode("cloud_ack", "ack-3", seq=3)).ok
    rig.outbox.prune_through(3)
    size = len(rig.payloads[4])
    assert rig.status(t0 + 3 + 12.34) == {
        "link": "connected (TLSv1.3)",
        "broker": "broker.test:8883",
        "publishing": True,
        "stream_seq": 5,
        "acked_through": 3,
        "backlog": 2,
        "outbox_records": 2,
        "outbox_bytes": 2 * size,
        "oldest_unsent_age_s": 12.3,
        "published": 5,
        "acknowledged": 3,
        "unsubscribed": 0,
        "dropped": 0,
        "gap_notices": 0,
        "alarms": [],
    }


def test_status_without_backlog_has_no_oldest_age(rig: Rig) -> None:
    rig.add(3)
    rig.store()
    rig.lead()
    assert rig.apply(encode("cloud_ack", "ack-all", seq=3)).ok
    status = rig.status(later())
    assert (status["backlog"], status["outbox_records"], status["oldest_unsent_age_s"]) == (0, 3, None)


def test_status_reports_a_zero_age_with_a_backlog(rig: Rig) -> None:
    rig.add(1, created_s=500.0)
    rig.store(500.0)
    status = rig.status(500.0)
    assert (status["backlog"], status["oldest_unsent_age_s"]) == (1, 0.0)


def test_status_after_a_drop_raises_the_alarm(rigs: RigFactory) -> None:
    r = rigs(max_age_s=60.0)
    r.add(3)
    r.store(time.time() + 1000.0)
    status = r.status(time.time())
    assert (status["dropped"], status["alarms"], status["outbox_records"]) == (3, ["A_CLOUD_BACKLOG_FULL"], 0)
    assert (status["backlog"], status["oldest_unsent_age_s"], status["link"]) == (
        3,
        None,
        "standby (not leader)",
    )
    r.lead()
    r.step(time.time())
    status = r.status(time.time())
    assert (status["gap_notices"], status["alarms"]) == (1, ["A_CLOUD_BACKLOG_FULL"])
    r.add(3)
    r.store(time.time() + 1000.0)  # a second drop: counted, the alarm is listed once
    assert r.status(time.time())["alarms"] == ["A_CLOUD_BACKLOG_FULL"]
    assert r.status(time.time())["dropped"] == 6


def test_status_of_a_leader_whose_link_is_down(rig: Rig) -> None:
    rig.lead()
    rig.link.drop("E_UNREACHABLE: broker.test:8883 refused the connection")
    assert rig.status(time.time())["link"] == "down: E_UNREACHABLE: broker.test:8883 refused the connection"
    rig.link.last_error = None
    assert rig.status(time.time())["link"] == "connecting"
    assert rig.status(time.time())["publishing"] is True


# --- a property: lanes, acks and reconnects in any order ---------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("add"), st.integers(1, 6), st.booleans()),
        st.tuples(st.just("publish")),
        st.tuples(st.just("ack"), st.integers(0, 7)),
        st.tuples(st.just("reconnect")),
    ),
    max_size=40,
)


@settings(max_examples=40, deadline=None, phases=PHASES)
@given(ops=OPS, max_inflight=st.integers(2, 10), live_share=st.sampled_from([0.0, 0.3, 0.5]))
def test_any_interleaving_publishes_everything_once_per_connection(
    ops: list[tuple[Any, ...]], max_inflight: int, live_share: float
) -> None:
    with tempfile.TemporaryDirectory() as folder:
        r = Rig(Path(folder), max_inflight=max_inflight, live_share=live_share)
        try:
            now = time.time()
            r.lead()
            acked_mids: set[int] = set()

            def acknowledged_seqs() -> set[int]:
                return {m.seq for m in r.link.sent if m.mid in acked_mids and m.seq is not None}

            for op in ops:
                if op[0] == "add":
                    r.add(op[1], created_s=None if op[2] else now - 600.0)
                    r.store(now)
                elif op[0] == "publish":
                    r.step(now)
                elif op[0] == "ack":
                    pending = [m.mid for m in r.link.sent if m.seq is not None and m.mid not in acked_mids]
                    pick = pending[op[1] :: 3]  # acks come back in any order
                    acked_mids.update(pick)
                    for mid in pick:
                        r.link.ack_mid(mid)
                    r.cs._acks()
                else:
                    r.link.connect()
                    r.step(now)
                # the watermark never passes a record the broker has not acknowledged
                assert set(range(1, r.cs.publisher.acked_through + 1)) <= acknowledged_seqs()
                # the window holds: the stream lane leaves the live lane its share
                live_cap = max(1, int(max_inflight * live_share)) if live_share > 0 else 0
                assert len(r.cs.publisher.inflight) <= max_inflight
                assert r.cs.publisher.lane_inflight["stream"] <= max_inflight - live_cap
                assert r.cs.publisher.lane_inflight["live"] <= live_cap
            for _ in range(200):
                before = len(r.link.sent)
                pending = [m.mid for m in r.link.sent if m.seq is not None and m.mid not in acked_mids]
                acked_mids.update(pending)
                for mid in pending:
                    r.link.ack_mid(mid)
                r.step(now)
                if len(r.link.sent) == before and not pending:
                    break
            total = r.zone.telemetry_seq
            assert r.cs.publisher.acked_through == total
            assert acknowledged_seqs() == set(range(1, total + 1))
            for conn in {m.connection for m in r.link.sent}:
                sent = r.link.telemetry(connection=conn)
                seqs = [s for s, _ in sent]
                assert len(seqs) == len(set(seqs)), f"a seq published twice on connection {conn}"
                stream = [s for s, lane in sent if lane == "stream"]
                assert stream == sorted(stream)
            for m in r.link.sent:
                assert m.seq is not None and m.payload == r.payloads[m.seq]
        finally:
            r.outbox.close()


def test_a_drain_rate_cap_paces_the_stream_lane_and_leaves_live_data_alone(rigs: RigFactory) -> None:
    r = rigs(max_inflight=1000, drain_max_msgs_s=100.0, live_share=0.2)
    r.add(500, created_s=1.0)  # an old backlog
    r.store(10.0)
    r.lead()
    sent_at = []
    for i in range(1, 101):  # one simulated second in 10 ms steps, acking everything
        now = 10.0 + i * 0.01
        r.step(now)
        r.link.ack(*r.link.unacked())
        sent_at.append(len(r.link.telemetry()))
    stream = [seq for seq, lane in r.link.telemetry() if lane == "stream"]
    # half a second of burst (50) plus one second at 100/s, never more
    assert 100 <= len(stream) <= 151, len(stream)
    assert stream == list(range(1, len(stream) + 1))
    # a fresh record overtakes the paced backlog at once
    fresh = r.add(1)
    r.store(11.0)
    r.step(11.0)
    assert (fresh[0], "live") in r.link.telemetry()


def test_the_backlog_alarm_clears_a_minute_after_the_backlog_drained(rigs: RigFactory) -> None:
    r = rigs(max_age_s=60.0)
    r.add(3)
    r.store(time.time() + 1000.0)  # dropped by age
    assert r.status(time.time())["alarms"] == ["A_CLOUD_BACKLOG_FULL"]
    r.zone = replace(r.zone, cloud_acked=r.zone.telemetry_seq)  # the zone caught up
    assert r.status(time.time() + 30)["alarms"] == ["A_CLOUD_BACKLOG_FULL"]  # too recent
    status = r.status(time.time() + 120)
    assert (status["alarms"], status["dropped"], status["backlog"]) == ([], 3, 0)


def test_adjacent_drops_make_one_gap_notice(rigs: RigFactory) -> None:
    r = rigs(max_age_s=60.0)
    r.add(3)
    r.store(time.time() + 1000.0)  # seqs 1..3 dropped by age
    r.add(4)
    r.store(time.time() + 2000.0)  # seqs 4..7 dropped by age, a second later in the outage
    assert r.cs.publisher.gaps == [(1, 7, "age")]
    r.lead()
    r.step(time.time())
    assert r.link.gaps() == [(1, 7, "age")]


def test_acks_not_yet_committed_are_committed_after_a_reconnect(
    rig: Rig, loop: asyncio.AbstractEventLoop
) -> None:
    rig.cs.bridge.bind(loop)
    rig.published(6, later())
    rig.link.ack(1, 2, 3)
    rig.cs._acks()
    assert rig.cs.publisher.acked_through == 3 and rig.proposals == []  # acknowledged, not committed yet
    rig.link.connect()  # the link dropped and came back before the watermark period
    rig.step(later())
    rig.cs._commit_watermark(100.0)
    assert proposed(rig) == [("cloud_ack", 3)]
