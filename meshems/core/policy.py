"""The zone policy: the limits and priorities dispatch works to (committed through Raft).

Pure data and validation; the config file's `policy:` section and `meshems policy set`
both end up here.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from datetime import date
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
    reserve_forecast: bool = True  # hold battery energy for the forecast peak (reactive rules)
    #: peak: hold the lowest import peak the batteries can; tariff: least energy cost under
    #: the prices; self_consumption: keep PV on site; reactive: no plan, the rules alone
    mode: str = "peak"
    #: a day of import / export prices per kWh, 24 (hourly) or 96 (quarter-hour) values, UTC
    import_price: tuple[float, ...] = ()
    export_price: tuple[float, ...] = ()
    #: (UTC "HH:MM", SoC %): have the batteries at least this full at that time every day
    soc_targets: tuple[tuple[str, float], ...] = ()
    cycle_cost_per_kwh: float = 0.005  # battery wear the planner weighs against savings
    plan_horizon_h: float = 24.0
    #: "YYYY-MM-DD" (UTC days): holidays and closures, forecast like the last Sunday (a
    #: working day's forecast on a holiday would have the batteries charge for a peak that
    #: never comes, and make one)
    days_off: tuple[str, ...] = ()
    #: dated quarter-hour prices (a dynamic tariff) from `price_series_start_s` (unix s, on a
    #: quarter-hour; 0: none), at most 192; where they cover a step they win over the daily
    #: profile (`core.price_series.price_at`); `meshems policy prices --csv FILE` sets them
    price_series_start_s: float = 0.0
    import_price_series: tuple[float, ...] = ()
    export_price_series: tuple[float, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["shed_order"] = list(self.shed_order)
        d["import_price"] = list(self.import_price)
        d["export_price"] = list(self.export_price)
        d["soc_targets"] = [{"at": at, "pct": pct} for at, pct in self.soc_targets]
        d["days_off"] = list(self.days_off)
        d["import_price_series"] = list(self.import_price_series)
        d["export_price_series"] = list(self.export_price_series)
        return d

    def day_numbers_off(self) -> frozenset[int]:
        """The days off as UTC day numbers (Unix days)."""
        return frozenset(n for n in (unix_day(d) for d in self.days_off) if n is not None)


FIELDS = {f for f in Policy.__dataclass_fields__}
_EPOCH = date(1970, 1, 1)
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
    "cycle_cost_per_kwh": (0.0, 100.0),
    "plan_horizon_h": (1.0, 36.0),
    "price_series_start_s": (0.0, 1e11),
}
MODES = ("peak", "tariff", "self_consumption", "reactive")
PRICE_LENGTHS = (24, 96)
MAX_SOC_TARGETS = 8
MAX_DAYS_OFF = 400
MAX_SERIES = 192  # two days of quarter-hours
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
        elif key == "mode":
            if value not in MODES:
                out.append(f"mode: one of {', '.join(MODES)}, not {value!r}")
        elif key in ("import_price", "export_price"):
            out += _price_problems(key, value)
        elif key == "soc_targets":
            out += _soc_target_problems(value)
        elif key == "days_off":
            out += _days_off_problems(value)
        elif key in ("import_price_series", "export_price_series"):
            out += _series_problems(key, value)
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
    if not out and merged["price_series_start_s"] % 900:
        out.append("price_series_start_s: on a quarter-hour (a multiple of 900 s)")
    return out


def _price_problems(key: str, value: Any) -> list[str]:
    if not isinstance(value, list | tuple):
        return [f"{key}: a list of {' or '.join(map(str, PRICE_LENGTHS))} prices per kWh (UTC day)"]
    if value and len(value) not in PRICE_LENGTHS:
        return [f"{key}: {len(value)} prices; a day needs 24 (hourly) or 96 (quarter-hour)"]
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or abs(v) > 1e4:
            return [f"{key}[{i}]: a finite price per kWh (|price| <= 10000)"]
    return []


def soc_target_minute(at: Any) -> int | None:
    """Minutes after UTC midnight of an "HH:MM" time, None when it is not one."""
    if not isinstance(at, str) or len(at) != 5 or at[2] != ":" or not (at[:2] + at[3:]).isdigit():
        return None
    h, m = int(at[:2]), int(at[3:])
    return h * 60 + m if h < 24 and m < 60 else None


def _soc_target_problems(value: Any) -> list[str]:
    fmt = 'soc_targets: a list of at most 8 {at: "HH:MM" (UTC), pct: 0-100}'
    if not isinstance(value, list | tuple) or len(value) > MAX_SOC_TARGETS:
        return [fmt]
    for i, t in enumerate(value):
        if isinstance(t, Mapping):
            at, pct = t.get("at"), t.get("pct")
        elif isinstance(t, list | tuple) and len(t) == 2:
            at, pct = t
        else:
            at, pct = None, None
        ok_pct = not isinstance(pct, bool) and isinstance(pct, int | float) and 0 <= pct <= 100
        if soc_target_minute(at) is None or not ok_pct:
            return [f"soc_targets[{i}]: {fmt.split(': ', 1)[1]}"]
    return []


def unix_day(text: Any) -> int | None:
    """The Unix day number of a "YYYY-MM-DD" date, None when it is not one."""
    if not isinstance(text, str) or len(text) != 10:
        return None
    try:
        return (date.fromisoformat(text) - _EPOCH).days
    except ValueError:
        return None


def _series_problems(key: str, value: Any) -> list[str]:
    if not isinstance(value, list | tuple) or len(value) > MAX_SERIES:
        return [f"{key}: a list of at most {MAX_SERIES} quarter-hour prices per kWh"]
    for i, v in enumerate(value):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or abs(v) > 1e4:
            return [f"{key}[{i}]: a finite price per kWh (|price| <= 10000)"]
    return []


def _days_off_problems(value: Any) -> list[str]:
    fmt = f'days_off: a list of at most {MAX_DAYS_OFF} dates "YYYY-MM-DD" (UTC days)'
    if not isinstance(value, list | tuple) or len(value) > MAX_DAYS_OFF:
        return [fmt]
    for i, d in enumerate(value):
        if unix_day(d) is None:
            return [f'days_off[{i}]: {d!r} is not a date "YYYY-MM-DD"']
    return []


def _normalise(key: str, v: Any) -> Any:
    if key == "shed_order":
        return tuple(v)
    if key in ("import_price", "export_price", "import_price_series", "export_price_series"):
        return tuple(float(x) for x in v)
    if key == "days_off":
        return tuple(sorted(set(v)))
    if key == "soc_targets":
        pairs = [(t["at"], t["pct"]) if isinstance(t, Mapping) else tuple(t) for t in v]
        return tuple(sorted((str(at), float(pct)) for at, pct in pairs))
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    return v


def with_changes(policy: Policy, values: Mapping[str, Any]) -> Policy:
    """A new policy with `values` applied (validate with policy_problems first)."""
    return replace(policy, **{k: _normalise(k, v) for k, v in values.items()})


@dataclass(frozen=True, slots=True)
class Envelope:
    """What a node may do on its own without quorum: its share of the zone limits, the
    battery reserve to keep, and the order to shed its own loads in."""

    node_id: str
    import_limit_kw: float
    export_limit_kw: float
    soc_reserve_pct: float
    shed: tuple[str, ...]
