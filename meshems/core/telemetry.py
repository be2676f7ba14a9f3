"""Zone telemetry for the cloud: the record a replica derives from one applied entry, its
topic and its payload.

Every replica applies the same log, so every replica derives the same numbered stream:
record `seq` comes from the entry that raised `ZoneState.telemetry_seq` to `seq`, and its
content is a function of that entry and the state after it. That is what lets any new
leader resume publishing where the broker stopped acknowledging (see node/cloud.py).

Topics are named here and only here (README "Cloud topics" lists them):
    PREFIX/ZONE/telemetry/node/NODE   a node's measurement summary + zone import/export
    PREFIX/ZONE/setpoints             committed setpoints (operator writes and dispatches)
    PREFIX/ZONE/gaps                  explicit notice of records dropped by a full backlog
Pure: no I/O, no clock.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import msgpack

from meshems.core.cluster import TELEMETRY_TYPES, ZoneState
from meshems.core.commands import Rejection, decode
from meshems.core.process_image import build_image

#: kind -> topic suffix under PREFIX/ZONE/ (the one place topics are spelled)
TOPICS = {
    "node": "telemetry/node/{subject}",
    "setpoints": "setpoints",
    "gaps": "gaps",
}
PAYLOAD_VERSION = 1


def topic(prefix: str, zone: str, kind: str, subject: str = "") -> str:
    return f"{prefix}/{zone}/" + TOPICS[kind].format(subject=subject)


def subscription(prefix: str, zone: str) -> str:
    """The filter a cloud subscriber uses to receive all of a zone's telemetry."""
    return f"{prefix}/{zone}/#"


@dataclass(frozen=True, slots=True)
class TelemetryRecord:
    seq: int
    term: int
    index: int
    kind: str
    subject: str
    body: dict[str, Any]


def derive(state: ZoneState, data: bytes, term: int, index: int) -> TelemetryRecord | None:
    """The record of an entry applied with success, given the state after it (None if the
    entry is not a telemetry entry)."""
    cmd = decode(data)
    if isinstance(cmd, Rejection) or cmd.type not in TELEMETRY_TYPES:
        return None
    f = cmd.fields
    seq = state.telemetry_seq
    if cmd.type == "report":
        image = build_image(state)
        node = next((n for n in image.nodes if n.node_id == f["node_id"]), None)
        grid = image.grid_kw
        body = {
            "node": f["node_id"],
            "report_seq": f["seq"],
            "readings": {r["id"]: {"state": r["state"], "values": r["values"]} for r in f["devices"]},
            "node_grid_kw": None if node is None or not node.meter_ok else round(node.grid_kw, 4),
            "zone": {
                "grid_kw": round(grid, 4),
                "import_kw": round(max(0.0, grid), 4),
                "export_kw": round(max(0.0, -grid), 4),
                "complete": image.complete,
            },
        }
        return TelemetryRecord(seq, term, index, "node", f["node_id"], body)
    if cmd.type == "set_setpoint":
        body = {"setpoints": {f["device_id"]: f["kw"]}, "source": f["source"], "rid": cmd.rid}
        return TelemetryRecord(seq, term, index, "setpoints", "", body)
    body = {
        "cycle": f["cycle"],
        "source": "dispatch",
        "setpoints": {s["device_id"]: s["kw"] for s in f["setpoints"]},
        "relays": {r["load"]: r["closed"] for r in f["relays"]},
    }
    return TelemetryRecord(seq, term, index, "setpoints", "", body)


def payload(record: TelemetryRecord, zone: str, fmt: str = "msgpack") -> bytes:
    """The message body: the record with its position, in msgpack (default) or JSON."""
    doc = {
        "v": PAYLOAD_VERSION,
        "zone": zone,
        "seq": record.seq,
        "term": record.term,
        "index": record.index,
        "kind": record.kind,
        **({"node": record.subject} if record.subject else {}),
        "data": record.body,
    }
    if fmt == "json":
        return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()
    return msgpack.packb(doc)


def gap_notice(zone: str, first: int, last: int, reason: str, policy: str) -> bytes:
    """The body of a `gaps` message: records first..last will never be published."""
    doc = {"v": PAYLOAD_VERSION, "zone": zone, "first": first, "last": last, "reason": reason}
    return json.dumps({**doc, "policy": policy}, separators=(",", ":"), sort_keys=True).encode()


def parse_payload(data: bytes) -> dict[str, Any]:
    """A payload back as a dict (msgpack or JSON, told apart by the first byte)."""
    if data[:1] == b"{":
        return dict(json.loads(data))
    return dict(msgpack.unpackb(data, raw=False))


def position(data: bytes) -> tuple[int, int]:
    """(term, index) named in a payload; (0, 0) when it names none (a foreign payload)."""
    try:
        doc = parse_payload(data)
        return int(doc["term"]), int(doc["index"])
    except (ValueError, KeyError, TypeError, msgpack.UnpackException):
        return 0, 0


def user_properties(seq: int, term: int, index: int, zone: str) -> list[tuple[str, str]]:
    """MQTT v5 user properties: the position, so a subscriber can detect gaps and drop
    duplicates without decoding the payload."""
    return [("seq", str(seq)), ("term", str(term)), ("index", str(index)), ("zone", zone)]
