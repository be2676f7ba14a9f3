"""The cloud ingest's ledger: per zone which telemetry seqs arrived, which a `gaps` notice
announced as never coming, the contiguous watermark and the missing ranges; and the
de-duplication rule by (zone, seq) with the payload digest.

Order-free by construction: a ledger is a set of seq ranges plus maxima, so any arrival
order of the same records gives the same ledger (a shared subscription does not keep order
across workers). Pure: no I/O, no clock (arrival times are passed in).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

from meshems.core.errors import MeshemsError

Range = tuple[int, int]  # every seq from first to last, inclusive


class DuplicateDiffersError(MeshemsError):
    """A repeat of (zone, seq) whose payload differs from the stored one: never kept or replaced."""

    code = "E_DUPLICATE_DIFFERS"


class BadRecordError(MeshemsError):
    """A message on a telemetry topic that is not a record or gap notice this version reads."""

    code = "E_BAD_RECORD"


@dataclass(frozen=True, slots=True)
class Arrival:
    """One telemetry record as it arrived: its key, the digest of its payload, who published
    it and when the ingest received it."""

    zone: str
    seq: int
    digest: str
    publisher: str = ""
    received_s: float = 0.0


@dataclass(frozen=True, slots=True)
class GapNotice:
    """Records first..last of `zone` will never be published (the leader dropped them)."""

    zone: str
    first: int
    last: int
    reason: str = ""


@dataclass(frozen=True, slots=True)
class ZoneLedger:
    """What one zone's stream looks like from the cloud. `publisher` is the publisher of the
    highest seq received (the current leader, as far as the stream tells)."""

    zone: str
    received: tuple[Range, ...] = ()
    announced: tuple[Range, ...] = ()
    last_seq: int = 0
    publisher: str = ""
    last_received_s: float = 0.0

    @property
    def watermark(self) -> int:
        """The largest n with every seq 1..n received or announced as a gap (0: none)."""
        covered = union(self.received, self.announced)
        return covered[0][1] if covered and covered[0][0] == 1 else 0

    @property
    def missing(self) -> tuple[Range, ...]:
        """Seqs up to the highest one seen (received or announced) that are neither."""
        covered = union(self.received, self.announced)
        if not covered:
            return ()
        return complement(covered, covered[-1][1])

    @property
    def records(self) -> int:
        return count(self.received)

    def to_dict(self) -> dict[str, object]:
        return {
            "zone": self.zone,
            "publisher": self.publisher,
            "last_seq": self.last_seq,
            "contiguous_through": self.watermark,
            "records": self.records,
            "missing": [list(r) for r in self.missing],
            "announced": [list(r) for r in self.announced],
            "received": [list(r) for r in self.received],
            "last_received_s": self.last_received_s,
        }


@dataclass(frozen=True)
class Admitted:
    """The outcome of one batch: what to store, what was a repeat, what conflicted."""

    ledgers: dict[str, ZoneLedger]
    new: tuple[Arrival, ...] = ()
    duplicates: tuple[Arrival, ...] = ()
    conflicts: tuple[DuplicateDiffersError, ...] = ()
    gaps: tuple[GapNotice, ...] = ()
    per_zone: dict[str, dict[str, int]] = field(default_factory=dict)


# -- range sets (sorted, disjoint, non-adjacent) ---------------------------------------------


def add(ranges: Sequence[Range], first: int, last: int) -> tuple[Range, ...]:
    """`ranges` with first..last added (merged with overlapping and adjacent ranges)."""
    if first > last:
        return tuple(ranges)
    if ranges and first > ranges[-1][1]:  # past every range (the common case): extend or append
        a, b = ranges[-1]
        if first == b + 1:
            return (*ranges[:-1], (a, last))
        return (*ranges, (first, last))
    out: list[Range] = []
    placed = False
    for a, b in ranges:
        if b + 1 < first:
            out.append((a, b))
        elif last + 1 < a:
            if not placed:
                out.append((first, last))
                placed = True
            out.append((a, b))
        else:
            first, last = min(a, first), max(b, last)
    if not placed:
        out.append((first, last))
    return tuple(sorted(out))


def union(*sets: Sequence[Range]) -> tuple[Range, ...]:
    out: tuple[Range, ...] = ()
    for s in sets:
        for a, b in s:
            out = add(out, a, b)
    return out


def from_seqs(seqs: Iterable[int]) -> tuple[Range, ...]:
    """Seqs collapsed into sorted runs of consecutive integers."""
    out: list[Range] = []
    for seq in sorted(set(seqs)):
        if out and out[-1][1] == seq - 1:
            out[-1] = (out[-1][0], seq)
        else:
            out.append((seq, seq))
    return tuple(out)


def complement(ranges: Sequence[Range], through: int) -> tuple[Range, ...]:
    """The seqs 1..through not in `ranges`."""
    out: list[Range] = []
    pos = 1
    for a, b in ranges:
        if a > through:
            break
        if a > pos:
            out.append((pos, a - 1))
        pos = max(pos, b + 1)
    if pos <= through:
        out.append((pos, through))
    return tuple(out)


def contains(ranges: Sequence[Range], seq: int) -> bool:
    return any(a <= seq <= b for a, b in ranges)


def count(ranges: Iterable[Range]) -> int:
    return sum(b - a + 1 for a, b in ranges)


# -- the ledger ------------------------------------------------------------------------------


def receive(ledger: ZoneLedger, arrival: Arrival) -> ZoneLedger:
    """The ledger with `arrival`'s seq received (a seq already received changes nothing but
    the arrival time's maximum)."""
    top = arrival.seq > ledger.last_seq
    return ZoneLedger(  # not dataclasses.replace: this runs once per record
        ledger.zone,
        add(ledger.received, arrival.seq, arrival.seq),
        ledger.announced,
        arrival.seq if top else ledger.last_seq,
        arrival.publisher if top else ledger.publisher,
        max(ledger.last_received_s, arrival.received_s),
    )


def announce(ledger: ZoneLedger, notice: GapNotice) -> ZoneLedger:
    """The ledger with a gap notice's range announced."""
    return replace(ledger, announced=add(ledger.announced, notice.first, notice.last))


def admit(
    ledgers: Mapping[str, ZoneLedger],
    arrivals: Iterable[Arrival],
    stored: Mapping[tuple[str, int], str],
    gaps: Iterable[GapNotice] = (),
) -> Admitted:
    """Decide one batch against what is stored (`stored`: (zone, seq) -> digest of the kept
    payload, for the keys of this batch at least). A new key is stored once (the first of a
    batch wins); a repeat with the same digest is a no-op; one whose digest differs is an
    E_DUPLICATE_DIFFERS conflict, never stored."""
    out = dict(ledgers)
    kept = dict(stored)
    new: list[Arrival] = []
    dups: list[Arrival] = []
    conflicts: list[DuplicateDiffersError] = []
    per_zone: dict[str, dict[str, int]] = {}
    for arr in arrivals:
        tally = per_zone.setdefault(arr.zone, {"new": 0, "duplicates": 0, "conflicts": 0})
        led = out.get(arr.zone) or ZoneLedger(arr.zone)
        key = (arr.zone, arr.seq)
        have = kept.get(key)
        if have is None:
            kept[key] = arr.digest
            new.append(arr)
            tally["new"] += 1
        elif have == arr.digest:
            dups.append(arr)
            tally["duplicates"] += 1
        else:
            conflicts.append(
                DuplicateDiffersError(
                    f"zone {arr.zone} seq {arr.seq}: a repeat from {arr.publisher or '?'} differs from "
                    f"the stored record (digest {arr.digest[:12]} vs {have[:12]}); kept the stored "
                    "one: check which publisher derives a different stream",
                    zone=arr.zone,
                    seq=arr.seq,
                    publisher=arr.publisher,
                )
            )
            tally["conflicts"] += 1
            continue
        out[arr.zone] = receive(led, arr)
    notices = tuple(gaps)
    for g in notices:
        out[g.zone] = announce(out.get(g.zone) or ZoneLedger(g.zone), g)
    return Admitted(out, tuple(new), tuple(dups), tuple(conflicts), notices, per_zone)


def build(arrivals: Iterable[Arrival], gaps: Iterable[GapNotice] = ()) -> dict[str, ZoneLedger]:
    """The ledgers of a set of arrivals and notices, from nothing (tests, a rebuild)."""
    return admit({}, arrivals, {}, gaps).ledgers
