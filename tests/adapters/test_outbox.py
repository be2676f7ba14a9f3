"""The telemetry outbox on real SQLite files: seq order, idempotent re-append, divergence, prune,
age and byte caps under both policies (every drop counted and reported by seq range), restart
and a damaged row (CRC); a property test checks random operation sequences against a plain
in-memory model. The file's own checks and quarantine are in test_outbox_file.py."""

from __future__ import annotations

import sqlite3
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshems.adapters.outbox import Outbox, OutboxDivergedError
from meshems.adapters.outbox_records import AppendResult, DropReport, Record, SeqRange, seq_ranges
from meshems.core.errors import JournalCorruptError


def rec(seq: int, created_s: float = 0.0, size: int = 10, topic: str = "zone/t") -> Record:
    return Record(seq, created_s, topic, bytes([seq % 256]) * size)


def recs(seqs: range | list[int], created_s: float = 0.0, size: int = 10) -> list[Record]:
    return [rec(s, created_s, size) for s in seqs]


def open_outbox(path: Path, max_bytes: int = 1_000_000, max_age_s: float = 3600.0, **kw: str) -> Outbox:
    return Outbox(path, max_bytes=max_bytes, max_age_s=max_age_s, **kw)  # type: ignore[arg-type]


def read_all(box: Outbox) -> list[Record]:
    return box.read_from(-1, 1_000_000)


@pytest.fixture
def box(tmp_path: Path):  # type: ignore[no-untyped-def]
    outbox = open_outbox(tmp_path / "outbox.db")
    yield outbox
    outbox.close()


def test_records_come_back_in_seq_order_page_by_page(box: Outbox) -> None:
    result = box.append(recs([5, 1, 3]), now_s=0.0)
    assert result == AppendResult(inserted=3, duplicates=0, below_floor=0)
    box.append(recs([4, 2, 6]), now_s=0.0)
    assert [r.seq for r in box.read_from(0, 4)] == [1, 2, 3, 4]
    assert [r.seq for r in box.read_from(4, 4)] == [5, 6]
    assert box.read_from(6, 4) == []
    assert read_all(box) == recs(range(1, 7))
    stats = box.stats(now_s=10.0)
    assert (stats.depth, stats.bytes, stats.first_seq, stats.last_seq, stats.oldest_age_s) == (
        6,
        60,
        1,
        6,
        10.0,
    )


def test_reappending_the_same_records_is_ignored(box: Outbox) -> None:
    box.append(recs(range(1, 6)), now_s=0.0)
    # a restart re-derives them from the Raft log: created_s may differ, content may not
    result = box.append(recs(range(1, 6), created_s=0.5) + recs(range(6, 8)) + [rec(6)], now_s=1.0)
    assert (result.inserted, result.duplicates) == (2, 5)
    assert read_all(box) == recs(range(1, 8))
    assert box.stats(1.0).bytes == 70


def test_divergent_reappend_raises_and_writes_nothing(box: Outbox) -> None:
    box.append(recs(range(1, 4)), now_s=0.0)
    divergent = Record(2, 0.0, "zone/t", b"something else")
    with pytest.raises(OutboxDivergedError, match=r"seq 2 .*diverged") as exc:
        box.append([rec(4), divergent], now_s=0.0)
    assert exc.value.code == "E_OUTBOX_DIVERGED" and str(box.path) in exc.value.message
    with pytest.raises(OutboxDivergedError, match="seq 2"):
        box.append([Record(2, 0.0, "zone/other", rec(2).payload)], now_s=0.0)  # topic counts too
    with pytest.raises(OutboxDivergedError, match="twice in one batch"):
        box.append([rec(9), Record(9, 0.0, "zone/t", b"x")], now_s=0.0)
    assert read_all(box) == recs(range(1, 4))  # rec(4) was rolled back with the failed batch
    assert box.stats(0.0).depth == 3 and box.stats(0.0).bytes == 30


def test_a_failed_append_rolls_back_its_drops_too(box: Outbox) -> None:
    box.append([*recs(range(1, 4), created_s=0.0), rec(5, created_s=3000.0)], now_s=3000.0)
    divergent = Record(5, 4000.0, "zone/t", b"something else")
    with pytest.raises(OutboxDivergedError):
        box.append([rec(6, created_s=4000.0), divergent], now_s=4000.0)  # after the age drop of 1..3
    stats = box.stats(4000.0)
    assert (stats.depth, stats.bytes, stats.dropped_age) == (4, 40, 0)
    assert [r.seq for r in read_all(box)] == [1, 2, 3, 5]
    assert box.enforce_caps(now_s=4000.0) == DropReport(age=(SeqRange(1, 3),))
    assert box.stats(4000.0).dropped_age == 3


def test_prune_deletes_acknowledged_records_and_they_stay_out(box: Outbox) -> None:
    box.append(recs(range(1, 11)), now_s=0.0)
    assert box.prune_through(4) == 4
    assert [r.seq for r in read_all(box)] == list(range(5, 11))
    assert box.prune_through(2) == 0  # an older watermark changes nothing
    stats = box.stats(0.0)
    assert (stats.depth, stats.bytes, stats.first_seq, stats.last_pruned) == (6, 60, 5, 4)
    result = box.append(recs(range(1, 13)), now_s=0.0)  # re-derived after a restart
    assert (result.inserted, result.duplicates, result.below_floor) == (2, 6, 4)
    assert [r.seq for r in read_all(box)] == list(range(5, 13))
    assert box.prune_through(100) == 8 and box.stats(0.0).depth == 0


def test_age_cap_drops_and_reports_old_records(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "o.db", max_age_s=60.0) as box:
        box.append(recs(range(1, 4), created_s=0.0) + recs(range(4, 6), created_s=50.0), now_s=50.0)
        box.append([rec(6, created_s=10.0), rec(7, created_s=51.0)], now_s=100.0)  # 6 is not stored
        assert [r.seq for r in read_all(box)] == [4, 5, 7]
        report = box.enforce_caps(now_s=111.0)
        assert report == DropReport(age=(SeqRange(4, 5),))
        assert [r.seq for r in read_all(box)] == [7]  # exactly max_age_s old: kept
        assert box.enforce_caps(now_s=111.0) == DropReport()  # nothing twice
        stats = box.stats(111.0)
        assert (stats.dropped_age, stats.dropped_bytes, stats.rejected) == (6, 0, 0)
        assert (stats.depth, stats.bytes) == (1, 10)
        assert box.append(recs(range(1, 6), created_s=0.0), now_s=111.0).below_floor == 5  # not counted again
        assert box.stats(111.0).dropped_age == 6


def test_append_reports_age_drops_of_stored_and_new_records(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "o.db", max_age_s=60.0) as box:
        box.append(recs(range(1, 3), created_s=0.0), now_s=0.0)
        result = box.append([rec(3, created_s=5.0), rec(4, created_s=70.0)], now_s=70.0)
        assert result.inserted == 1 and result.drops == DropReport(age=(SeqRange(1, 3),))


def test_byte_cap_drop_oldest_drops_and_reports_the_oldest(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "o.db", max_bytes=100, full_policy="drop_oldest") as box:
        assert not box.append(recs(range(1, 11)), now_s=0.0).drops  # exactly at the cap
        result = box.append([rec(11, size=11)], now_s=0.0)
        assert result.inserted == 1
        assert result.drops == DropReport(bytes=(SeqRange(1, 2),))  # 1 x 10 bytes is not room for 11
        assert [r.seq for r in read_all(box)] == list(range(3, 12))
        result = box.append(recs(range(12, 15)), now_s=0.0)  # 121 bytes: 21 too many
        assert result.drops == DropReport(bytes=(SeqRange(3, 5),))
        assert [r.seq for r in read_all(box)] == list(range(6, 15))
        stats = box.stats(0.0)
        assert (stats.bytes, stats.dropped_bytes, stats.rejected, stats.dropped_age) == (91, 5, 0, 0)
        assert box.enforce_caps(now_s=0.0) == DropReport()
        assert box.append(recs(range(1, 6)), now_s=0.0).below_floor == 5  # dropped ones stay dropped


def test_byte_cap_drop_oldest_with_one_oversize_record(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "o.db", max_bytes=100, full_policy="drop_oldest") as box:
        box.append(recs(range(1, 3)), now_s=0.0)
        result = box.append([rec(3, size=150)], now_s=0.0)
        assert result.drops == DropReport(bytes=(SeqRange(1, 3),))
        assert read_all(box) == [] and box.stats(0.0).bytes == 0


def test_byte_cap_reject_new_refuses_the_rest_of_the_batch(tmp_path: Path) -> None:
    with open_outbox(tmp_path / "o.db", max_bytes=100, full_policy="reject_new") as box:
        box.append(recs(range(1, 9)), now_s=0.0)
        # 9 fits; 10 (25 bytes) does not, and 11 (which would fit) is refused with it
        result = box.append([rec(9), rec(10, size=25), rec(11, size=5)], now_s=0.0)
        assert result.inserted == 1
        assert result.drops == DropReport(rejected=(SeqRange(10, 11),))
        assert [r.seq for r in read_all(box)] == list(range(1, 10))
        assert box.append([rec(10)], now_s=0.0).inserted == 1  # exactly at the cap fits
        assert box.enforce_caps(now_s=0.0) == DropReport()  # reject_new never drops stored records
        stats = box.stats(0.0)
        assert (stats.bytes, stats.rejected, stats.dropped_bytes) == (100, 2, 0)
        box.prune_through(5)
        result = box.append(recs(range(11, 14)), now_s=0.0)  # rejected seqs may be offered again
        assert result.inserted == 3 and not result.drops
        assert box.stats(0.0).rejected == 2


def test_restart_loses_nothing_and_keeps_the_counters(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with open_outbox(path, max_bytes=100, max_age_s=60.0, full_policy="reject_new") as box:
        box.append(recs(range(1, 4), created_s=0.0) + recs(range(4, 12), created_s=50.0), now_s=50.0)
        box.enforce_caps(now_s=70.0)  # drops 1..3 for age
        box.prune_through(5)
        before = read_all(box)
        stats_before = box.stats(70.0)
    assert stats_before.dropped_age == 3 and stats_before.rejected == 1 and stats_before.last_pruned == 5
    with open_outbox(
        path, max_bytes=100, max_age_s=60.0, full_policy="reject_new", synchronous="FULL"
    ) as box:
        assert read_all(box) == before
        assert box.stats(70.0) == stats_before
        assert box.append(recs(range(1, 12), created_s=50.0), now_s=70.0).below_floor == 5


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="full_policy"):
        open_outbox(tmp_path / "o.db", full_policy="drop_newest")
    with pytest.raises(ValueError, match="synchronous"):
        open_outbox(tmp_path / "o.db", synchronous="OFF")
    with pytest.raises(ValueError, match="max_bytes"):
        open_outbox(tmp_path / "o.db", max_bytes=0)
    with open_outbox(tmp_path / "o.db") as box, pytest.raises(ValueError, match="seq"):
        box.append([rec(-1)], now_s=0.0)


def test_a_damaged_row_fails_its_crc(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    with open_outbox(path) as box:
        box.append(recs(range(1, 10)), now_s=0.0)
    raw = sqlite3.connect(path)
    raw.execute("UPDATE records SET payload = ? WHERE seq = 5", (b"\x05" * 9 + b"\x04",))
    raw.commit()
    raw.close()
    with open_outbox(path) as box:  # the file itself is sound: quick_check passes
        assert [r.seq for r in box.read_from(0, 4)] == [1, 2, 3, 4]
        with pytest.raises(JournalCorruptError, match=r"seq 5 fails its CRC") as exc:
            box.read_from(4, 4)
        assert exc.value.code == "E_JOURNAL_CORRUPT" and str(path) in exc.value.message
        assert exc.value.context == {"path": str(path), "seq": 5}
        with pytest.raises(JournalCorruptError, match="seq 5"):
            box.append([rec(5)], now_s=0.0)  # a re-append must not vouch for a damaged row


# -- property test: random operations against a plain in-memory model --------------------------------


@dataclass
class Model:
    """What the outbox must hold, written as plainly as possible."""

    policy: str
    max_bytes: int
    max_age_s: float
    rows: dict[int, Record] = field(default_factory=dict)
    last_pruned: int = -1
    dropped_through: int = -1
    dropped_age: int = 0
    dropped_bytes: int = 0
    rejected: int = 0

    def size(self) -> int:
        return sum(len(r.payload) for r in self.rows.values())

    def drop(self, seqs: list[int]) -> None:
        for seq in seqs:
            del self.rows[seq]
        self.dropped_through = max([self.dropped_through, *seqs])

    def drop_aged(self, now_s: float) -> list[int]:
        aged = [s for s, r in self.rows.items() if r.created_s < now_s - self.max_age_s]
        self.drop(aged)
        self.dropped_age += len(aged)
        return aged

    def enforce(self, now_s: float) -> DropReport:
        aged = self.drop_aged(now_s)
        over: list[int] = []
        while self.policy == "drop_oldest" and self.size() > self.max_bytes:
            over.append(min(self.rows))
            self.drop(over[-1:])
        self.dropped_bytes += len(over)
        return DropReport(age=seq_ranges(aged), bytes=seq_ranges(over))

    def append(self, batch: list[Record], now_s: float) -> AppendResult:
        first: dict[int, Record] = {}
        for r in batch:
            first.setdefault(r.seq, r)
        aged_stored = self.drop_aged(now_s)
        aged, rejected = list(aged_stored), []
        inserted = duplicates = below = 0
        for seq in sorted(first):
            r = first[seq]
            if seq in self.rows:
                duplicates += 1
            elif seq <= max(self.last_pruned, self.dropped_through):
                below += 1
            elif r.created_s < now_s - self.max_age_s:
                aged.append(seq)
            elif self.policy == "reject_new" and (rejected or self.size() + len(r.payload) > self.max_bytes):
                rejected.append(seq)
            else:
                self.rows[seq] = r
                inserted += 1
        new_aged = aged[len(aged_stored) :]
        self.dropped_age += len(new_aged)
        self.dropped_through = max([self.dropped_through, *new_aged])
        self.rejected += len(rejected)
        over = self.enforce(now_s).bytes if self.policy == "drop_oldest" else ()
        return AppendResult(
            inserted, duplicates, below, DropReport(seq_ranges(aged), over, seq_ranges(rejected))
        )

    def prune(self, seq: int) -> int:
        gone = [s for s in self.rows if s <= seq]
        for s in gone:
            del self.rows[s]
        self.last_pruned = max(self.last_pruned, seq)
        return len(gone)


def payload_of(seq: int) -> bytes:
    return f"{seq}:".encode() * (1 + seq % 5)


ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("append"),
            st.lists(st.tuples(st.integers(0, 40), st.integers(0, 30)), max_size=8),
            st.integers(0, 10),
        ),
        st.tuples(st.just("prune"), st.integers(0, 45), st.just(0)),
        st.tuples(st.just("enforce"), st.just(None), st.integers(0, 15)),
        st.tuples(st.just("reopen"), st.just(None), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=200, deadline=None)
@given(
    policy=st.sampled_from(["drop_oldest", "reject_new"]),
    max_bytes=st.sampled_from([20, 60, 150, 10_000]),
    operations=ops,
)
def test_outbox_matches_a_plain_model(policy: str, max_bytes: int, operations: list[tuple]) -> None:
    model = Model(policy, max_bytes, max_age_s=20.0)
    now_s = 100.0
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "o.db"
        box = open_outbox(path, max_bytes=max_bytes, max_age_s=20.0, full_policy=policy)
        try:
            for kind, arg, advance_s in operations:
                now_s += advance_s
                if kind == "append":
                    batch = [Record(s, now_s - lag, f"t/{s % 3}", payload_of(s)) for s, lag in arg]
                    assert box.append(batch, now_s) == model.append(batch, now_s)
                elif kind == "prune":
                    assert box.prune_through(arg) == model.prune(arg)
                elif kind == "enforce":
                    assert box.enforce_caps(now_s) == model.enforce(now_s)
                else:
                    box.close()
                    box = open_outbox(path, max_bytes=max_bytes, max_age_s=20.0, full_policy=policy)
                assert read_all(box) == [model.rows[s] for s in sorted(model.rows)]
                stats = box.stats(now_s)
                assert (stats.depth, stats.bytes) == (len(model.rows), model.size())
                assert (stats.dropped_age, stats.dropped_bytes, stats.rejected) == (
                    model.dropped_age,
                    model.dropped_bytes,
                    model.rejected,
                )
                if policy == "drop_oldest":
                    assert stats.bytes <= max_bytes
        finally:
            box.close()
