"""Device profiles as data: the semantic roles each device kind maps (`ROLES`), `Profile`
(its points, which point plays which role, its read limits) and the planning of its reads.

Owns what a profile says; a point by itself is `core.point`, the grouping into requests
`core.block_plan`, decoding `core.registers`, the YAML schema `core.profile_schema`.
Pure: no I/O, no clocks.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from meshems.core.block_plan import Block, plan_blocks
from meshems.core.point import (
    BIT_TABLES,
    LAST_ADDRESS,
    READ_LIMIT,
    WORDS,
    Access,
    Order,
    Point,
    RegType,
    Table,
    WordOrder,
)

__all__ = [
    "LAST_ADDRESS", "ROLES", "WORDS", "Access", "Block", "Kind", "Order", "Point", "Profile", "RegType",
    "RoleSpec", "Table", "WordOrder",
]  # fmt: skip

Kind = Literal["meter", "battery", "pv", "relay"]
#: how many unused addresses a read may span between two points unless a profile says otherwise
DEFAULT_MAX_GAP = 8


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
                **{
                    f"input_{i}": RoleSpec(
                        "",
                        description=f"digital input {i}: 0 off, 1 on (e.g. a contactor's auxiliary contact)",
                    )
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
    """A device's register map: its points, which point plays which semantic role, and how
    the device wants to be read (`max_gap`, `max_read` registers and `max_read_bits` bits per
    request, at most the Modbus limits) and written (`write_single_register`: one-register
    points with function 06 instead of 16; `enables`: role -> (point, value) pairs written
    before a value of that role, as SunSpec controls take effect only when enabled)."""

    name: str
    kind: Kind
    description: str
    sunspec: str
    points: tuple[Point, ...]
    roles: Mapping[str, str] = field(hash=False)
    max_gap: int = DEFAULT_MAX_GAP
    max_read: int = READ_LIMIT["holding"]
    max_read_bits: int = READ_LIMIT["coil"]
    write_single_register: bool = False
    enables: Mapping[str, tuple[tuple[str, float], ...]] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "points", tuple(self.points))
        object.__setattr__(self, "roles", _FrozenMap(self.roles))
        object.__setattr__(self, "enables", dict(self.enables))  # a copy: pickles, unlike a proxy

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
        self,
        max_gap: int | None = None,
        max_count: int | None = None,
        *,
        names: Collection[str] | None = None,
        max_bits: int | None = None,
    ) -> tuple[Block, ...]:
        """Points merged into read requests, per table (holding, input, coil, discrete), by address.

        The next point joins the current block when at most `max_gap` unused addresses lie
        between them (default: the profile's `max_gap`) and the block stays within
        `max_count` registers (default: the profile's `max_read`, at most 125) or `max_bits`
        bits (default: `max_read_bits`, at most 2000). `names` restricts the plan to those
        points (e.g. the ones polled every cycle) and the scale points they need, which are
        always read in the same poll. Every selected point is in exactly one block; the
        result is deterministic.
        """
        max_gap = self.max_gap if max_gap is None else max_gap
        max_count = min(self.max_read, READ_LIMIT["holding"]) if max_count is None else max_count
        max_bits = min(self.max_read_bits, READ_LIMIT["coil"]) if max_bits is None else max_bits
        if max_gap < 0 or max_count < 2 or max_bits < 1:
            raise ValueError(
                f"need max_gap >= 0, max_count >= 2 and max_bits >= 1, got {max_gap}, {max_count}, {max_bits}"
            )
        selected = self.points
        if names is not None:
            known = {p.name for p in self.points}
            unknown = sorted(set(names) - known)
            if unknown:
                raise KeyError(f"no point(s) {', '.join(unknown)} in profile {self.name!r}")
            wanted = set(names)
            wanted |= {p.scale_point for p in self.points if p.name in wanted and p.scale_point}
            selected = tuple(p for p in self.points if p.name in wanted)
        limits = {"holding": max_count, "input": max_count, "coil": max_bits, "discrete": max_bits}
        return plan_blocks(selected, max_gap, limits)

    def scaled_by(self) -> dict[str, str]:
        """Point name -> the name of the scale point it is scaled by (SunSpec sunssf)."""
        return {p.name: p.scale_point for p in self.points if p.scale_point is not None}

    def register_count(self) -> int:
        """Registers over all register points (words, not counting gaps; coils and discrete
        inputs are bits and not counted)."""
        return sum(p.count for p in self.points if p.table not in BIT_TABLES)
