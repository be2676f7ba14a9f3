"""The zone policy: the limits and priorities dispatch works to (committed through Raft).

Pure data and validation; the config file's `policy:` section and `meshems policy set`
both end up here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from meshems.core.ids import parse_load


@dataclass(frozen=True, slots=True)
class Policy:
    import_limit_kw: float = 1e9  # zone grid import limit (peak shaving)
    export_limit_kw: float = 1e9  # zone grid export limit (PV curtailment beyond it)
    soc_floor_pct: float = 10.0  # batteries do not discharge below
    soc_ceiling_pct: float = 95.0  # batteries do not charge above
    shed_order: tuple[str, ...] = ()  # loads "RELAY_DEVICE:CHANNEL", shed first to last
    cycle_s: float = 1.0  # dispatch cycle
    margin_kw: float = 2.0  # aim this far inside the limits
    restore_margin_kw: float = 5.0  # restore a shed load only with this much headroom left
    reserve_forecast: bool = True  # hold battery energy for the forecast peak

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shed_order"] = list(self.shed_order)
        return d


FIELDS = {f for f in Policy.__dataclass_fields__}
#: the range every number field must lie in (inclusive): a value outside is absurd for a
#: microgrid and would stop dispatch (a cycle of 1e9 s) or overflow its arithmetic (1e308)
BOUNDS: dict[str, tuple[float, float]] = {
    "import_limit_kw": (0.0, 1e9),  # 1e9 (the default) means no limit
    "export_limit_kw": (0.0, 1e9),
    "soc_floor_pct": (0.0, 100.0),
    "soc_ceiling_pct": (0.0, 100.0),
    "cycle_s": (0.1, 60.0),
    "margin_kw": (0.0, 1e6),
    "restore_margin_kw": (0.0, 1e6),
}
MAX_SHED_LOADS = 256
SHED_FORMAT = "shed_order: a list of at most 256 'RELAY_DEVICE:CHANNEL' load ids (channel 1-256)"


def _number_problem(key: str, value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return f"{key}: a finite number"
    low, high = BOUNDS[key]
    if value < 0:
        return f"{key}: must not be negative"
    if value < low:
        return f"{key}: at least {low:g}"
    if value > high:
        return f"{key}: at most {high:g}"
    return None


def policy_problems(values: Mapping[str, Any]) -> list[str]:
    """Why these policy fields are invalid (empty when valid). Deterministic. Which loads
    exist is the zone state's business (`cluster.apply` checks it)."""
    out = []
    for key, value in values.items():
        if key not in FIELDS:
            out.append(f"{key}: unknown policy field")
        elif key == "shed_order":
            if (
                not isinstance(value, list | tuple)
                or len(value) > MAX_SHED_LOADS
                or not all(parse_load(x) is not None for x in value)
            ):
                out.append(SHED_FORMAT)
            elif len(set(value)) != len(value):
                out.append("shed_order: a load is listed twice")
        elif key == "reserve_forecast":
            if not isinstance(value, bool):
                out.append("reserve_forecast: true or false")
        else:
            problem = _number_problem(key, value)
            if problem is not None:
                out.append(problem)
    merged = {**{k: getattr(Policy(), k) for k in FIELDS}, **values}
    if not out and merged["soc_floor_pct"] >= merged["soc_ceiling_pct"]:
        out.append("soc_floor_pct must be below soc_ceiling_pct (<= 100)")
    return out


def with_changes(policy: Policy, values: Mapping[str, Any]) -> Policy:
    """A new policy with `values` applied (validate with policy_problems first)."""
    clean = {k: (tuple(v) if k == "shed_order" else v) for k, v in values.items()}
    clean = {
        k: (float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v)
        for k, v in clean.items()
    }
    return replace(policy, **clean)


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a node may do on its own without quorum: its share of the zone limits, the
    battery reserve to keep, and the order to shed its own loads in."""

    node_id: str
    import_limit_kw: float
    export_limit_kw: float
    soc_reserve_pct: float
    shed: tuple[str, ...]
