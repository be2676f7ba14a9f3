"""Unit tests for `meshems.core.policy` and the `set_policy` command.

`policy_problems` is what every replica runs on a `set_policy` command's values (through
`commands.decode`), so its answers must be exact and deterministic; `with_changes` builds
the new policy; `cluster.apply` merges the values onto the zone's previous policy.
"""

from __future__ import annotations

import math
from dataclasses import FrozenInstanceError
from typing import Any

import msgpack
import pytest

from meshems.core.cluster import ZoneState, apply
from meshems.core.commands import SCHEMA_VERSION, Command, Rejection, decode, encode
from meshems.core.policy import FIELDS, SHED_FORMAT, Policy, policy_problems, with_changes
from meshems.core.snapshot import restore, snapshot, state_hash

NUMBER_FIELDS = sorted(
    FIELDS
    - {
        "shed_order",
        "reserve_forecast",
        "mode",
        "import_price",
        "export_price",
        "soc_targets",
        "days_off",
        "import_price_series",
        "export_price_series",
    }
)

# --- policy_problems -----------------------------------------------------------------------

FLOOR_CEILING = "soc_floor_pct must be below soc_ceiling_pct (<= 100)"

PROBLEMS: list[tuple[str, dict[str, Any], list[str]]] = [
    ("empty", {}, []),
    ("every field at its default", Policy().to_dict(), []),
    ("a typical policy", {"import_limit_kw": 80, "export_limit_kw": 30.5, "shed_order": ["r1:1", "r2:3"]},
     []),
    ("zero limits and margins", {"import_limit_kw": 0, "margin_kw": 0.0, "restore_margin_kw": 0}, []),
    ("floor 0, ceiling 100", {"soc_floor_pct": 0, "soc_ceiling_pct": 100}, []),
    ("smallest cycle", {"cycle_s": 0.1}, []),
    ("empty shed order", {"shed_order": []}, []),
    ("shed order as a tuple", {"shed_order": ("r1:1",)}, []),
    ("load on a device id of 63 characters", {"shed_order": ["r" * 63 + ":1"]}, []),
    ("highest channel", {"shed_order": ["r1:256"]}, []),
    ("limits at their bounds", {"import_limit_kw": 1e9, "export_limit_kw": 1e9, "cycle_s": 60}, []),
    ("reserve_forecast false", {"reserve_forecast": False}, []),
    # unknown fields
    ("unknown field", {"peak_kw": 5}, ["peak_kw: unknown policy field"]),
    ("field name in capitals", {"IMPORT_LIMIT_KW": 5}, ["IMPORT_LIMIT_KW: unknown policy field"]),
    # bad types and values
    ("string number", {"import_limit_kw": "10"}, ["import_limit_kw: a finite number"]),
    ("bool number", {"margin_kw": True}, ["margin_kw: a finite number"]),
    ("nil number", {"cycle_s": None}, ["cycle_s: a finite number"]),
    ("list number", {"export_limit_kw": [1]}, ["export_limit_kw: a finite number"]),
    ("NaN", {"import_limit_kw": math.nan}, ["import_limit_kw: a finite number"]),
    ("inf", {"export_limit_kw": math.inf}, ["export_limit_kw: a finite number"]),
    ("-inf", {"restore_margin_kw": -math.inf}, ["restore_margin_kw: a finite number"]),
    ("negative limit", {"import_limit_kw": -1}, ["import_limit_kw: must not be negative"]),
    ("negative margin", {"margin_kw": -0.5}, ["margin_kw: must not be negative"]),
    ("negative floor", {"soc_floor_pct": -1}, ["soc_floor_pct: must not be negative"]),
    ("negative cycle", {"cycle_s": -1.0}, ["cycle_s: must not be negative"]),
    ("reserve_forecast as 1", {"reserve_forecast": 1}, ["reserve_forecast: true or false"]),
    ("reserve_forecast as a string", {"reserve_forecast": "yes"}, ["reserve_forecast: true or false"]),
    ("reserve_forecast nil", {"reserve_forecast": None}, ["reserve_forecast: true or false"]),
    # floor and ceiling
    ("floor equal to the default ceiling", {"soc_floor_pct": 95}, [FLOOR_CEILING]),
    ("floor above the ceiling", {"soc_floor_pct": 50, "soc_ceiling_pct": 40}, [FLOOR_CEILING]),
    ("floor equal to the ceiling", {"soc_floor_pct": 40, "soc_ceiling_pct": 40.0}, [FLOOR_CEILING]),
    ("ceiling below the default floor", {"soc_ceiling_pct": 10}, [FLOOR_CEILING]),
    ("ceiling above 100", {"soc_ceiling_pct": 100.5}, ["soc_ceiling_pct: at most 100"]),
    ("floor above 100", {"soc_floor_pct": 101}, ["soc_floor_pct: at most 100"]),
    # absurd values that used to be accepted (an attack probe sent them)
    ("a cycle of 1e9 s", {"cycle_s": 1e9}, ["cycle_s: at most 60"]),
    ("an import limit of 1e308", {"import_limit_kw": 1e308}, ["import_limit_kw: at most 1e+09"]),
    ("an export limit above 1e9", {"export_limit_kw": 1e9 + 1}, ["export_limit_kw: at most 1e+09"]),
    ("a margin of 1e7 kW", {"margin_kw": 1e7}, ["margin_kw: at most 1e+06"]),
    # cycle
    ("cycle below 0.1", {"cycle_s": 0.09}, ["cycle_s: at least 0.1"]),
    ("cycle zero", {"cycle_s": 0}, ["cycle_s: at least 0.1"]),
    ("floor/ceiling and cycle together", {"soc_ceiling_pct": 5, "cycle_s": 0},
     ["cycle_s: at least 0.1"]),  # a field problem first; the cross-field check waits
    # shed order
    ("shed order as a string", {"shed_order": "r1:1"}, [SHED_FORMAT]),
    ("shed order nil", {"shed_order": None}, [SHED_FORMAT]),
    ("shed order a map", {"shed_order": {"r1:1": 1}}, [SHED_FORMAT]),
    ("load id without a colon", {"shed_order": ["r1:1", "r2"]}, [SHED_FORMAT]),
    ("load id not a string", {"shed_order": [1]}, [SHED_FORMAT]),
    ("load on a device id of 64 characters", {"shed_order": ["r" * 64 + ":1"]}, [SHED_FORMAT]),
    ("channel 0", {"shed_order": ["r1:0"]}, [SHED_FORMAT]),
    ("channel 257", {"shed_order": ["r1:257"]}, [SHED_FORMAT]),
    ("channel not a number", {"shed_order": ["r1:one"]}, [SHED_FORMAT]),
    ("device id in capitals", {"shed_order": ["R1:1"]}, [SHED_FORMAT]),
    ("257 loads", {"shed_order": [f"r{i}:1" for i in range(257)]}, [SHED_FORMAT]),
    ("load listed twice", {"shed_order": ["r1:1", "r2:1", "r1:1"]}, ["shed_order: a load is listed twice"]),
    # several problems: each reported, in the order of the values; cross-field checks skipped
    (
        "several problems",
        {"x": 1, "margin_kw": -1, "shed_order": ["a"], "soc_floor_pct": 99},
        ["x: unknown policy field", "margin_kw: must not be negative", SHED_FORMAT],
    ),
]  # fmt: skip


@pytest.mark.parametrize(("case", "values", "want"), PROBLEMS, ids=[p[0] for p in PROBLEMS])
def test_policy_problems(case: str, values: dict[str, Any], want: list[str]) -> None:
    assert policy_problems(values) == want
    assert policy_problems(values) == want  # deterministic
    if not want:
        assert policy_problems(with_changes(Policy(), values).to_dict()) == []


def test_fields_are_the_policy_dataclass_fields() -> None:
    assert set(Policy().to_dict()) == FIELDS
    assert len(FIELDS) == 19


@pytest.mark.parametrize("name", NUMBER_FIELDS)
def test_every_number_field_rejects_a_bool_and_a_negative(name: str) -> None:
    assert policy_problems({name: False}) == [f"{name}: a finite number"]
    assert policy_problems({name: -1}) == [f"{name}: must not be negative"]


# --- Policy, with_changes ------------------------------------------------------------------


def test_policy_defaults_and_to_dict() -> None:
    pol = Policy(shed_order=("r1:1", "r2:2"))
    assert pol.to_dict() == {
        "import_limit_kw": 1e9,
        "export_limit_kw": 1e9,
        "soc_floor_pct": 10.0,
        "soc_ceiling_pct": 95.0,
        "shed_order": ["r1:1", "r2:2"],
        "cycle_s": 1.0,
        "margin_kw": 2.0,
        "restore_margin_kw": 5.0,
        "reserve_forecast": True,
        "mode": "peak",
        "import_price": [],
        "export_price": [],
        "soc_targets": [],
        "cycle_cost_per_kwh": 0.005,
        "plan_horizon_h": 24.0,
        "days_off": [],
        "price_series_start_s": 0.0,
        "import_price_series": [],
        "export_price_series": [],
    }
    with pytest.raises(FrozenInstanceError):
        pol.margin_kw = 1.0  # type: ignore[misc]


def test_with_changes_applies_values_as_floats_and_a_tuple() -> None:
    base = Policy(export_limit_kw=30.0)
    values = {"import_limit_kw": 80, "shed_order": ["r1:2", "r1:1"], "reserve_forecast": False}
    new = with_changes(base, values)
    assert new == Policy(
        import_limit_kw=80.0, export_limit_kw=30.0, shed_order=("r1:2", "r1:1"), reserve_forecast=False
    )
    assert type(new.import_limit_kw) is float
    assert type(new.shed_order) is tuple
    assert new.reserve_forecast is False  # a bool stays a bool
    # the inputs are unchanged
    assert base == Policy(export_limit_kw=30.0)
    assert values == {"import_limit_kw": 80, "shed_order": ["r1:2", "r1:1"], "reserve_forecast": False}


def test_with_changes_of_nothing_is_the_same_policy() -> None:
    pol = Policy(margin_kw=1.5, shed_order=("a:1",))
    assert with_changes(pol, {}) == pol


def test_with_changes_of_to_dict_round_trips() -> None:
    pol = Policy(import_limit_kw=12.5, soc_floor_pct=20, shed_order=("r:1", "r:2"), reserve_forecast=False)
    assert with_changes(Policy(), pol.to_dict()) == pol


# --- set_policy through apply --------------------------------------------------------------


def set_policy(rid: str, **values: Any) -> bytes:
    return encode("set_policy", rid, values=values)


def at(state: ZoneState, data: bytes, term: int = 1) -> tuple[ZoneState, Any]:
    return apply(state, data, term, state.last_index + 1)


def zone() -> ZoneState:
    """A zone with relay devices r, r1 and r2 and a battery (loads must exist to be shed)."""
    devices = [{"id": d, "kind": "relay", "min_kw": 0, "max_kw": 0} for d in ("r", "r1", "r2")]
    devices.append({"id": "bat", "kind": "battery", "min_kw": -5, "max_kw": 5})
    data = encode("declare_node", "d-n1", node_id="n1", raft="h:1", api="h:2", devices=devices)
    state, res = at(ZoneState(), data)
    assert res.ok, res
    return state


def test_decode_normalises_nothing_but_validates_the_values() -> None:
    cmd = decode(set_policy("p1", import_limit_kw=50, shed_order=["r1:1"]))
    assert isinstance(cmd, Command)
    assert cmd.fields == {"values": {"import_limit_kw": 50, "shed_order": ["r1:1"]}}


def test_the_first_set_policy_is_merged_onto_the_defaults() -> None:
    state, res = at(zone(), set_policy("p1", import_limit_kw=50, shed_order=["r1:1"]))
    assert (res.ok, res.code, res.message) == (True, "OK", "policy updated")
    assert state.policy == Policy(import_limit_kw=50.0, shed_order=("r1:1",))


def test_set_policy_is_merged_onto_the_previous_policy() -> None:
    state, _ = at(zone(), set_policy("p1", import_limit_kw=50, shed_order=["r1:1"], soc_floor_pct=20))
    state, res = at(state, set_policy("p2", export_limit_kw=30, shed_order=["r2:1", "r1:1"]))
    assert res.ok
    assert state.policy == Policy(
        import_limit_kw=50.0, export_limit_kw=30.0, soc_floor_pct=20.0, shed_order=("r2:1", "r1:1")
    )
    state, res = at(state, set_policy("p3", reserve_forecast=False))
    assert res.ok
    assert state.policy == Policy(
        import_limit_kw=50.0,
        export_limit_kw=30.0,
        soc_floor_pct=20.0,
        shed_order=("r2:1", "r1:1"),
        reserve_forecast=False,
    )


BAD_POLICIES = [
    ("negative limit", {"import_limit_kw": -5}),
    ("unknown field", {"peak_kw": 5}),
    ("floor above ceiling", {"soc_floor_pct": 60, "soc_ceiling_pct": 50}),
    ("cycle too short", {"cycle_s": 0.01}),
    ("duplicate load", {"shed_order": ["r1:1", "r1:1"]}),
    ("bad load id", {"shed_order": ["r1"]}),
    ("reserve_forecast not a bool", {"reserve_forecast": 0}),
    ("NaN", {"margin_kw": math.nan}),
]


@pytest.mark.parametrize(("case", "values"), BAD_POLICIES, ids=[b[0] for b in BAD_POLICIES])
def test_bad_policy_values_are_refused_with_e_policy_and_change_nothing(
    case: str, values: dict[str, Any]
) -> None:
    before, _ = at(zone(), set_policy("p1", import_limit_kw=50))
    after, res = apply(before, set_policy("bad", **values), 2, before.last_index + 1)
    assert (res.ok, res.code, res.term, res.index) == (False, "E_POLICY", 2, before.last_index + 1)
    assert res.message == "; ".join(policy_problems(values))
    assert after.policy == before.policy == Policy(import_limit_kw=50.0)
    assert (after.last_term, after.last_index) == (2, before.last_index + 1)


@pytest.mark.parametrize(
    "raw",
    [
        {},
        {"values": {}},
        {"values": None},
        {"values": [["import_limit_kw", 5]]},
        {"values": {"import_limit_kw": 5}, "extra": 1},
    ],
    ids=["no values", "empty values", "nil values", "values a list", "extra field"],
)
def test_malformed_set_policy_is_refused(raw: dict[str, Any]) -> None:
    data = msgpack.packb({"type": "set_policy", "v": SCHEMA_VERSION, "rid": "bad", **raw})
    decoded = decode(data)
    assert isinstance(decoded, Rejection) and decoded.code == "E_CMD_MALFORMED"
    after, res = at(ZoneState(), data)
    assert res.code == "E_CMD_MALFORMED"
    assert after.policy is None


@pytest.mark.parametrize(
    ("load", "why"),
    [("nope:1", "no such device"), ("bat:1", "a battery, not a relay"), ("r3:2", "a relay not declared yet")],
)
def test_a_shed_order_naming_an_unknown_load_is_refused(load: str, why: str) -> None:
    before = zone()
    after, res = at(before, set_policy("p", shed_order=["r1:1", load]))
    assert (res.ok, res.code) == (False, "E_POLICY"), why
    assert repr(load) in res.message and "r, r1, r2" in res.message
    assert after.policy is None


def test_a_retried_set_policy_is_not_applied_twice() -> None:
    state, _ = at(zone(), set_policy("p1", import_limit_kw=50))
    state, _ = at(state, set_policy("p2", import_limit_kw=60))
    after, res = at(state, set_policy("p1", import_limit_kw=50))
    assert res.duplicate and res.ok
    assert after.policy == Policy(import_limit_kw=60.0)


def test_snapshot_restore_keeps_the_policy() -> None:
    state, _ = at(zone(), set_policy("p1", import_limit_kw=50, shed_order=["r:2", "r:1"]))
    state, _ = at(state, set_policy("p2", reserve_forecast=False, cycle_s=2))
    back = restore(snapshot(state))
    assert back == state
    assert back.policy == Policy(
        import_limit_kw=50.0, shed_order=("r:2", "r:1"), reserve_forecast=False, cycle_s=2.0
    )
    assert state_hash(back) == state_hash(state)


# Found by this suite and fixed: a regression test.
def test_floor_and_ceiling_are_checked_against_the_previous_policy() -> None:
    state, res = at(zone(), set_policy("p1", soc_ceiling_pct=50))
    assert res.ok
    state, res = at(state, set_policy("p2", soc_floor_pct=60))
    assert state.policy is not None
    assert state.policy.soc_floor_pct < state.policy.soc_ceiling_pct
    assert (res.ok, res.code) == (False, "E_POLICY")


PLAN_PROBLEMS = [
    ("a mode", {"mode": "tariff"}, []),
    ("an unknown mode", {"mode": "cheapest"},
     ["mode: one of peak, tariff, self_consumption, reactive, not 'cheapest'"]),
    ("hourly prices", {"import_price": [0.3] * 24, "export_price": [0.08] * 96}, []),
    ("a day needs 24 or 96 prices", {"import_price": [0.3] * 23},
     ["import_price: 23 prices; a day needs 24 (hourly) or 96 (quarter-hour)"]),
    ("a price is a number", {"export_price": [0.1] * 23 + ["x"]},
     ["export_price[23]: a finite price per kWh (|price| <= 10000)"]),
    ("soc targets", {"soc_targets": [{"at": "07:00", "pct": 80}, {"at": "23:45", "pct": 30}]}, []),
    ("a target's time is HH:MM", {"soc_targets": [{"at": "7:00", "pct": 80}]},
     ['soc_targets[0]: a list of at most 8 {at: "HH:MM" (UTC), pct: 0-100}']),
    ("a target's SoC is a percentage",
     {"soc_targets": [{"at": "24:00", "pct": 80}, {"at": "07:00", "pct": 101}]},
     ['soc_targets[0]: a list of at most 8 {at: "HH:MM" (UTC), pct: 0-100}']),
    ("a horizon of at most 36 h", {"plan_horizon_h": 48}, ["plan_horizon_h: at most 36"]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "values", "want"), PLAN_PROBLEMS, ids=[p[0] for p in PLAN_PROBLEMS])
def test_plan_fields(case: str, values: dict[str, Any], want: list[str]) -> None:
    assert policy_problems(values) == want
    if not want:  # valid fields survive the round trip through to_dict (snapshots, msgpack)
        policy = with_changes(Policy(), values)
        assert with_changes(Policy(), policy.to_dict()) == policy
