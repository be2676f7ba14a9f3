"""What the cloud ingest reads off the broker: a telemetry record or a `gaps` notice, decoded
from its topic, payload and user properties (the format `core.telemetry` writes), with the
digest de-duplication compares.

The digest is SHA-256 over the record's canonical JSON (sorted keys), so a repeat in msgpack
and in JSON is the same record. Pure: no I/O, no clock (the arrival time is passed in).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgpack

from meshems.core.ingest_ledger import Arrival, BadRecordError, GapNotice
from meshems.core.telemetry import PAYLOAD_VERSION, parse_payload


@dataclass(frozen=True, slots=True)
class Incoming:
    """A decoded telemetry record with what the store keeps of it."""

    arrival: Arrival
    kind: str
    node: str
    term: int
    index: int
    payload: bytes
    doc: dict[str, Any]

    @property
    def readings(self) -> dict[str, Any]:
        """device id -> {"state", "values"} of a node record ({} for other kinds)."""
        data = self.doc.get("data")
        got = data.get("readings") if isinstance(data, dict) else None
        return got if isinstance(got, dict) else {}


#: json.dumps(doc, sort_keys=True, separators=(",", ":")) without building an encoder per call
#: (a decoded payload cannot be circular, so the check is off; the text is the same)
_CANONICAL = json.JSONEncoder(sort_keys=True, separators=(",", ":"), check_circular=False)


def digest(doc: dict[str, Any]) -> str:
    return hashlib.sha256(_CANONICAL.encode(doc).encode()).hexdigest()


def decode(
    topic: str, payload: bytes, user_props: Sequence[tuple[str, str]], prefix: str, received_s: float
) -> Incoming | GapNotice:
    """A message of `PREFIX/ZONE/...` as a record or a gap notice; BadRecordError naming the
    topic when it is neither (foreign payload, version, missing seq, zone mismatch)."""
    parts = topic.split("/")
    base = prefix.split("/")
    if parts[: len(base)] != base or len(parts) < len(base) + 2:
        raise BadRecordError(f"{topic}: not under {prefix}/ZONE/", topic=topic)
    zone, rest = parts[len(base)], parts[len(base) + 1 :]
    try:
        doc = parse_payload(payload)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise BadRecordError(f"{topic}: payload is neither msgpack nor JSON: {exc}", topic=topic) from None
    if doc.get("v") != PAYLOAD_VERSION:
        msg = f"{topic}: payload version {doc.get('v')!r}, this version reads {PAYLOAD_VERSION}"
        raise BadRecordError(msg, topic=topic)
    if doc.get("zone") != zone:
        raise BadRecordError(f"{topic}: payload names zone {doc.get('zone')!r}", topic=topic)
    props = dict(user_props)
    if rest == ["gaps"]:
        first, last = _int(doc, "first", topic), _int(doc, "last", topic)
        if not 1 <= first <= last:
            raise BadRecordError(f"{topic}: gap {first}..{last} is no range of seqs", topic=topic)
        return GapNotice(zone, first, last, str(doc.get("reason", "")))
    seq = _int(doc, "seq", topic)
    if seq < 1 or ("seq" in props and props["seq"] != str(seq)):
        raise BadRecordError(f"{topic}: seq {seq} (property {props.get('seq')!r})", topic=topic)
    kind = str(doc.get("kind", ""))
    arrival = Arrival(zone, seq, digest(doc), props.get("publisher", ""), received_s)
    return Incoming(
        arrival,
        kind,
        str(doc.get("node", "")),
        _int(doc, "term", topic),
        _int(doc, "index", topic),
        payload,
        doc,
    )


def _int(doc: dict[str, Any], key: str, topic: str) -> int:
    value = doc.get(key)
    if not isinstance(value, int) or isinstance(value, bool):
        raise BadRecordError(f"{topic}: payload key {key!r} is {value!r}, not an integer", topic=topic)
    return value
