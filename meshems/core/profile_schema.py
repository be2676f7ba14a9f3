"""The device-profile YAML schema: a decoded YAML mapping -> a validated `Profile`.

Owns the schema (pydantic), the checks across points (tables, types, overlaps, scale
points, ranges a type cannot hold) and roles (unit, access, bounds), and error messages
naming the file and the exact key. Pure: no I/O; files are read by `adapters.profiles`.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from meshems.core.errors import ConfigError, key_path
from meshems.core.point import (
    BIT_TABLES,
    LAST_ADDRESS,
    NUMBER_TYPES,
    READ_LIMIT,
    WORDS,
    Access,
    Order,
    Point,
    RegType,
    Table,
)
from meshems.core.register_map import DEFAULT_MAX_GAP, ROLES, Kind, Profile, RoleSpec
from meshems.core.registers import raw_description, type_range

# Writable roles whose point must carry min and max, so a bad setpoint is refused before the wire.
_BOUNDED_ROLES = {"setpoint_kw": None, "limit_pct": (0.0, 100.0)}

NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
POINT_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
_REGISTER_TYPES = ", ".join(t for t in RegType.__args__ if t != "bool")  # type: ignore[attr-defined]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _PointModel(_Strict):
    name: Annotated[str, Field(pattern=POINT_NAME)]
    table: Table = "holding"
    address: Annotated[int, Field(ge=0, le=LAST_ADDRESS)]
    type: RegType | None = None
    order: Order | None = None
    word_order: Literal["big", "little"] | None = None
    length: Annotated[int, Field(ge=1, le=READ_LIMIT["holding"])] | None = None
    bit: Annotated[int, Field(ge=0, le=15)] | None = None
    scale: FiniteFloat = 1.0
    scale_point: Annotated[str, Field(pattern=POINT_NAME)] | None = None
    unit: str = ""
    access: Access = "r"
    min: FiniteFloat | None = None
    max: FiniteFloat | None = None
    description: str = ""


class _ProfileModel(_Strict):
    name: Annotated[str, Field(pattern=NAME)]
    kind: Kind
    description: Annotated[str, Field(min_length=1)]
    sunspec: str = ""
    max_gap: Annotated[int, Field(ge=0, le=READ_LIMIT["holding"])] = DEFAULT_MAX_GAP
    max_read: Annotated[int, Field(ge=2, le=READ_LIMIT["holding"])] = READ_LIMIT["holding"]
    max_read_bits: Annotated[int, Field(ge=1, le=READ_LIMIT["coil"])] = READ_LIMIT["coil"]
    write_single_register: bool = False
    points: Annotated[tuple[_PointModel, ...], Field(min_length=1)]
    roles: dict[str, str]


def _type(p: _PointModel) -> str | None:
    return p.type or ("bool" if p.table in BIT_TABLES else None)


def _count(p: _PointModel) -> int:
    t = _type(p)
    return (p.length or 0) if t == "string" else WORDS.get(t or "", 1)


def _end(p: _PointModel) -> int:
    return p.address + _count(p)


def _span(p: _PointModel) -> str:
    return f"{p.address}-{_end(p) - 1}"


def _units(table: str) -> str:
    return {"coil": "coils", "discrete": "discrete inputs"}.get(table, "registers")


def _to_point(p: _PointModel) -> Point:
    """The model as a `Point` (valid only once `_shape_errors(p)` found nothing)."""
    return Point(
        p.name, p.address, _type(p) or "uint16", p.order or p.word_order or "big", p.scale, p.unit, p.access,  # type: ignore[arg-type]
        p.min, p.max, p.description, p.table, p.length or 0, p.bit, p.scale_point,
    )  # fmt: skip


def _shape_errors(p: _PointModel, at: str, max_read: int) -> list[tuple[str, str]]:
    """What is wrong with one point by itself, under the key that says it."""
    t = _type(p)
    if t is None:
        return [(f"{at}.type", f"Field required (a register point: {_REGISTER_TYPES})")]
    if p.table in BIT_TABLES and t != "bool":
        return [(f"{at}.type", f"a {_units(p.table)[:-1]} is a single bit: type bool (or no type), not {t}")]
    if p.table not in BIT_TABLES and t == "bool":
        return [
            (f"{at}.type", "bool is for coils and discrete inputs; a register's bit is type bit, bit: 0..15")
        ]
    if p.order is not None and p.word_order is not None:
        return [(f"{at}.order", "give order (ABCD, CDAB, BADC, DCBA) or the older word_order, not both")]
    if t == "string" and p.length is None:
        return [(f"{at}.length", "a string needs its length in registers (1..125)")]
    if t == "string" and p.length is not None and p.length > max_read:
        return [(f"{at}.length", f"{p.length} registers are more than one read of max_read {max_read}")]
    if t != "string" and p.length is not None:
        return [(f"{at}.length", f"length is for strings, not {t}")]
    if t == "bit" and p.bit is None:
        return [(f"{at}.bit", "a bit point needs bit: 0..15 (0 = least significant)")]
    if t != "bit" and p.bit is not None:
        return [(f"{at}.bit", f"bit is for type bit, not {t}")]
    if _end(p) > LAST_ADDRESS + 1:
        last = "the last register address" if p.table not in BIT_TABLES else "the last address"
        return [(f"{at}.address", f"{_units(p.table)} {_span(p)} run past {LAST_ADDRESS}, {last}")]
    if p.scale == 0:
        return [(f"{at}.scale", "must not be 0 (value = raw * scale)")]
    if t not in NUMBER_TYPES and p.scale_point is not None:
        return [(f"{at}.scale_point", f"a scale point scales a number, not a {t}")]
    if t not in NUMBER_TYPES and p.scale != 1:
        return [(f"{at}.scale", f"a {t} is not scaled (scale 1)")]
    if p.access == "rw" and p.table not in ("holding", "coil"):
        return [(f"{at}.access", f"{'discrete inputs' if p.table == 'discrete' else 'input registers'} are "
                                 "read-only: access r (write to holding registers or coils)")]  # fmt: skip
    try:
        _to_point(p)
    except ValueError as exc:  # what the point says of itself (`core.point.point_problem`)
        return [(at, str(exc).removeprefix(f"{p.name}: "))]
    return []


def _point_errors(points: tuple[_PointModel, ...], max_read: int) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    first_index: dict[str, int] = {}
    for p_i, p in enumerate(points):
        first_index.setdefault(p.name, p_i)
    for i, p in enumerate(points):
        at = f"points[{i}]"
        if first_index[p.name] != i:
            errors.append((f"{at}.name", f"{p.name!r} is already the name of points[{first_index[p.name]}]"))
        shape = _shape_errors(p, at, max_read)
        if shape:
            errors += shape
            continue
        errors += _scale_point_errors(p, at, points, first_index)
        if p.min is not None and p.max is not None and p.min > p.max:
            errors.append((f"{at}.min", f"min ({p.min}) is above max ({p.max})"))
        lo, hi = type_range(_to_point(p))
        for label, bound in (("min", p.min), ("max", p.max)):
            if bound is not None and not lo <= bound <= hi:
                errors.append(
                    (
                        f"{at}.{label}",
                        f"{bound} is beyond what {raw_description(_type(p) or '')} "
                        f"holds at scale {p.scale} ({lo:g}..{hi:g})",
                    )
                )
    return errors + _overlap_errors(points)


def _scale_point_errors(
    p: _PointModel, at: str, points: tuple[_PointModel, ...], first_index: dict[str, int]
) -> list[tuple[str, str]]:
    if p.scale_point is None:
        return []
    key = f"{at}.scale_point"
    if p.scale_point not in first_index:
        return [(key, f"no point named {p.scale_point!r} (known: {', '.join(first_index)})")]
    sf = points[first_index[p.scale_point]]
    if _type(sf) != "int16" or sf.scale != 1 or sf.scale_point is not None:
        what = f"point {sf.name!r} is {_type(sf)} with scale {sf.scale}"
        return [(key, f"{what}; a scale point is an unscaled int16 holding a SunSpec scale factor (sunssf)")]
    return []


def _overlap_errors(points: tuple[_PointModel, ...]) -> list[tuple[str, str]]:
    """Points of one table must not share an address. A bit point is a view of one bit of a
    register (it may overlay the register's own point); only the same bit twice is refused."""
    errors: list[tuple[str, str]] = []
    bits_at: dict[tuple[str, int, int], int] = {}
    sweep: list[int] = []
    for i, p in enumerate(points):
        if _type(p) != "bit" or p.bit is None:
            sweep.append(i)
            continue
        j = bits_at.setdefault((p.table, p.address, p.bit), i)
        if j != i:
            what = f"bit {p.bit} of register {p.address} is already points[{j}] ({points[j].name})"
            errors.append((f"points[{i}].bit", what))
    # Overlaps: sweep by address per table, remembering the point that reaches furthest so far.
    reach: dict[str, int] = {}
    for i in sorted(sweep, key=lambda i: (points[i].address, i)):
        a, table = points[i], points[i].table
        r = reach.get(table)
        if r is not None and a.address < _end(points[r]):
            later, earlier = max(i, r), min(i, r)
            x, y = points[later], points[earlier]
            errors.append(
                (
                    f"points[{later}]",
                    f"{_units(table)} {_span(x)} overlap points[{earlier}] ({y.name}, {_span(y)})",
                )
            )
        if r is None or _end(a) > _end(points[r]):
            reach[table] = i
    return errors


def _role_problems(role: str, spec: RoleSpec, p: _PointModel) -> list[str]:
    """What is wrong with point `p` playing `role` (empty when it fits)."""
    problems = []
    t = _type(p)
    if spec.writable and p.access != "rw":
        problems.append(f"point {p.name!r} is read-only; the {role} role needs access rw")
    if p.unit != spec.unit:
        want = f"unit {spec.unit!r}" if spec.unit else "no unit (unit: '')"
        problems.append(
            f"point {p.name!r} has unit {p.unit!r}; the {role} role needs {want} (adjust the scale)"
        )
    switch = t in ("bool", "bit") or (t in ("int16", "uint16") and p.scale == 1 and p.scale_point is None)
    if role.startswith(("relay_", "input_")) and not switch:
        problems.append(
            f"point {p.name!r} is {t} with scale {p.scale}; a {role.split('_')[0]} role needs a 16-bit "
            "integer point with scale 1, a coil or a discrete input (0 = open/off, 1 = closed/on)"
        )
    elif t == "string":
        problems.append(f"point {p.name!r} is a string; the {role} role needs a number")
    if role in _BOUNDED_ROLES:
        bounds = _BOUNDED_ROLES[role]
        if p.min is None or p.max is None:
            problems.append(
                f"point {p.name!r} needs min and max: the {role} role refuses out-of-range writes"
            )
        elif bounds is not None and not (bounds[0] <= p.min and p.max <= bounds[1]):
            problems.append(
                f"point {p.name!r} min/max ({p.min}..{p.max}) must lie within {bounds[0]}..{bounds[1]}"
            )
    return problems


def _role_errors(model: _ProfileModel) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    specs = ROLES[model.kind]
    by_name: dict[str, _PointModel] = {}
    for p in model.points:
        by_name.setdefault(p.name, p)  # a duplicate name is reported once, under points[i].name
    for role, point_name in model.roles.items():
        key = f"roles.{role}"
        spec = specs.get(role)
        if spec is None:
            errors.append((key, f"unknown role for a {model.kind} profile (known: {', '.join(specs)})"))
        elif point_name not in by_name:
            errors.append((key, f"no point named {point_name!r} (known: {', '.join(by_name)})"))
        else:
            errors += [(key, problem) for problem in _role_problems(role, spec, by_name[point_name])]
    for role, spec in specs.items():
        if spec.required and role not in model.roles:
            errors.append((f"roles.{role}", f"required for a {model.kind} profile (map it to a point)"))
    return errors


def parse_profile(data: object, source: str) -> Profile:
    """Validate a decoded YAML profile; raise ConfigError, one "<source>: <key>: <what>" per line."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the profile must be a YAML mapping", file=source)
    try:
        model = _ProfileModel.model_validate(data)
    except ValidationError as exc:
        errors: list[tuple[str, str]] = []
        for err in exc.errors():
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key (misspelt?)"
            errors.append((key_path(err["loc"]), msg))
        raise _config_error(source, errors) from None
    errors = _point_errors(model.points, model.max_read)
    errors += _role_errors(model)
    if errors:
        raise _config_error(source, errors)
    points = tuple(_to_point(p) for p in model.points)
    return Profile(
        model.name, model.kind, model.description, model.sunspec, points, dict(model.roles),
        max_gap=model.max_gap, max_read=model.max_read, max_read_bits=model.max_read_bits,
        write_single_register=model.write_single_register,
    )  # fmt: skip


def _config_error(source: str, errors: list[tuple[str, str]]) -> ConfigError:
    message = "\n".join(f"{source}: {key}: {what}" for key, what in errors)
    return ConfigError(message, file=source, key=errors[0][0])
