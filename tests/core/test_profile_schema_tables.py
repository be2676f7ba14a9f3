"""Unit tests for `meshems.core.profile_schema` with the four Modbus tables, the new types,
byte and word orders and scale points: a profile that uses all of them is valid, and every
mistake is refused with the file and the exact key; the device built-ins are valid."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from meshems.core.errors import ConfigError
from meshems.core.profile_schema import parse_profile
from tests.core.test_profile_schema import PROFILE_DIR

EXAMPLE = """
name: tables-meter
kind: meter
description: a meter on every table
max_read: 100
max_gap: 4
write_single_register: true
points:
  - {name: W, table: input, address: 0, type: float32, order: CDAB, scale: 0.001, unit: kW}
  - {name: TotWh, table: input, address: 2, type: uint64, order: DCBA, scale: 0.001, unit: kWh}
  - {name: A, table: input, address: 6, type: int16, scale_point: A_SF, unit: A}
  - {name: A_SF, table: input, address: 7, type: int16}
  - {name: Md, table: holding, address: 0, type: string, length: 8}
  - {name: Alarm, table: holding, address: 8, type: bit, bit: 3}
  - {name: Fault, table: holding, address: 8, type: bit, bit: 4}
  - {name: Limit, table: holding, address: 9, type: float64, order: BADC, unit: kW, access: rw,
     min: 0, max: 100}
  - {name: Old, table: holding, address: 13, type: int32, word_order: little}
  - {name: Trip, table: coil, address: 0, access: rw}
  - {name: Door, table: discrete, address: 0, type: bool}
roles: {power_kw: W, energy_import_kwh: TotWh}
"""


def example() -> dict[str, Any]:
    return yaml.safe_load(EXAMPLE)  # type: ignore[no-any-return]


def test_a_profile_on_every_table() -> None:
    profile = parse_profile(example(), "t.yaml")
    assert (profile.max_read, profile.max_gap, profile.write_single_register) == (100, 4, True)
    by = {p.name: p for p in profile.points}
    assert (by["W"].table, by["W"].order, by["W"].word_order) == ("input", "CDAB", "CDAB")
    assert (by["Old"].order, by["Old"].word_order) == ("CDAB", "little")
    assert (by["Md"].type, by["Md"].count, by["Md"].text) == ("string", 8, True)
    assert (by["Alarm"].bit, by["Fault"].bit, by["Alarm"].count) == (3, 4, 1)
    assert (by["Trip"].type, by["Trip"].bits, by["Trip"].writable) == ("bool", True, True)
    assert by["A"].scale_point == "A_SF" and profile.scaled_by() == {"A": "A_SF"}
    plan = [(b.table, b.start, b.count) for b in profile.read_blocks()]
    assert plan == [("holding", 0, 15), ("input", 0, 8), ("coil", 0, 1), ("discrete", 0, 1)]


def with_point(i: int, **change: Any) -> Any:
    def apply(d: dict[str, Any]) -> None:
        for k, v in change.items():
            if v is None:
                d["points"][i].pop(k, None)
            else:
                d["points"][i][k] = v

    return apply


ERRORS: list[tuple[str, Any, str, str]] = [
    # (case, change to example(), key named, text in the message)
    (
        "coil with a numeric type",
        with_point(9, type="int16"),
        "points[9].type",
        "a coil is a single bit: type bool (or no type), not int16",
    ),
    (
        "discrete input with a type",
        with_point(10, type="uint16"),
        "points[10].type",
        "a discrete input is a single bit",
    ),
    ("bool on a register", with_point(4, type="bool", length=None), "points[4].type", "bool is for coils"),
    ("unknown table", with_point(0, table="inputs"), "points[0].table", "Input should be 'holding', 'input'"),
    (
        "write role on an input register",
        with_point(0, access="rw"),
        "points[0].access",
        "input registers are read-only",
    ),
    (
        "write on a discrete input",
        with_point(10, access="rw"),
        "points[10].access",
        "discrete inputs are read-only",
    ),
    (
        "register past the table",
        with_point(1, address=65533),
        "points[1].address",
        "registers 65533-65536 run past 65535",
    ),
    ("coil past the table", with_point(9, address=65536), "points[9].address", "less than or equal to 65535"),
    (
        "scale point missing",
        with_point(2, scale_point="A_sf"),
        "points[2].scale_point",
        "no point named 'A_sf'",
    ),
    (
        "scale point not int16",
        with_point(3, type="uint16"),
        "points[2].scale_point",
        "point 'A_SF' is uint16 with scale 1.0; a scale point is an unscaled int16",
    ),
    (
        "scale point scaled itself",
        with_point(3, scale=0.1),
        "points[2].scale_point",
        "is int16 with scale 0.1",
    ),
    ("scale point on a string", with_point(4, scale_point="A_SF"), "points[4].scale_point", "not a string"),
    ("string without length", with_point(4, length=None), "points[4].length", "a string needs its length"),
    ("length on a number", with_point(0, length=2), "points[0].length", "length is for strings"),
    (
        "string longer than one read",
        with_point(4, length=120),
        "points[4].length",
        "120 registers are more than one read of max_read 100",
    ),
    ("string with reordered words", with_point(4, order="CDAB"), "points[4]", "a string's bytes are ABCD"),
    ("bit above 15", with_point(5, bit=16), "points[5].bit", "less than or equal to 15"),
    ("bit below 0", with_point(5, bit=-1), "points[5].bit", "greater than or equal to 0"),
    ("bit point without bit", with_point(5, bit=None), "points[5].bit", "a bit point needs bit: 0..15"),
    ("bit on a number", with_point(0, bit=2), "points[0].bit", "bit is for type bit"),
    (
        "the same bit twice",
        with_point(6, bit=3),
        "points[6].bit",
        "bit 3 of register 8 is already points[5] (Alarm)",
    ),
    ("a bit point written", with_point(5, access="rw"), "points[5]", "a bit of a register is read-only"),
    ("order and word_order", with_point(8, order="ABCD"), "points[8].order", "not both"),
    (
        "unknown order",
        with_point(0, order="ABDC"),
        "points[0].order",
        "Input should be 'ABCD', 'CDAB', 'BADC'",
    ),
    ("order on a coil", with_point(9, order="DCBA"), "points[9]", "a bool has no byte or word order"),
    ("scale on a coil", with_point(9, scale=2), "points[9].scale", "a bool is not scaled"),
    ("coils overlap", with_point(10, table="coil"), "points[10]", "coils 0-0 overlap points[9] (Trip, 0-0)"),
    (
        "registers overlap in one table",
        with_point(1, address=1),
        "points[1]",
        "registers 1-4 overlap points[0] (W, 0-1)",
    ),
    (
        "max_read above the Modbus limit",
        lambda d: d.update(max_read=126),
        "max_read",
        "less than or equal to 125",
    ),
    ("max_read_bits above the limit", lambda d: d.update(max_read_bits=2001), "max_read_bits", "2000"),
    ("negative max_gap", lambda d: d.update(max_gap=-1), "max_gap", "greater than or equal to 0"),
    (
        "a role on a string",
        lambda d: d["roles"].update(voltage_v="Md"),
        "roles.voltage_v",
        "'Md' is a string",
    ),
]


@pytest.mark.parametrize(("case", "change", "key", "text"), ERRORS, ids=[c[0] for c in ERRORS])
def test_errors_name_the_file_and_key(case: str, change: Any, key: str, text: str) -> None:
    data = copy.deepcopy(example())
    change(data)
    with pytest.raises(ConfigError) as info:
        parse_profile(data, "t.yaml")
    err = info.value
    assert err.message.startswith(f"t.yaml: {key}: "), err.message
    assert text in err.message, err.message
    assert err.context == {"file": "t.yaml", "key": key}


RELAYS = {
    "name": "r",
    "kind": "relay",
    "description": "relays on coils",
    "points": [
        {"name": "R1", "table": "coil", "address": 0, "access": "rw"},
        {"name": "K1", "table": "discrete", "address": 0},
        {"name": "S", "address": 10, "type": "uint16", "access": "rw"},
    ],
    "roles": {"relay_1": "R1", "input_1": "K1"},
}


def test_relay_roles_on_coils_and_their_mistakes() -> None:
    parse_profile(RELAYS, "r.yaml")
    bad = copy.deepcopy(RELAYS)
    bad["roles"]["relay_1"] = "K1"  # a discrete input cannot be switched
    with pytest.raises(ConfigError, match=r"r.yaml: roles.relay_1: point 'K1' is read-only"):
        parse_profile(bad, "r.yaml")
    bad = copy.deepcopy(RELAYS)
    bad["points"][2].update(type="float32")
    bad["roles"]["relay_1"] = "S"
    with pytest.raises(ConfigError, match="a relay role needs a 16-bit integer point with scale 1, a coil"):
        parse_profile(bad, "r.yaml")


@pytest.mark.parametrize(
    ("name", "kind", "points"), [("sdm630", "meter", 60), ("waveshare-relay-8ch", "relay", 16)]
)
def test_device_builtins_are_valid_and_name_their_source(name: str, kind: str, points: int) -> None:
    path = PROFILE_DIR / f"{name}.yaml"
    text = path.read_text(encoding="utf-8")
    assert "Source:" in text.split("name:")[0]  # the header names the published register map
    profile = parse_profile(yaml.safe_load(text), str(path))
    assert profile.kind == kind and len(profile.points) == points


def test_the_sdm630_map() -> None:
    path = PROFILE_DIR / "sdm630.yaml"
    sdm = parse_profile(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))
    assert all(p.table == "input" and p.type == "float32" and p.order == "ABCD" for p in sdm.points)
    w, hz, imp, exp, v = (sdm.role(r) for r in ("power_kw", "frequency_hz", "energy_import_kwh",
                                                 "energy_export_kwh", "voltage_v"))  # fmt: skip
    assert w is not None and (w.address, w.scale, w.unit) == (0x0034, 0.001, "kW")  # 30053, W -> kW
    assert hz is not None and hz.address == 0x0046 and v is not None and v.address == 0x002A
    assert (
        imp is not None and exp is not None and (imp.address, exp.address, imp.scale) == (0x0048, 0x004A, 1)
    )
    assert [p.address for p in sdm.points[:3]] == [0x0000, 0x0002, 0x0004]  # phase voltages 30001..
    blocks = sdm.read_blocks()
    assert sdm.max_read == 80 and all(b.count <= 80 for b in blocks)  # Eastron: 40 parameters a request
    assert [(b.start, b.count) for b in blocks] == [(0x0000, 80), (0x00C8, 50), (0x014E, 30)]


def test_the_waveshare_map() -> None:
    path = PROFILE_DIR / "waveshare-relay-8ch.yaml"
    board = parse_profile(yaml.safe_load(path.read_text(encoding="utf-8")), str(path))
    relays = [board.role(f"relay_{i}") for i in range(1, 9)]
    assert [(p.table, p.address, p.writable) for p in relays if p] == [("coil", i, True) for i in range(8)]
    inputs = [board.role(f"input_{i}") for i in range(1, 9)]
    assert [(p.table, p.address, p.writable) for p in inputs if p] == [
        ("discrete", i, False) for i in range(8)
    ]
    assert [(b.table, b.start, b.count) for b in board.read_blocks()] == [("coil", 0, 8), ("discrete", 0, 8)]
