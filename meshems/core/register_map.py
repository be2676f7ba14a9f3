"""Device register maps as data: `Point` (one value's address, type, scale and access), the
semantic roles each device kind maps (`ROLES`), `Profile` and the planning of read blocks.

Owns what a profile says, not how words are decoded (`core.registers`) nor how a YAML file
is validated (`core.profile_schema`). Pure: no I/O, no clocks.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

RegType = Literal["int16", "uint16", "int32", "uint32", "float32"]
WordOrder = Literal["big", "little"]
Access = Literal["r", "rw"]
Kind = Literal["meter", "battery", "pv", "relay"]

WORDS: Mapping[str, int] = MappingProxyType({"int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2})
LAST_ADDRESS = 0xFFFF


# --- points and read blocks -----------------------------------------------------------------


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


@dataclass(frozen=True, slots=True)
class Block:
    """Registers read with one request: `count` words from `start`, holding `points`."""

    start: int
    count: int
    points: tuple[Point, ...]

    @property
    def end(self) -> int:
        return self.start + self.count


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
