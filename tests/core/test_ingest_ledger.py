"""Unit tests for `meshems.core.ingest_ledger` and `core.ingest_records`: the cloud ingest's
per-zone ledger and de-duplication, and decoding what the leader publishes.

Properties (hypothesis): any permutation of the same arrivals and gap notices, split into
any batches, gives the same ledger; the watermark is the largest n with 1..n received or
announced; the missing ranges are exactly the rest below the highest seq seen.
"""

from __future__ import annotations

import hashlib
import itertools
import json

import pytest
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

from meshems.core import telemetry
from meshems.core.ingest_ledger import (
    Arrival,
    BadRecordError,
    GapNotice,
    ZoneLedger,
    add,
    admit,
    build,
    complement,
    from_seqs,
)
from meshems.core.ingest_records import Incoming, decode

PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
PROPS = settings(max_examples=150, deadline=None, phases=PHASES)


def arr(seq: int, zone: str = "z", digest: str = "d", publisher: str = "n1") -> Arrival:
    return Arrival(zone, seq, f"{digest}{seq}", publisher, float(seq))


def test_watermark_missing_and_announced() -> None:
    led = build([arr(s) for s in (1, 2, 3, 5, 9)], [GapNotice("z", 6, 7, "age")])
    z = led["z"]
    assert z.watermark == 3
    assert z.missing == ((4, 4), (8, 8))
    assert z.announced == ((6, 7),)
    assert z.last_seq == 9 and z.records == 5
    led = build([arr(s) for s in (1, 2, 3, 4, 5, 8, 9)], [GapNotice("z", 6, 7, "age")])
    assert led["z"].watermark == 9 and led["z"].missing == ()


def test_a_gap_notice_ahead_of_the_records_counts_as_seen() -> None:
    z = build([arr(1)], [GapNotice("z", 4, 5, "bytes")])["z"]
    assert z.watermark == 1 and z.missing == ((2, 3),)


def test_repeat_same_digest_is_a_no_op_and_different_is_a_conflict() -> None:
    first = admit({}, [arr(1), arr(2)], {})
    stored = {("z", a.seq): a.digest for a in first.new}
    again = admit(first.ledgers, [arr(1), Arrival("z", 2, "other", "n2", 9.0), arr(3)], stored)
    assert [a.seq for a in again.new] == [3]
    assert [a.seq for a in again.duplicates] == [1]
    assert len(again.conflicts) == 1
    err = again.conflicts[0]
    assert err.code == "E_DUPLICATE_DIFFERS" and err.context["seq"] == 2 and "n2" in err.message
    assert again.per_zone["z"] == {"new": 1, "duplicates": 1, "conflicts": 1}
    assert again.ledgers["z"].publisher == "n1"  # the conflicting repeat is no evidence


def test_within_one_batch_the_first_wins() -> None:
    out = admit({}, [arr(1), arr(1), Arrival("z", 1, "x", "n2")], {})
    assert len(out.new) == 1 and len(out.duplicates) == 1 and len(out.conflicts) == 1


def test_zones_are_separate() -> None:
    led = build([arr(1, "a"), arr(1, "b"), arr(2, "b")])
    assert led["a"].watermark == 1 and led["b"].watermark == 2


def test_publisher_is_that_of_the_highest_seq() -> None:
    led = build([arr(2, publisher="n2"), arr(1, publisher="n1")])
    assert led["z"].publisher == "n2"


def test_range_helpers() -> None:
    assert add(((1, 2), (6, 7)), 3, 5) == ((1, 7),)
    assert add(((1, 2), (9, 9)), 5, 6) == ((1, 2), (5, 6), (9, 9))
    assert add((), 3, 2) == ()
    assert add(((1, 2), (5, 6)), 7, 7) == ((1, 2), (5, 7))  # past every range: extends the last
    assert add(((1, 2), (5, 6)), 8, 9) == ((1, 2), (5, 6), (8, 9))  # or appends after it
    assert from_seqs([5, 1, 2, 3, 7]) == ((1, 3), (5, 5), (7, 7))
    assert complement(((2, 3), (6, 6)), 8) == ((1, 1), (4, 5), (7, 8))


@PROPS
@given(st.sets(st.integers(1, 60), max_size=40), st.integers(1, 70), st.integers(0, 5))
def test_add_is_set_union(seqs: set[int], first: int, width: int) -> None:
    assert add(from_seqs(seqs), first, first + width) == from_seqs(
        seqs | set(range(first, first + width + 1))
    )


events = st.lists(
    st.one_of(
        st.tuples(st.just("r"), st.sampled_from(["a", "b"]), st.integers(1, 40)),
        st.tuples(st.just("g"), st.sampled_from(["a", "b"]), st.integers(1, 40), st.integers(0, 5)),
    ),
    max_size=80,
)


def _feed(evs: list[tuple], cuts: list[int]) -> dict[str, ZoneLedger]:
    """Feed events in batches (cut at `cuts`), with a store that keeps the first digest."""
    ledgers: dict[str, ZoneLedger] = {}
    stored: dict[tuple[str, int], str] = {}
    bounds = sorted({0, len(evs), *(c % (len(evs) + 1) for c in cuts)})
    for lo, hi in itertools.pairwise(bounds):
        batch = evs[lo:hi]
        arrivals = [Arrival(e[1], e[2], f"d{e[2]}", f"p{e[2]}") for e in batch if e[0] == "r"]
        gaps = [GapNotice(e[1], e[2], e[2] + e[3]) for e in batch if e[0] == "g"]
        out = admit(ledgers, arrivals, stored, gaps)
        ledgers = out.ledgers
        stored.update({(a.zone, a.seq): a.digest for a in out.new})
    return ledgers


@PROPS
@given(events, st.randoms(use_true_random=False), st.lists(st.integers(0, 100), max_size=6))
def test_any_order_and_batching_gives_the_same_ledger(evs: list[tuple], rnd, cuts: list[int]) -> None:
    shuffled = list(evs)
    rnd.shuffle(shuffled)
    assert _feed(shuffled, cuts) == _feed(evs, [])


@PROPS
@given(events)
def test_watermark_is_the_largest_prefix_received_or_announced(evs: list[tuple]) -> None:
    ledgers = _feed(evs, [])
    for zone, led in ledgers.items():
        seen = {e[2] for e in evs if e[1] == zone and e[0] == "r"}
        seen |= {s for e in evs if e[1] == zone and e[0] == "g" for s in range(e[2], e[2] + e[3] + 1)}
        n = 0
        while n + 1 in seen:
            n += 1
        assert led.watermark == n
        top = max(seen)
        missing = {s for a, b in led.missing for s in range(a, b + 1)}
        assert missing == set(range(1, top + 1)) - seen
        assert led.records == len({e[2] for e in evs if e[1] == zone and e[0] == "r"})


# -- decoding ------------------------------------------------------------------------------


def _record(seq: int, fmt: str = "msgpack") -> bytes:
    rec = telemetry.TelemetryRecord(seq, 3, 40 + seq, "node", "n1", {"readings": {"m1": {"state": "ok"}}})
    return telemetry.payload(rec, "zone-a", fmt)


def test_decode_a_record_and_its_digest_is_format_free() -> None:
    props = [*telemetry.user_properties(7, 3, 47, "zone-a"), ("publisher", "n1")]
    got = decode("meshems/zone-a/telemetry/node/n1", _record(7), props, "meshems", 5.0)
    assert isinstance(got, Incoming)
    assert (got.arrival.zone, got.arrival.seq, got.arrival.publisher) == ("zone-a", 7, "n1")
    assert (got.kind, got.node, got.term, got.index) == ("node", "n1", 3, 47)
    assert got.readings == {"m1": {"state": "ok"}}
    as_json = decode("meshems/zone-a/telemetry/node/n1", _record(7, "json"), props, "meshems", 6.0)
    assert isinstance(as_json, Incoming) and as_json.arrival.digest == got.arrival.digest
    canonical = json.dumps(got.doc, sort_keys=True, separators=(",", ":")).encode()  # what stored digests are
    assert got.arrival.digest == hashlib.sha256(canonical).hexdigest()


def test_decode_a_gap_notice() -> None:
    body = telemetry.gap_notice("zone-a", 4, 9, "age", "drop_oldest")
    assert decode("pre/fix/zone-a/gaps", body, [], "pre/fix", 0.0) == GapNotice("zone-a", 4, 9, "age")


@pytest.mark.parametrize(
    ("topic", "body"),
    [
        ("other/zone-a/setpoints", _record(1)),
        ("meshems/zone-b/telemetry/node/n1", _record(1)),
        ("meshems/zone-a/setpoints", b"\xc1garbage"),
        ("meshems/zone-a/setpoints", json.dumps({"v": 9, "zone": "zone-a"}).encode()),
        ("meshems/zone-a/gaps", json.dumps({"v": 1, "zone": "zone-a", "first": 5, "last": 2}).encode()),
        ("meshems/zone-a/setpoints", json.dumps({"v": 1, "zone": "zone-a", "seq": "1"}).encode()),
    ],
)
def test_decode_refuses_what_it_cannot_read(topic: str, body: bytes) -> None:
    with pytest.raises(BadRecordError) as exc:
        decode(topic, body, [], "meshems", 0.0)
    assert exc.value.code == "E_BAD_RECORD" and topic in exc.value.message


def test_decode_refuses_a_seq_property_that_disagrees() -> None:
    with pytest.raises(BadRecordError):
        decode("meshems/zone-a/telemetry/node/n1", _record(7), [("seq", "8")], "meshems", 0.0)
