"""What goes into and comes out of the telemetry outbox: records keyed by their zone-wide
seq, runs of seqs, and the reports of what one call stored, ignored or dropped.

Plain data (frozen dataclasses) and the seq-range arithmetic; no I/O. The SQLite outbox
that stores them is `adapters.outbox`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True, slots=True)
class Record:
    seq: int
    created_s: float
    topic: str
    payload: bytes


class SeqRange(NamedTuple):
    """Every integer seq from `first` to `last` (inclusive)."""

    first: int
    last: int


@dataclass(frozen=True)
class DropReport:
    """Records one call dropped, per reason, with their seq ranges (for a gap notice and an alarm)."""

    age: tuple[SeqRange, ...] = ()
    bytes: tuple[SeqRange, ...] = ()
    rejected: tuple[SeqRange, ...] = ()

    @property
    def dropped_age(self) -> int:
        return _count(self.age)

    @property
    def dropped_bytes(self) -> int:
        return _count(self.bytes)

    @property
    def rejected_count(self) -> int:
        return _count(self.rejected)

    @property
    def total(self) -> int:
        return self.dropped_age + self.dropped_bytes + self.rejected_count

    def __bool__(self) -> bool:
        return bool(self.age or self.bytes or self.rejected)


@dataclass(frozen=True)
class AppendResult:
    inserted: int
    duplicates: int  # already stored with the same topic and payload: ignored
    below_floor: int  # at or below the floor (pruned or dropped before): ignored, not counted again
    drops: DropReport = field(default_factory=DropReport)


@dataclass(frozen=True)
class OutboxStats:
    depth: int
    bytes: int
    first_seq: int | None
    last_seq: int | None
    oldest_age_s: float | None
    dropped_age: int  # cumulative since the file was created
    dropped_bytes: int
    rejected: int
    last_pruned: int | None


def _count(ranges: Iterable[SeqRange]) -> int:
    return sum(r.last - r.first + 1 for r in ranges)


def seq_ranges(seqs: Iterable[int]) -> tuple[SeqRange, ...]:
    """Collapse seqs into sorted runs of consecutive integers."""
    out: list[SeqRange] = []
    for seq in sorted(set(seqs)):
        if out and out[-1].last == seq - 1:
            out[-1] = SeqRange(out[-1].first, seq)
        else:
            out.append(SeqRange(seq, seq))
    return tuple(out)
