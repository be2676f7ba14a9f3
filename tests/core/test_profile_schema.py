"""Unit tests for `meshems.core.profile_schema`: every profile error names the file and the
exact key, several errors are reported one per line, and the built-in profiles are valid."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import yaml

import meshems.profiles
from meshems.core.errors import ConfigError
from meshems.core.profile_schema import parse_profile
from meshems.core.register_map import Profile
from meshems.core.registers import decode, encode

PROFILE_DIR = Path(meshems.profiles.__file__).parent


# --- profiles ----------------------------------------------------------------------------


def base() -> dict[str, Any]:
    """A small valid battery profile."""
    return {
        "name": "test-battery",
        "kind": "battery",
        "description": "a battery for tests",
        "sunspec": "names from SunSpec 701/704/713",
        "points": [
            {"name": "W", "address": 40010, "type": "int32", "scale": 0.001, "unit": "kW"},
            {
                "name": "WSet",
                "address": 40012,
                "type": "int32",
                "scale": 0.001,
                "unit": "kW",
                "access": "rw",
                "min": -10,
                "max": 10,
            },
            {"name": "SoC", "address": 40014, "type": "uint16", "scale": 0.01, "unit": "pct"},
            {"name": "RvrtTms", "address": 40020, "type": "uint32", "unit": "s", "access": "rw"},
        ],
        "roles": {"power_kw": "W", "setpoint_kw": "WSet", "soc_pct": "SoC", "revert_timeout_s": "RvrtTms"},
    }


def mutated(change: Any) -> dict[str, Any]:
    data = copy.deepcopy(base())
    change(data)
    return data


def test_a_valid_profile() -> None:
    profile = parse_profile(base(), "b.yaml")
    assert (profile.name, profile.kind, profile.sunspec) == (
        "test-battery",
        "battery",
        "names from SunSpec 701/704/713",
    )
    assert [p.name for p in profile.points] == ["W", "WSet", "SoC", "RvrtTms"]
    wset = profile.point("WSet")
    assert (wset.address, wset.type, wset.scale, wset.access, wset.min, wset.max) == (
        40012,
        "int32",
        0.001,
        "rw",
        -10,
        10,
    )
    assert profile.role("setpoint_kw") == wset
    assert profile.role("capacity_kwh") is None  # a battery role this profile does not map
    assert profile.role("voltage_v") is None  # a role of another kind
    assert profile.register_count() == 7
    assert [(b.start, b.count) for b in profile.read_blocks()] == [(40010, 12)]  # gap of 5 merges
    assert [(b.start, b.count) for b in profile.read_blocks(max_gap=4)] == [(40010, 5), (40020, 2)]


def test_parse_profile_rejects_non_mappings() -> None:
    with pytest.raises(ConfigError) as info:
        parse_profile(["W"], "x.yaml")
    assert info.value.message == "x.yaml: the profile must be a YAML mapping"
    assert info.value.exit_code == 2


def relay_role_on(point_change: dict[str, Any]) -> Any:
    def change(d: dict[str, Any]) -> None:
        d["kind"] = "relay"
        d["points"][0].update(point_change)
        d["roles"] = {"relay_1": "W"}

    return change


def pv_limit(**limits: float) -> Any:
    def change(d: dict[str, Any]) -> None:
        d["kind"] = "pv"
        d["points"][2].update(access="rw", **limits)
        d["roles"] = {"power_kw": "W", "limit_pct": "SoC"}

    return change


PROFILE_ERRORS: list[tuple[str, Any, str, str]] = [
    # (case, change to base(), key named in the message, text in the message)
    ("unknown top-level key", lambda d: d.update(colour="red"), "colour", "unknown key (misspelt?)"),
    ("unknown point key", lambda d: d["points"][1].update(scal=1), "points[1].scal", "unknown key"),
    (
        "bad type",
        lambda d: d["points"][3].update(type="int8"),  # int64 is a type since the tables came
        "points[3].type",
        "Input should be 'int16', 'uint16'",
    ),
    ("bad kind", lambda d: d.update(kind="inverter"), "kind", "Input should be 'meter', 'battery'"),
    (
        "bad access",
        lambda d: d["points"][1].update(access="w"),
        "points[1].access",
        "Input should be 'r' or 'rw'",
    ),
    (
        "bad word order",
        lambda d: d["points"][0].update(word_order="mid"),
        "points[0].word_order",
        "'big' or 'little'",
    ),
    ("missing type", lambda d: d["points"][0].pop("type"), "points[0].type", "Field required"),
    ("missing description", lambda d: d.pop("description"), "description", "Field required"),
    ("no points", lambda d: d.update(points=[]), "points", "at least 1"),
    ("bad profile name", lambda d: d.update(name="Test Battery"), "name", "pattern"),
    ("bad point name", lambda d: d["points"][0].update(name="W set"), "points[0].name", "pattern"),
    (
        "negative address",
        lambda d: d["points"][0].update(address=-1),
        "points[0].address",
        "greater than or equal",
    ),
    (
        "address too big",
        lambda d: d["points"][0].update(address=70000),
        "points[0].address",
        "less than or equal",
    ),
    (
        "address not a number",
        lambda d: d["points"][0].update(address="x"),
        "points[0].address",
        "valid integer",
    ),
    ("scale not finite", lambda d: d["points"][0].update(scale=math.inf), "points[0].scale", "finite number"),
    ("max not finite", lambda d: d["points"][1].update(max=math.nan), "points[1].max", "finite number"),
    ("roles not a mapping", lambda d: d.update(roles=["W"]), "roles", "valid dictionary"),
    ("role not a name", lambda d: d["roles"].update(power_kw=5), "roles.power_kw", "valid string"),
    (
        "registers past 65535",
        lambda d: d["points"][3].update(address=65535),
        "points[3].address",
        "registers 65535-65536 run past 65535",
    ),
    ("scale zero", lambda d: d["points"][2].update(scale=0), "points[2].scale", "must not be 0"),
    (
        "min above max",
        lambda d: d["points"][1].update(min=5, max=1),
        "points[1].min",
        "min (5.0) is above max (1.0)",
    ),
    (
        "max beyond the type",
        lambda d: d["points"][2].update(max=1000),
        "points[2].max",
        "1000.0 is beyond what uint16 (0..65534) holds at scale 0.01",
    ),
    (
        "min beyond the type",
        lambda d: d["points"][3].update(min=-1),
        "points[3].min",
        "-1.0 is beyond what uint32",
    ),
    (
        "duplicate point name",
        lambda d: d["points"][2].update(name="W"),
        "points[2].name",
        "'W' is already the name of points[0]",
    ),
    (
        "overlap",
        lambda d: d["points"][2].update(address=40011),
        "points[2]",
        "registers 40011-40011 overlap points[0] (W, 40010-40011)",
    ),
    (
        "overlap with a later point at a lower address",
        lambda d: d["points"][3].update(address=40009),
        "points[3]",
        "registers 40009-40010 overlap points[0] (W, 40010-40011)",
    ),
    (
        "unknown role",
        lambda d: d["roles"].update(voltage_v="W"),
        "roles.voltage_v",
        "unknown role for a battery profile (known: power_kw, setpoint_kw",
    ),
    (
        "role names an unknown point",
        lambda d: d["roles"].update(setpoint_kw="Wset"),
        "roles.setpoint_kw",
        "no point named 'Wset' (known: W, WSet, SoC, RvrtTms)",
    ),
    (
        "writable role on a read-only point",
        lambda d: d["roles"].update(setpoint_kw="W"),
        "roles.setpoint_kw",
        "point 'W' is read-only; the setpoint_kw role needs access rw",
    ),
    (
        "missing required role",
        lambda d: d["roles"].pop("soc_pct"),
        "roles.soc_pct",
        "required for a battery profile",
    ),
    (
        "role unit mismatch",
        lambda d: d["points"][0].update(unit="W"),
        "roles.power_kw",
        "point 'W' has unit 'W'; the power_kw role needs unit 'kW'",
    ),
    (
        "unit-less point in a unit role",
        lambda d: d["points"][2].update(unit=""),
        "roles.soc_pct",
        "point 'SoC' has unit ''; the soc_pct role needs unit 'pct'",
    ),
    (
        "setpoint without limits",
        lambda d: [d["points"][1].pop(k) for k in ("min", "max")],
        "roles.setpoint_kw",
        "point 'WSet' needs min and max",
    ),
    ("pv limit above 100", pv_limit(min=0, max=120), "roles.limit_pct", "must lie within 0.0..100.0"),
    ("pv limit without range", pv_limit(), "roles.limit_pct", "needs min and max"),
    (
        "relay role on a scaled 32-bit point",
        relay_role_on({"access": "rw", "unit": ""}),
        "roles.relay_1",
        "a relay role needs a 16-bit integer point with scale 1",
    ),
    (
        "relay role with a unit",
        relay_role_on({"type": "uint16", "scale": 1, "access": "rw"}),
        "roles.relay_1",
        "no unit",
    ),
]


@pytest.mark.parametrize(
    ("case", "change", "key", "text"), PROFILE_ERRORS, ids=[c[0] for c in PROFILE_ERRORS]
)
def test_profile_errors_name_source_and_key(case: str, change: Any, key: str, text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_profile(mutated(change), "x.yaml")
    err = info.value
    assert err.message.startswith(f"x.yaml: {key}: "), err.message
    assert text in err.message, err.message
    assert (err.code, err.exit_code) == ("E_CONFIG", 2)
    assert err.context == {"file": "x.yaml", "key": key}


def test_several_profile_errors_are_reported_one_per_line() -> None:
    def change(d: dict[str, Any]) -> None:
        d["points"][2]["name"] = "W"
        d["points"][3]["scale"] = 0
        d["roles"]["soc_pct"] = "SoCx"

    with pytest.raises(ConfigError) as info:
        parse_profile(mutated(change), "x.yaml")
    lines = info.value.message.splitlines()
    assert [line.split(": ")[1] for line in lines] == ["points[2].name", "points[3].scale", "roles.soc_pct"]
    assert all(line.startswith("x.yaml: ") for line in lines)


# --- the built-in profiles ---------------------------------------------------------------


@pytest.mark.parametrize("kind", ["meter", "battery", "pv", "relay"])
def test_builtin_profile_is_valid_and_polls_one_small_block(kind: str) -> None:
    path = PROFILE_DIR / f"{kind}.yaml"
    profile = parse_profile(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))
    assert profile.kind == kind
    assert 8 <= len(profile.points) <= 14
    assert all(p.address >= 40000 and p.end <= 40200 for p in profile.points)
    assert (
        "SunSpec" in profile.sunspec and "flat map" in profile.sunspec and "scale factors" in profile.sunspec
    )
    assert "flat register map" in profile.description
    blocks = profile.read_blocks()
    assert sorted(p.name for b in blocks for p in b.points) == sorted(p.name for p in profile.points)
    first = "relay_1" if kind == "relay" else "power_kw"
    (main,) = [b for b in blocks if profile.role(first) in b.points]
    assert main.start == 40070 and 8 <= main.count <= 12 <= 125
    assert all(b.count <= 125 for b in blocks)
    for role, name in profile.roles.items():  # every mapped role's point is polled every cycle or is config
        assert profile.point(name) == profile.role(role)
    for p in profile.points:  # every point's limits are encodable
        for value in (p.min, p.max, 0.0):
            if value is not None:
                assert decode(p, encode(p, value, check_access=False)) == pytest.approx(value)


def test_builtin_roles_and_main_points() -> None:
    def load(kind: str) -> Profile:
        return parse_profile(yaml.safe_load((PROFILE_DIR / f"{kind}.yaml").read_text()), f"{kind}.yaml")

    meter, battery, pv, relay = (load(k) for k in ("meter", "battery", "pv", "relay"))
    w = meter.role("power_kw")
    assert w is not None and (w.type, w.scale, w.unit) == ("int32", 0.001, "kW")
    assert encode(w, 12.345, check_access=False) == [0, 12345]
    wset = battery.role("setpoint_kw")
    assert wset is not None and (wset.type, wset.scale, wset.access, wset.min, wset.max) == (
        "int32",
        0.001,
        "rw",
        -1000,
        1000,
    )
    revert = battery.role("revert_timeout_s")
    assert revert is not None and (revert.type, revert.unit, revert.writable) == ("uint32", "s", True)
    assert encode(revert, 0) == [0, 0]  # 0 = no revert
    limit = pv.role("limit_pct")
    assert limit is not None and (limit.type, limit.scale, limit.min, limit.max) == ("uint16", 0.01, 0, 100)
    assert encode(limit, 100) == [10000]
    relays = [relay.role(f"relay_{i}") for i in range(1, 5)]
    assert [r.address for r in relays if r] == [40070, 40071, 40072, 40073]
    assert all(r is not None and r.writable and r.type == "uint16" for r in relays)
    loads = [relay.role(f"load_{i}_kw") for i in range(1, 5)]
    assert all(p is not None and (p.type, p.scale, p.access) == ("int32", 0.001, "r") for p in loads)
    assert relay.role("relay_5") is None
