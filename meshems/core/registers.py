"""Modbus register codec and device-profile schema: words <-> engineering values via register maps.

Owns `Point`/`Profile`/`Block`, `decode`/`encode` (int16 .. float32, both word orders, fixed scale,
SunSpec "not implemented" markers), read-block planning and the profile YAML schema with its
error messages. Pure: no I/O, no clocks; files are read by `adapters.profiles`.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from meshems.core.errors import ConfigError, key_path

RegType = Literal["int16", "uint16", "int32", "uint32", "float32"]
WordOrder = Literal["big", "little"]
Access = Literal["r", "rw"]
Kind = Literal["meter", "battery", "pv", "relay"]

WORDS: Mapping[str, int] = MappingProxyType({"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2})
LAST_ADDRESS = 0xFFFF

# The raw word value SunSpec uses for "not implemented", per type (as the unsigned wire value).
NOT_IMPLEMENTED: Mapping[str, int] = MappingProxyType(
    {"int16": 0x8000, "uint16": 0xFFFF, "int32": 0x8000_0000, "uint32": 0xFFFF_FFFF}
)
# Raw values encode() may produce: the full range minus the "not implemented" marker, so that
# decode(encode(v)) == v always holds.
_RAW_RANGE: Mapping[str, tuple[int, int]] = MappingProxyType(
    {
        "int16": (-0x7FFF, 0x7FFF),
        "uint16": (0, 0xFFFE),
        "int32": (-0x7FFF_FFFF, 0x7FFF_FFFF),
        "uint32": (0, 0xFFFF_FFFE),
    }
)
_FLOAT32_MAX = 3.4028234663852886e38


class CodecError(ValueError):
    """A value or word list that cannot be encoded or decoded for a point; names the point."""


# --- points and the codec ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Point:
    """One value in a device's holding registers.

    `address` is the 0-based register address as sent on the wire. `word_order` "big" puts the
    high word first (the Modbus/SunSpec default); bytes inside a word are always big-endian.
    Engineering value = raw * `scale`; `min`/`max` are engineering units, checked on encode.
    """

    name: str
    address: int
    type: RegType
    word_order: WordOrder = "big"
    scale: float = 1.0
    unit: str = ""
    access: Access = "r"
    min: float | None = None
    max: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.type not in WORDS:
            raise ValueError(f"{self.name}: unknown register type {self.type!r}")
        if not 0 <= self.address <= LAST_ADDRESS or self.address + WORDS[self.type] > LAST_ADDRESS + 1:
            raise ValueError(f"{self.name}: registers {self.address}.. do not fit in 0..{LAST_ADDRESS}")
        if self.scale == 0 or not math.isfinite(self.scale):
            raise ValueError(f"{self.name}: scale must be finite and not 0, not {self.scale}")

    @property
    def count(self) -> int:
        """Registers (16-bit words) the point occupies: 1 or 2."""
        return WORDS[self.type]

    @property
    def end(self) -> int:
        """One past the last register of the point."""
        return self.address + self.count

    @property
    def writable(self) -> bool:
        return self.access == "rw"


def _where(point: Point) -> str:
    return f"point {point.name!r} at {point.address}"


def _type_range(point: Point) -> tuple[float, float]:
    """The engineering values the point's type can carry at its scale (min/max not applied)."""
    if point.type == "float32":
        lo, hi = -_FLOAT32_MAX * abs(point.scale), _FLOAT32_MAX * abs(point.scale)
    else:
        raw_lo, raw_hi = _RAW_RANGE[point.type]
        lo, hi = sorted((raw_lo * point.scale, raw_hi * point.scale))
    return lo, hi


def _raw_description(reg_type: str) -> str:
    if reg_type == "float32":
        return "float32"
    lo, hi = _RAW_RANGE[reg_type]
    return f"{reg_type} ({lo}..{hi})"


def decode(point: Point, words: Sequence[int]) -> float:
    """Words as read from the device -> engineering value; `math.nan` for "not implemented"."""
    if len(words) != point.count:
        raise CodecError(f"{_where(point)}: {point.type} needs {point.count} word(s), got {len(words)}")
    for w in words:
        if not isinstance(w, int) or not 0 <= w <= 0xFFFF:
            raise CodecError(f"{_where(point)}: {w!r} is not a 16-bit register value")
    if point.count == 1:
        u = words[0]
    else:
        hi, lo = (words[0], words[1]) if point.word_order == "big" else (words[1], words[0])
        u = hi << 16 | lo
    if point.type == "float32":
        return struct.unpack(">f", u.to_bytes(4, "big"))[0] * point.scale
    if u == NOT_IMPLEMENTED[point.type]:
        return math.nan
    raw = u
    if point.type == "int16" and u & 0x8000:
        raw = u - 0x1_0000
    elif point.type == "int32" and u & 0x8000_0000:
        raw = u - 0x1_0000_0000
    return raw * point.scale


def encode(point: Point, value: float, *, check_access: bool = True) -> list[int]:
    """Engineering value -> words to write (round(value / scale) for integer types).

    Refuses read-only points (unless `check_access=False`, as the simulator does to publish
    measurements), non-finite values, values outside min/max and raw values the type cannot hold.
    """
    if check_access and not point.writable:
        raise CodecError(f"{_where(point)}: read-only (access r); it cannot be written")
    try:
        value = float(value)
    except (OverflowError, TypeError, ValueError):
        raise CodecError(f"{_where(point)}: {value!r} is not a number it can hold") from None
    if not math.isfinite(value):
        raise CodecError(f"{_where(point)}: {value} is not a finite number")
    unit = f" {point.unit}" if point.unit else ""
    if point.min is not None and value < point.min:
        raise CodecError(f"{_where(point)}: {value}{unit} is below its min {point.min}{unit}")
    if point.max is not None and value > point.max:
        raise CodecError(f"{_where(point)}: {value}{unit} is above its max {point.max}{unit}")
    quotient = value / point.scale
    if point.type == "float32":
        if not abs(quotient) <= _FLOAT32_MAX:
            raise CodecError(f"{_where(point)}: {value}{unit} is too large for float32")
        u = int.from_bytes(struct.pack(">f", quotient), "big")
    else:
        lo, hi = _RAW_RANGE[point.type]
        raw = round(quotient) if math.isfinite(quotient) else None
        if raw is None or not lo <= raw <= hi:
            raise CodecError(
                f"{_where(point)}: {value}{unit} is raw {raw if raw is not None else quotient} at scale "
                f"{point.scale}, outside {_raw_description(point.type)}"
            )
        u = raw & (0xFFFF if point.count == 1 else 0xFFFF_FFFF)
    if point.count == 1:
        return [u]
    hi_word, lo_word = u >> 16, u & 0xFFFF
    return [hi_word, lo_word] if point.word_order == "big" else [lo_word, hi_word]


# --- read blocks ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Block:
    """Registers read with one request: `count` words from `start`, holding `points`."""

    start: int
    count: int
    points: tuple[Point, ...]

    @property
    def end(self) -> int:
        return self.start + self.count


def decode_block(block: Block, words: Sequence[int]) -> dict[str, float]:
    """The words of one block read -> point name -> engineering value."""
    if len(words) != block.count:
        raise CodecError(f"block at {block.start}: expected {block.count} words, got {len(words)}")
    return {p.name: decode(p, words[p.address - block.start : p.end - block.start]) for p in block.points}


_STRUCT_CODES = {"int16": "h", "uint16": "H", "int32": "i", "uint32": "I", "float32": "f"}


def compile_block(block: Block) -> Callable[[Sequence[int]], dict[str, float]]:
    """A faster `decode_block` for one block (the poller's hot path): one struct unpack for
    all big-word-order points; other points fall back to `decode`. Same results."""
    fast = [p for p in block.points if p.word_order == "big" or p.count == 1]
    slow = [p for p in block.points if p not in fast]
    offsets = [
        (p.name, (p.address - block.start) * 2, struct.Struct(">" + _STRUCT_CODES[p.type]), p) for p in fast
    ]
    words_struct = struct.Struct(f">{block.count}H")

    def decode_fast(words: Sequence[int]) -> dict[str, float]:
        if len(words) != block.count:
            raise CodecError(f"block at {block.start}: expected {block.count} words, got {len(words)}")
        try:
            raw_bytes = words_struct.pack(*words)
        except struct.error:
            return decode_block(block, words)  # out-of-range words: let decode name the point
        out: dict[str, float] = {}
        for name, offset, st, p in offsets:
            v = st.unpack_from(raw_bytes, offset)[0]
            if (
                p.type != "float32"
                and (v if p.type[0] == "u" else v & _MASK[p.type]) == NOT_IMPLEMENTED[p.type]
            ):
                out[name] = math.nan
            else:
                out[name] = v * p.scale
        for p in slow:
            out[p.name] = decode(p, words[p.address - block.start : p.end - block.start])
        return out

    return decode_fast


_MASK = {"int16": 0xFFFF, "int32": 0xFFFF_FFFF}


# --- roles and profiles ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoleSpec:
    """What a semantic role asks of the point it maps to."""

    unit: str
    required: bool = False
    writable: bool = False
    description: str = ""


_RELAYS = 8
ROLES: Mapping[str, Mapping[str, RoleSpec]] = MappingProxyType(
    {
        "meter": MappingProxyType(
            {
                "power_kw": RoleSpec("kW", required=True, description="+ import from the grid into the site"),
                "voltage_v": RoleSpec("V"),
                "frequency_hz": RoleSpec("Hz"),
                "energy_import_kwh": RoleSpec("kWh"),
                "energy_export_kwh": RoleSpec("kWh"),
            }
        ),
        "battery": MappingProxyType(
            {
                "power_kw": RoleSpec("kW", required=True, description="+ discharge to the site, - charge"),
                "setpoint_kw": RoleSpec("kW", required=True, writable=True, description="+ discharge"),
                "soc_pct": RoleSpec("pct", required=True),
                "revert_timeout_s": RoleSpec("s", writable=True, description="0 = no revert"),
                "max_charge_kw": RoleSpec("kW"),
                "max_discharge_kw": RoleSpec("kW"),
                "capacity_kwh": RoleSpec("kWh"),
            }
        ),
        "pv": MappingProxyType(
            {
                "power_kw": RoleSpec("kW", required=True, description="+ generation"),
                "limit_pct": RoleSpec(
                    "pct", required=True, writable=True, description="active-power limit, % of rated"
                ),
                "revert_timeout_s": RoleSpec("s", writable=True, description="0 = no revert"),
                "rated_kw": RoleSpec("kW"),
            }
        ),
        "relay": MappingProxyType(
            {
                **{
                    f"relay_{i}": RoleSpec("", required=i == 1, writable=True, description="0 open, 1 closed")
                    for i in range(1, _RELAYS + 1)
                },
                **{
                    f"load_{i}_kw": RoleSpec("kW", description=f"power drawn behind relay {i}")
                    for i in range(1, _RELAYS + 1)
                },
            }
        ),
    }
)
_ALL_ROLES = frozenset(role for roles in ROLES.values() for role in roles)
# Writable roles whose point must carry min and max, so a bad setpoint is refused before the wire.
_BOUNDED_ROLES = {"setpoint_kw": None, "limit_pct": (0.0, 100.0)}


class _FrozenMap(Mapping[str, str]):
    """A read-only str -> str mapping that, unlike MappingProxyType, pickles and deep-copies."""

    __slots__ = ("_data",)

    def __init__(self, data: Mapping[str, str]) -> None:
        self._data = dict(data)

    def __getitem__(self, key: str) -> str:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return repr(self._data)

    def __reduce__(self) -> tuple[type[_FrozenMap], tuple[dict[str, str]]]:
        return (_FrozenMap, (self._data,))


@dataclass(frozen=True, slots=True)
class Profile:
    """A device's register map: its points and which point plays which semantic role."""

    name: str
    kind: Kind
    description: str
    sunspec: str
    points: tuple[Point, ...]
    roles: Mapping[str, str] = field(hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", tuple(self.points))
        object.__setattr__(self, "roles", _FrozenMap(self.roles))

    def point(self, name: str) -> Point:
        for p in self.points:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.points)
        raise KeyError(f"no point {name!r} in profile {self.name!r} (known: {known})")

    def role(self, role: str) -> Point | None:
        """The point that plays `role`, or None if this profile does not map it.

        A name that is no role of any kind (a typo) raises KeyError rather than returning None.
        """
        if role not in _ALL_ROLES:
            raise KeyError(f"{role!r} is not a role (known: {', '.join(sorted(_ALL_ROLES))})")
        name = self.roles.get(role)
        return None if name is None else self.point(name)

    def read_blocks(
        self, max_gap: int = 8, max_count: int = 125, *, names: Collection[str] | None = None
    ) -> tuple[Block, ...]:
        """Readable points by address, merged into read requests.

        The next point joins the current block when at most `max_gap` unused registers lie
        between them and the block stays within `max_count` registers (125 is the Modbus limit
        for one read). `names` restricts the plan to those points (e.g. the ones polled every
        cycle). Every selected point is in exactly one block; the result is deterministic.
        """
        if max_gap < 0 or max_count < 2:
            raise ValueError(f"need max_gap >= 0 and max_count >= 2, got {max_gap}, {max_count}")
        if names is not None:
            unknown = sorted(set(names) - {p.name for p in self.points})
            if unknown:
                raise KeyError(f"no point(s) {', '.join(unknown)} in profile {self.name!r}")
        selected = sorted(
            (p for p in self.points if names is None or p.name in names),
            key=lambda p: (p.address, p.count, p.name),
        )
        blocks: list[Block] = []
        current: list[Point] = []
        start = end = 0
        for p in selected:
            if current and p.address - end <= max_gap and max(end, p.end) - start <= max_count:
                current.append(p)
                end = max(end, p.end)
                continue
            if current:
                blocks.append(Block(start, end - start, tuple(current)))
            current, start, end = [p], p.address, p.end
        if current:
            blocks.append(Block(start, end - start, tuple(current)))
        return tuple(blocks)

    def register_count(self) -> int:
        """Registers over all points (words, not counting gaps)."""
        return sum(p.count for p in self.points)


# --- the YAML schema --------------------------------------------------------------------------

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
        lo, hi = _type_range(Point(p.name, p.address, p.type, p.word_order, p.scale))
        for label, bound in (("min", p.min), ("max", p.max)):
            if bound is not None and not lo <= bound <= hi:
                errors.append(
                    (
                        f"{at}.{label}",
                        f"{bound} is beyond what {_raw_description(p.type)} "
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
