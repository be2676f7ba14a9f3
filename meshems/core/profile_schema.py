"""The device-profile YAML schema: a decoded YAML mapping -> a validated `Profile`.

Owns the schema (pydantic), the checks across points (overlaps, ranges a type cannot hold)
and roles (unit, access, bounds), and error messages naming the file and the exact key.
Pure: no I/O; files are read by `adapters.profiles`.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from meshems.core.errors import ConfigError, key_path
from meshems.core.register_map import (
    LAST_ADDRESS,
    ROLES,
    WORDS,
    Access,
    Kind,
    Point,
    Profile,
    RegType,
    RoleSpec,
    WordOrder,
)
from meshems.core.registers import raw_description, type_range

# Writable roles whose point must carry min and max, so a bad setpoint is refused before the wire.
_BOUNDED_ROLES = {"setpoint_kw": None, "limit_pct": (0.0, 100.0)}

NAME = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
POINT_NAME = r"^[A-Za-z][A-Za-z0-9_]{0,63}$"
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _PointModel(_Strict):
    name: Annotated[str, Field(pattern=POINT_NAME)]
    address: Annotated[int, Field(ge=0, le=LAST_ADDRESS)]
    type: RegType
    word_order: WordOrder = "big"
    scale: FiniteFloat = 1.0
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
    points: Annotated[tuple[_PointModel, ...], Field(min_length=1)]
    roles: dict[str, str]


def _end(p: _PointModel) -> int:
    return p.address + WORDS[p.type]


def _span(p: _PointModel) -> str:
    return f"{p.address}-{_end(p) - 1}"


def _point_errors(points: tuple[_PointModel, ...]) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    first_index: dict[str, int] = {}
    for i, p in enumerate(points):
        at = f"points[{i}]"
        if p.name in first_index:
            errors.append((f"{at}.name", f"{p.name!r} is already the name of points[{first_index[p.name]}]"))
        first_index.setdefault(p.name, i)
        if _end(p) > LAST_ADDRESS + 1:
            errors.append(
                (f"{at}.address", f"registers {_span(p)} run past {LAST_ADDRESS}, the last register address")
            )
            continue
        if p.scale == 0:
            errors.append((f"{at}.scale", "must not be 0 (value = raw * scale)"))
            continue
        if p.min is not None and p.max is not None and p.min > p.max:
            errors.append((f"{at}.min", f"min ({p.min}) is above max ({p.max})"))
        lo, hi = type_range(Point(p.name, p.address, p.type, p.word_order, p.scale))
        for label, bound in (("min", p.min), ("max", p.max)):
            if bound is not None and not lo <= bound <= hi:
                errors.append(
                    (
                        f"{at}.{label}",
                        f"{bound} is beyond what {raw_description(p.type)} "
                        f"holds at scale {p.scale} ({lo:g}..{hi:g})",
                    )
                )
    # Overlaps: sweep by address, remembering the point that reaches furthest so far.
    reach: int | None = None
    for i in sorted(range(len(points)), key=lambda i: (points[i].address, i)):
        if reach is not None and points[i].address < _end(points[reach]):
            later, earlier = max(i, reach), min(i, reach)
            a, b = points[later], points[earlier]
            errors.append(
                (f"points[{later}]", f"registers {_span(a)} overlap points[{earlier}] ({b.name}, {_span(b)})")
            )
        if reach is None or _end(points[i]) > _end(points[reach]):
            reach = i
    return errors


def _role_problems(role: str, spec: RoleSpec, p: _PointModel) -> list[str]:
    """What is wrong with point `p` playing `role` (empty when it fits)."""
    problems = []
    if spec.writable and p.access != "rw":
        problems.append(f"point {p.name!r} is read-only; the {role} role needs access rw")
    if p.unit != spec.unit:
        want = f"unit {spec.unit!r}" if spec.unit else "no unit (unit: '')"
        problems.append(
            f"point {p.name!r} has unit {p.unit!r}; the {role} role needs {want} (adjust the scale)"
        )
    if role.startswith("relay_") and (p.type not in ("int16", "uint16") or p.scale != 1):
        problems.append(
            f"point {p.name!r} is {p.type} with scale {p.scale}; a relay role needs a 16-bit "
            "integer point with scale 1 (0 = open, 1 = closed)"
        )
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
    errors = _point_errors(model.points)
    errors += _role_errors(model)
    if errors:
        raise _config_error(source, errors)
    points = tuple(Point(**p.model_dump()) for p in model.points)
    return Profile(model.name, model.kind, model.description, model.sunspec, points, dict(model.roles))


def _config_error(source: str, errors: list[tuple[str, str]]) -> ConfigError:
    message = "\n".join(f"{source}: {key}: {what}" for key, what in errors)
    return ConfigError(message, file=source, key=errors[0][0])
