"""What every ingest store shares, whatever its SQL: the zone row `meshems cloud zones` shows,
the ledger's stored form (JSON), the rows a batch's admitted records become (records and
per-device readings, the first of a batch per key), and a stored reading read back.

Pure: no I/O, no SQL; the SQLite and PostgreSQL stores (`adapters.ingest_store`,
`adapters.ingest_pg`) both use it, so they store and answer the same way.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from meshems.core.errors import MeshemsError
from meshems.core.ingest_ledger import Admitted, ZoneLedger
from meshems.core.ingest_records import Incoming


class StoreError(MeshemsError):
    """The ingest store cannot be opened, read or written."""

    code = "E_STORE"


@dataclass(frozen=True)
class ZoneRow:
    """One zone as `meshems cloud zones` shows it."""

    ledger: ZoneLedger
    duplicates: int
    conflicts: int
    msgs_s: float

    def to_dict(self, now_s: float) -> dict[str, Any]:
        led = self.ledger
        lag = round(now_s - led.last_received_s, 1) if led.last_received_s else None
        return {
            **{k: v for k, v in led.to_dict().items() if k != "received"},
            "duplicates": self.duplicates,
            "conflicts": self.conflicts,
            "lag_s": lag,
            "msgs_s": round(self.msgs_s, 1),
        }


def _ranges_json(ranges: Sequence[tuple[int, int]]) -> str:
    return "[" + ",".join(f"[{a:d},{b:d}]" for a, b in ranges) + "]"


def ledger_to_json(led: ZoneLedger) -> str:
    """The ledger as compact JSON; the same text `json.dumps(..., separators=(",", ":"))` writes,
    formatted by hand (one per zone per batch: the encoder's set-up dominated)."""
    t = led.last_received_s
    if math.isfinite(t):
        return (
            f'{{"received":{_ranges_json(led.received)},"announced":{_ranges_json(led.announced)},'
            f'"last_seq":{led.last_seq:d},"publisher":{json.dumps(led.publisher)},"last_received_s":{t!r}}}'
        )
    return _ledger_to_json_slow(led)


def _ledger_to_json_slow(led: ZoneLedger) -> str:
    return json.dumps(
        {
            "received": led.received,
            "announced": led.announced,
            "last_seq": led.last_seq,
            "publisher": led.publisher,
            "last_received_s": led.last_received_s,
        },
        separators=(",", ":"),
    )


def ledger_from_json(zone: str, text: str) -> ZoneLedger:
    d = json.loads(text)
    return ZoneLedger(
        zone,
        tuple((int(a), int(b)) for a, b in d["received"]),
        tuple((int(a), int(b)) for a, b in d["announced"]),
        int(d["last_seq"]),
        str(d["publisher"]),
        float(d["last_received_s"]),
    )


def first_of_batch(records: Sequence[Incoming]) -> list[Incoming]:
    """Each (zone, seq) of a batch once, the first one (the one `admit` compares repeats with)."""
    seen: set[tuple[str, int]] = set()
    out = []
    for r in records:
        key = (r.arrival.zone, r.arrival.seq)
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def admitted_records(records: Sequence[Incoming], out: Admitted) -> Iterator[Incoming]:
    """The records of a batch that `admit` decided to store, each key once (the first)."""
    new = {(a.zone, a.seq) for a in out.new}
    for r in records:
        key = (r.arrival.zone, r.arrival.seq)
        if key in new:
            new.discard(key)
            yield r


def reading_rows(r: Incoming) -> Iterator[tuple[str, str, Any]]:
    """(device, state, reading as decoded) for each device reading in a node record."""
    for device, reading in r.readings.items():
        state = str(reading.get("state", "")) if isinstance(reading, dict) else ""
        yield str(device), state, reading


def reading_values(reading: str | dict[str, Any]) -> dict[str, Any]:
    """{"values": {...}} of a stored reading (JSON text, or already decoded)."""
    doc = json.loads(reading) if isinstance(reading, str) else reading
    values = doc.get("values") if isinstance(doc, dict) else None
    return {"values": values if isinstance(values, dict) else {}}


def record_dict(
    seq: int, received_s: float, kind: str, node: str, term: int, idx: int, publisher: str, data: Any
) -> dict[str, Any]:
    """One stored record as `meshems cloud query` returns it."""
    return {"seq": seq, "received_s": received_s, "kind": kind, "node": node, "term": term, "index": idx,
            "publisher": publisher, "data": data}  # fmt: skip
