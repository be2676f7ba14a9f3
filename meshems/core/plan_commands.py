"""Validation of the planner's two internal commands: `node_forecast` (a node's forecast of
its base load) and `plan` (the leader's zone plan). Series arrive as float32 bytes
(`core.plan_records.pack`); every value must be finite and every series the plan's length.
Pure: no I/O.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from meshems.core.command_fields import Invalid, number, text
from meshems.core.plan_records import MAX_PLAN_BATTERIES, MAX_STEPS, unpack
from meshems.core.policy import MODES

PLAN_STATUSES = frozenset({"optimal", "limit_unreachable", "infeasible", "solver_failed"})
STEP_S = (300.0, 900.0, 1800.0, 3600.0)
MAX_ABS_KW = 1e6


def _series(
    raw: Mapping[str, Any], key: str, n: int | None = None, where: str = "", size: int = 4
) -> tuple[float, ...]:
    data = raw.get(key)
    name = f"{where}{key}"
    if not isinstance(data, bytes) or len(data) > size * (MAX_STEPS + 1):
        msg = f"field {name!r} must be float{8 * size} bytes of <= {MAX_STEPS + 1} values"
        raise Invalid("E_CMD_MALFORMED", msg)
    try:
        values = unpack(data, size)
    except ValueError as exc:
        raise Invalid("E_CMD_MALFORMED", f"field {name!r}: {exc}") from None
    if not values or (n is not None and len(values) != n):
        raise Invalid("E_CMD_MALFORMED", f"field {name!r} has {len(values)} values, want {n or '1+'}")
    if not all(math.isfinite(v) and abs(v) <= MAX_ABS_KW for v in values):
        raise Invalid("E_CMD_MALFORMED", f"field {name!r}: every value finite and within ±{MAX_ABS_KW:g}")
    return values


def _start_and_step(cmd: Mapping[str, Any]) -> tuple[float, float]:
    start, step = number(cmd, "start_s"), number(cmd, "step_s")
    if step not in STEP_S:
        raise Invalid(
            "E_CMD_MALFORMED", f"field 'step_s' must be one of {', '.join(f'{s:g}' for s in STEP_S)}"
        )
    if not 0 < start < 1e11:
        raise Invalid("E_CMD_MALFORMED", "field 'start_s' must be a time after the epoch (seconds)")
    return start, step


def node_forecast(cmd: Mapping[str, Any]) -> dict[str, Any]:
    start, step = _start_and_step(cmd)
    return {"node_id": text(cmd, "node_id"), "start_s": start, "step_s": step,
            "kw": _series(cmd, "kw"), "basis": text(cmd, "basis", 80)}  # fmt: skip


def plan(cmd: Mapping[str, Any]) -> dict[str, Any]:
    version = cmd.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise Invalid("E_CMD_MALFORMED", "field 'version' must be a positive integer")
    start, step = _start_and_step(cmd)
    mode, status = text(cmd, "mode", 32), text(cmd, "status", 32)
    if mode not in MODES or status not in PLAN_STATUSES:
        raise Invalid("E_CMD_MALFORMED", f"mode {mode!r} or status {status!r} is not known")
    import_kw = _series(cmd, "import_kw")
    batteries = cmd.get("batteries")
    if not isinstance(batteries, list) or len(batteries) > MAX_PLAN_BATTERIES:
        raise Invalid("E_CMD_MALFORMED", f"field 'batteries' must be a list of <= {MAX_PLAN_BATTERIES}")
    rows = []
    for i, b in enumerate(batteries):
        if not isinstance(b, dict) or set(b) != {"id", "kw", "soc"}:
            raise Invalid("E_CMD_MALFORMED", f"batteries[{i}] must be a map of id, kw, soc")
        rows.append({"id": text(b, "id"), "kw": _series(b, "kw", len(import_kw), f"batteries[{i}]."),
                     "soc": _series(b, "soc", len(import_kw) + 1, f"batteries[{i}].", 2)})  # fmt: skip
    if len({r["id"] for r in rows}) != len(rows):
        raise Invalid("E_CMD_MALFORMED", "a plan names each battery once")
    return {"version": version, "start_s": start, "step_s": step, "mode": mode, "status": status,
            "import_kw": import_kw, "batteries": rows, "peak_kw": number(cmd, "peak_kw"),
            "cost": number(cmd, "cost"), "reason": text(cmd, "reason", 300),
            "basis": text(cmd, "basis", 300), "made_s": number(cmd, "made_s")}  # fmt: skip
