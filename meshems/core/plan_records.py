"""The zone plan and the node forecasts it is made from, as replicated records.

`NodeForecast`: a node's own forecast of its base load (import with its batteries at 0) for
the coming horizon, in fixed steps, with the basis it came from. `PlanRecord`: the plan the
leader committed (target zone import per step, each battery's power and SoC), with a version
that only rises. Series travel as float32 bytes (4 bytes a step instead of msgpack's 9), so a
plan of 50 batteries over 36 h fits one Raft entry (SoC as float16: 0.06 % steps near full). Pure: no I/O.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass
from typing import Any

MAX_STEPS = 144  # 36 h of quarter-hours
MAX_PLAN_BATTERIES = 50
#: a plan older than this is stale: dispatch falls back to the reactive rules
PLAN_MAX_AGE_S = 1800.0
USABLE = ("optimal", "limit_unreachable")
DAY_S = 86400.0  # peak mode bills each UTC day on its own


def pack(values: tuple[float, ...] | list[float]) -> bytes:
    """float32 little-endian bytes of a series (the wire form)."""
    return struct.pack(f"<{len(values)}f", *values)


def unpack(data: bytes, size: int = 4) -> tuple[float, ...]:
    """The series of `pack` bytes (`pack16`: size 2); ValueError when not whole values."""
    if len(data) % size:
        raise ValueError(f"{len(data)} bytes are not whole float{8 * size} values")
    code = "f" if size == 4 else "e"
    return tuple(round(v, 4) for v in struct.unpack(f"<{len(data) // size}{code}", data))


def pack16(values: tuple[float, ...] | list[float]) -> bytes:
    """float16 little-endian bytes (SoC percentages: 3 significant digits are plenty)."""
    return struct.pack(f"<{len(values)}e", *values)


def _step(start_s: float, step_s: float, n: int, t_s: float) -> int | None:
    i = math.floor((t_s - start_s) / step_s)
    return i if 0 <= i < n else None


@dataclass(frozen=True, slots=True)
class NodeForecast:
    """A node's forecast of its base load from `start_s`, one value per `step_s`."""

    node_id: str
    start_s: float
    step_s: float
    kw: tuple[float, ...]
    basis: str  # "model vN" | "same time yesterday" | "no history yet"
    term: int
    index: int

    def at(self, t_s: float) -> float | None:
        i = _step(self.start_s, self.step_s, len(self.kw), t_s)
        return None if i is None else self.kw[i]


@dataclass(frozen=True, slots=True)
class PlanBattery:
    id: str
    kw: tuple[float, ...]  # + discharge / - charge, per step
    soc_pct: tuple[float, ...]  # steps + 1 values: the start, then the end of each step


@dataclass(frozen=True, slots=True)
class PlanRecord:
    """The committed zone plan: what the 1 s dispatch tracks until the next one."""

    version: int
    start_s: float
    step_s: float
    mode: str
    status: str  # optimal | limit_unreachable | infeasible | solver_failed
    import_kw: tuple[float, ...]
    batteries: tuple[PlanBattery, ...]
    peak_kw: float
    cost: float
    reason: str
    basis: str  # which forecasts the plan used, e.g. "n1: model v3; n2: same time yesterday"
    made_s: float  # the leader's wall clock when it planned (for the plan's age)
    term: int
    index: int

    @property
    def end_s(self) -> float:
        return self.start_s + self.step_s * len(self.import_kw)

    def step_at(self, t_s: float) -> int | None:
        return _step(self.start_s, self.step_s, len(self.import_kw), t_s)

    def battery(self, battery_id: str) -> PlanBattery | None:
        return next((b for b in self.batteries if b.id == battery_id), None)

    def to_fields(self) -> dict[str, Any]:
        """The `plan` command's fields (and the snapshot's row)."""
        return {
            "version": self.version, "start_s": self.start_s, "step_s": self.step_s, "mode": self.mode,
            "status": self.status, "import_kw": pack(self.import_kw),
            "batteries": [{"id": b.id, "kw": pack(b.kw), "soc": pack16(b.soc_pct)} for b in self.batteries],
            "peak_kw": self.peak_kw, "cost": self.cost, "reason": self.reason, "basis": self.basis,
            "made_s": self.made_s,
        }  # fmt: skip


def plan_from_fields(f: dict[str, Any], term: int, index: int) -> PlanRecord:
    """A record from validated `plan` fields (series already unpacked) at its log position."""
    batteries = tuple(PlanBattery(b["id"], tuple(b["kw"]), tuple(b["soc"])) for b in f["batteries"])
    return PlanRecord(f["version"], f["start_s"], f["step_s"], f["mode"], f["status"], tuple(f["import_kw"]),
                      batteries, f["peak_kw"], f["cost"], f["reason"], f["basis"], f["made_s"], term,
                      index)  # fmt: skip


def plan_dict(p: PlanRecord) -> dict[str, Any]:
    """JSON-ready form for `meshems plan show` and the API."""
    return {
        "version": p.version, "start_s": p.start_s, "step_s": p.step_s, "mode": p.mode, "status": p.status,
        "import_kw": list(p.import_kw), "peak_kw": p.peak_kw, "cost": p.cost, "reason": p.reason,
        "basis": p.basis, "made_s": p.made_s, "term": p.term, "index": p.index,
        "batteries": [{"id": b.id, "kw": list(b.kw), "soc_pct": list(b.soc_pct)} for b in p.batteries],
    }  # fmt: skip


@dataclass(frozen=True, slots=True)
class PlanStep:
    """The committed plan at one moment: what the 1 s dispatch tracks."""

    version: int
    mode: str
    status: str
    target_import_kw: float
    peak_kw: float  # the plan's highest import for the rest of today: in peak mode, the ceiling
    battery_kw: dict[str, float]
    #: peak mode: the import this cycle that ends the quarter-hour with a mean at the peak
    #: (`core.day_peak.quarter_allowance_kw`), set by the leader; None: the peak itself
    track_kw: float | None = None


def plan_step(plan: PlanRecord | None, wall_s: float, max_age_s: float = PLAN_MAX_AGE_S) -> PlanStep | None:
    """The committed plan's step at `wall_s`; None when there is none, it is stale (older
    than `max_age_s`, or over), or the planner could not make one."""
    if plan is None or plan.status not in USABLE or wall_s - plan.made_s > max_age_s:
        return None
    i = plan.step_at(wall_s)
    if i is None:
        return None
    return PlanStep(plan.version, plan.mode, plan.status, plan.import_kw[i], day_peak_kw(plan, i),
                    {b.id: b.kw[i] for b in plan.batteries})  # fmt: skip


def day_peak_kw(plan: PlanRecord, i: int) -> float:
    """The plan's highest import from step `i` to the end of that step's UTC day: the peak
    it holds today (each day is billed on its own; tomorrow's may be higher)."""
    day = math.floor((plan.start_s + i * plan.step_s) / DAY_S)
    end = i
    while end < len(plan.import_kw) and math.floor((plan.start_s + end * plan.step_s) / DAY_S) == day:
        end += 1
    return max(plan.import_kw[i:end])
