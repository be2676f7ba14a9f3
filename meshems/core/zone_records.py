"""The records a zone state holds: members, devices, committed setpoints and relay states,
node reports, the last dispatch, forecast records, and the `Result` of applying an entry.

Owns their shape (frozen dataclasses) and plain-dict forms for status. Pure: no I/O; the
state that holds them is `core.cluster.ZoneState`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Member:
    node_id: str
    raft: str
    api: str


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    kind: str
    owner: str
    min_kw: float
    max_kw: float


@dataclass(frozen=True, slots=True)
class Setpoint:
    """A committed setpoint and its fencing token (term, index)."""

    device_id: str
    kw: float
    term: int
    index: int
    rid: str
    source: str


@dataclass(frozen=True, slots=True)
class Result:
    """What applying one log entry returned to the proposer."""

    ok: bool
    code: str
    message: str
    term: int
    index: int
    duplicate: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "code": self.code,
            "message": self.message,
            "term": self.term,
            "index": self.index,
            "duplicate": self.duplicate,
        }


@dataclass(frozen=True, slots=True)
class Reading:
    """One device's summary in a node report: health and values by role."""

    device_id: str
    state: str
    values: tuple[tuple[str, float], ...]


@dataclass(frozen=True, slots=True)
class NodeReport:
    """A node's latest measurement summary (about 1 Hz), stamped with its log position."""

    node_id: str
    seq: int
    term: int
    index: int
    readings: tuple[Reading, ...]
    #: the battery energy the node's forecast asks the zone to hold for its coming peak
    reserve_kwh: float = 0.0


@dataclass(frozen=True, slots=True)
class RelayState:
    """A committed state of one relay-switched load (from dispatch), with its token."""

    load: str
    closed: bool
    term: int
    index: int
    controller: str
    expected_kw: float


@dataclass(frozen=True, slots=True)
class RelayOverride:
    """An operator's override of one load, with the (term, index) that committed it: the
    load stays `closed` (on) or open (off) until `until_s` (epoch seconds; None: until
    cleared). Dispatch, shedding and restore leave the load alone meanwhile."""

    load: str
    closed: bool
    until_s: float | None
    term: int
    index: int
    rid: str
    source: str


@dataclass(frozen=True, slots=True)
class DispatchRecord:
    """What the last committed dispatch used and decided (for `meshems explain`)."""

    cycle: int
    term: int
    index: int
    inputs: tuple[tuple[str, float], ...]
    decisions: tuple[tuple[str, str, str], ...]  # device or load id, controller, reason


@dataclass(frozen=True, slots=True)
class ForecastRecord:
    """A node's load forecaster, replicated so peers hold it with its version and digest."""

    node_id: str
    version: int
    digest: str
    data: bytes  # the .npz (verified against the digest by whoever loads it)
    term: int
    index: int


def setpoint_dict(sp: Setpoint) -> dict[str, Any]:
    return {
        "device_id": sp.device_id,
        "kw": sp.kw,
        "term": sp.term,
        "index": sp.index,
        "rid": sp.rid,
        "source": sp.source,
    }


@dataclass(frozen=True, slots=True)
class ApiToken:
    """A scoped API token (`meshems token create`): its `digest` (SHA-256 of the secret part;
    the token itself is never replicated), `role`, expiry (`expires_s`, epoch seconds, set by
    the proposer), who created it and whether it was revoked (kept, so the id is not reused)."""

    id: str
    name: str
    role: str
    digest: str
    expires_s: float
    created_by: str
    revoked: bool = False
