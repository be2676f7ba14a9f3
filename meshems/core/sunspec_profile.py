"""A device profile from a SunSpec model chain (`profile: sunspec`): every top-level point of
every model the chain holds, named `MODEL.POINT` (`103.W`, `123.WMaxLimPct`; a second
model of the same id gets `103_2.W`), and the roles of the device's kind mapped to the
models that carry them, in the order SunSpec devices offer them.

Pure: the chain (model ids, addresses, point layouts) comes in as data, read from the
device and pysunspec2's definitions by `adapters.sunspec`. Roles, by kind:
  pv       power_kw 10x/11x/701 W, limit_pct 123 WMaxLimPct (or 704), revert_timeout_s
           its revert time, rated_kw 120 WRtg (or 702 WMaxRtg)
  battery  power_kw 10x/11x/701 W (+ discharge), setpoint_kw 704 WSet (+ injection),
           revert_timeout_s 704 WSetRvrtTms, soc_pct 124 ChaState (or 713 SoC),
           capacity_kwh 120 WHRtg (or 713 WHRtg), max_charge_kw 124 WChaMax
  meter    power_kw 20x W (+ import), voltage_v PhV, frequency_hz Hz, energies TotWh*
Writes to a control point first enable the control (`enables`: 123 WMaxLim_Ena = 1; 704
WSetEna = 1 and WSetMod = 1, watts), as SunSpec devices ignore a value that is not enabled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from meshems.core.point import Point
from meshems.core.register_map import ROLES, Profile

#: SunSpec point types -> the codec's register types (enums, bitfields, counts and pads are
#: unsigned words; accumulators unsigned integers; a scale factor a signed word)
TYPES: Mapping[str, str] = {
    "int16": "int16", "uint16": "uint16", "int32": "int32", "uint32": "uint32", "int64": "int64",
    "uint64": "uint64", "float32": "float32", "float64": "float64", "string": "string",
    "acc16": "uint16", "acc32": "uint32", "acc64": "uint64", "enum16": "uint16", "enum32": "uint32",
    "bitfield16": "uint16", "bitfield32": "uint32", "count": "uint16", "pad": "uint16",
    "sunssf": "int16", "ipaddr": "uint32",
}  # fmt: skip
#: units SunSpec gives in base units, and what a role in kW / kWh wants of them
KILO_UNITS = {"W": "kW", "Wh": "kWh", "WH": "kWh", "VA": "kVA", "var": "kvar"}

INVERTERS = (103, 102, 101, 113, 112, 111, 701)
METERS = (203, 204, 201, 202, 213, 214, 211, 212)


@dataclass(frozen=True, slots=True)
class SpecPoint:
    """One top-level point of a SunSpec model: `offset` registers after the model's ID."""

    name: str
    offset: int
    size: int
    type: str
    sf: str | None = None
    units: str = ""
    access: str = "R"
    label: str = ""


@dataclass(frozen=True, slots=True)
class ModelLayout:
    """A model as found in a chain: its id, the address of its ID register, its length."""

    id: int
    address: int
    length: int
    points: tuple[SpecPoint, ...]


#: role -> (candidate models in order of preference, point name, scale to the role's unit,
#: writable) for each kind
_ROLES: Mapping[str, tuple[tuple[str, tuple[int, ...], str, bool], ...]] = {
    "pv": (
        ("power_kw", INVERTERS, "W", False),
        ("limit_pct", (123,), "WMaxLimPct", True),
        ("revert_timeout_s", (123,), "WMaxLimPct_RvrtTms", True),
        ("limit_pct", (704,), "WMaxLimPct", True),
        ("revert_timeout_s", (704,), "WMaxLimPctRvrtTms", True),
        ("rated_kw", (120,), "WRtg", False),
        ("rated_kw", (702,), "WMaxRtg", False),
    ),
    "battery": (
        ("power_kw", INVERTERS, "W", False),
        ("setpoint_kw", (704,), "WSet", True),
        ("revert_timeout_s", (704,), "WSetRvrtTms", True),
        ("soc_pct", (124,), "ChaState", False),
        ("soc_pct", (713,), "SoC", False),
        ("capacity_kwh", (120,), "WHRtg", False),
        ("capacity_kwh", (713,), "WHRtg", False),
        ("max_charge_kw", (124,), "WChaMax", False),
    ),
    "meter": (
        ("power_kw", METERS, "W", False),
        ("voltage_v", METERS, "PhV", False),
        ("frequency_hz", METERS, "Hz", False),
        ("energy_import_kwh", METERS, "TotWhImp", False),
        ("energy_export_kwh", METERS, "TotWhExp", False),
    ),
}
#: control point -> the points (and values) that enable it, written before it
ENABLES: Mapping[tuple[int, str], tuple[tuple[str, float], ...]] = {
    (123, "WMaxLimPct"): (("WMaxLim_Ena", 1),),
    (704, "WMaxLimPct"): (("WMaxLimPctEna", 1),),
    (704, "WSet"): (("WSetEna", 1), ("WSetMod", 1)),
}


def _prefixes(models: Sequence[ModelLayout]) -> list[str]:
    seen: dict[int, int] = {}
    out = []
    for m in models:
        seen[m.id] = seen.get(m.id, 0) + 1
        out.append(str(m.id) if seen[m.id] == 1 else f"{m.id}_{seen[m.id]}")
    return out


def _point(prefix: str, m: ModelLayout, p: SpecPoint, scale: float, writable: bool) -> Point | None:
    kind = TYPES.get(p.type)
    if kind is None or p.offset + p.size > m.length + 2:
        return None  # an address, EUI or ipv6 point, or one past what the device implements
    text = kind == "string"
    unit = p.units or ""
    if scale != 1.0:
        unit = KILO_UNITS.get(unit, unit)
    return Point(
        name=f"{prefix}.{p.name}",
        address=m.address + p.offset,
        type=kind,  # type: ignore[arg-type]
        scale=1.0 if text else scale,
        scale_point=f"{prefix}.{p.sf}" if p.sf and not text else None,
        unit=unit,
        access="rw" if writable else "r",
        length=p.size if text else 0,
        description=p.label,
    )


def _pick_roles(kind: str, first: Mapping[int, tuple[str, ModelLayout]]) -> dict[str, tuple[int, str]]:
    """role -> (model id, point name): the first candidate model the chain holds that has the point."""
    picked: dict[str, tuple[int, str]] = {}
    for role, candidates, point_name, _ in _ROLES[kind]:
        if role in picked:
            continue
        for mid in candidates:
            if mid in first and any(p.name == point_name for p in first[mid][1].points):
                picked[role] = (mid, point_name)
                break
    return picked


def sunspec_profile(kind: str, models: Sequence[ModelLayout], source: str) -> Profile:
    """The profile of a `kind` device whose chain holds `models`. ValueError naming the
    models found when the chain lacks what the kind needs (e.g. a battery without 704)."""
    if kind not in _ROLES:
        raise ValueError(f"{source}: profile sunspec is for pv, battery and meter devices, not {kind}")
    prefixes = _prefixes(models)
    first = {m.id: (prefix, m) for prefix, m in zip(prefixes, models, strict=True) if prefix == str(m.id)}
    picked = _pick_roles(kind, first)
    found = ", ".join(str(m.id) for m in models) or "none"
    missing = [role for role, spec in ROLES[kind].items() if spec.required and role not in picked]
    if missing:
        raise ValueError(
            f"{source}: a SunSpec {kind} needs models for {', '.join(missing)}; the chain holds {found}"
        )
    # a role in kW/kWh reads a SunSpec W/Wh point times 0.001 (on top of its scale factor)
    scales = {
        (mid, name): 0.001 if ROLES[kind][role].unit in ("kW", "kWh") else 1.0
        for role, (mid, name) in picked.items()
    }
    writable = {(mid, name) for role, (mid, name) in picked.items() if ROLES[kind][role].writable}
    writable |= {
        (mid, p) for (mid, name), pairs in ENABLES.items() if (mid, name) in writable for p, _ in pairs
    }
    points: list[Point] = []
    for prefix, m in zip(prefixes, models, strict=True):
        primary = prefix == str(m.id)
        for p in m.points:
            if p.name in ("ID", "L"):
                continue
            key = (m.id, p.name)
            point = _point(
                prefix, m, p, scales.get(key, 1.0) if primary else 1.0, primary and key in writable
            )
            if point is not None:
                points.append(point)
    roles = {role: f"{first[mid][0]}.{name}" for role, (mid, name) in picked.items()}
    enables = {
        role: tuple((f"{first[mid][0]}.{p}", v) for p, v in ENABLES[(mid, name)])
        for role, (mid, name) in picked.items()
        if (mid, name) in ENABLES and ROLES[kind][role].writable
    }
    return Profile(
        name=f"sunspec:{'+'.join(str(m.id) for m in models)}",
        kind=kind,  # type: ignore[arg-type]
        description=f"SunSpec {kind}, models {found}",
        sunspec=f"SunSpec model chain {found} (definitions: pysunspec2)",
        points=tuple(points),
        roles=roles,
        enables=enables,
    )
