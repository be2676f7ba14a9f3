"""What goes into the node's state machine and what comes out of it (`core.node`).

Events are facts the services observed (time passed, an entry was applied, a device was
polled, Raft changed, a proposal or a write finished); actions are what the services must
carry out (propose, write a device, pause polling, log, persist the load history). All are
frozen values: a test feeds events and asserts on actions, the daemon and the simulation
harness carry the actions out. Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from meshems.core.cluster import ZoneState
from meshems.core.fencing import Token

# --- events in -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Tick:
    """Time passed. `now_s` is monotonic; `wall_s` (epoch) only dates the load history."""

    now_s: float
    wall_s: float


@dataclass(frozen=True, slots=True)
class RaftChanged:
    """The Raft member's view, whenever it changes. `ready`: caught up with what a leader
    said is committed since this start (before that, applied state is old history)."""

    role: str  # follower | candidate | leader
    term: int
    leader: str | None
    has_quorum: bool
    ready: bool
    connected: frozenset[str] = frozenset()  # peers the transport is connected to


@dataclass(frozen=True, slots=True)
class Applied:
    """A committed entry was applied; `state` is the zone state after it."""

    state: ZoneState


@dataclass(frozen=True, slots=True)
class DeviceReading:
    """One finished poll of a device: whether it answered, its run of failed polls, and its
    values by role (the last good ones when it did not answer)."""

    device_id: str
    answered: bool
    failures: int
    values: Mapping[str, float]
    now_s: float


@dataclass(frozen=True, slots=True)
class Proposed:
    """The outcome of a `Propose` action (the apply result, or an error code)."""

    purpose: str
    key: str
    result: Mapping[str, Any]
    now_s: float


@dataclass(frozen=True, slots=True)
class Written:
    """The outcome of a `Write` action (the device's answer, read back and verified)."""

    key: str
    token: Token | None
    ok: bool
    code: str
    message: str
    now_s: float


@dataclass(frozen=True, slots=True)
class Solved:
    """The outcome of a `Solve` action: the planner's plan for that request."""

    key: str
    plan: Any  # core.planner.ZonePlan
    now_s: float


Event = Tick | RaftChanged | Applied | DeviceReading | Proposed | Written | Solved

# --- actions out -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Propose:
    """Propose command bytes through Raft; answer with `Proposed(purpose, key, ...)`."""

    data: bytes
    purpose: str  # declare | report | dispatch | policy | transfer | forecast
    key: str
    timeout_s: float | None = None


@dataclass(frozen=True, slots=True)
class Write:
    """Write one value to a device point named by its role (setpoint_kw, limit_pct,
    relay_N, revert_timeout_s); answer with `Written(key, token, ...)`. `token` is the
    fencing token of a committed value, None for survival and protection writes."""

    key: str  # device id, or the load id RELAY_DEVICE:CHANNEL
    device_id: str
    role: str
    value: float
    token: Token | None
    source: str  # committed | survival:CONTROLLER | protection | revert
    kw: float | None = None  # the setpoint in kW (a PV limit is written in %)


@dataclass(frozen=True, slots=True)
class SetPaused:
    """Poll only the devices this node owns: pause these shared ones."""

    devices: frozenset[str]


@dataclass(frozen=True, slots=True)
class Log:
    level: str
    code: str
    message: str
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SaveHistory:
    """Persist the node's load history (the forecast's input)."""


@dataclass(frozen=True, slots=True)
class Solve:
    """Run the planner (`core.planner.plan`) on this request off the control path (it takes
    up to ~100 ms); answer with `Solved(key, plan, ...)`."""

    key: str
    request: Any  # core.planner.PlanRequest


Action = Propose | Write | SetPaused | Log | SaveHistory | Solve
