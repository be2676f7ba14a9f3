"""The planner's replicated records: node forecasts and the zone plan through `apply`, their
validation on every replica, and their round trip through snapshots."""

from __future__ import annotations

from typing import Any

import pytest

from meshems.core.cluster import ZoneState, apply
from meshems.core.commands import INTERNAL_TYPES, decode, encode
from meshems.core.plan_records import (
    MAX_PLAN_BATTERIES,
    MAX_STEPS,
    PlanBattery,
    PlanRecord,
    pack,
    pack16,
    plan_dict,
)
from meshems.core.snapshot import restore, snapshot, state_hash

T0 = 1_790_000_100.0 // 900 * 900  # a quarter-hour boundary


def run(state: ZoneState, *entries: bytes) -> tuple[ZoneState, list]:
    out = []
    for data in entries:
        state, res = apply(state, data, 3, state.last_index + 1)
        out.append(res)
    return state, out


def declared() -> ZoneState:
    devs = [{"id": "b1", "kind": "battery", "min_kw": -10.0, "max_kw": 10.0},
            {"id": "m1", "kind": "meter", "min_kw": 0.0, "max_kw": 0.0}]  # fmt: skip
    state, res = run(
        ZoneState(), encode("declare_node", "d", node_id="n1", raft="a:1", api="a:2", devices=devs)
    )
    assert res[0].ok
    return state


def forecast(start: float, rid: str, kw: list[float] | None = None, node: str = "n1") -> bytes:
    kw = [5.0, 6.5, 7.25] if kw is None else kw
    return encode(
        "node_forecast", rid, node_id=node, start_s=start, step_s=900.0, kw=pack(kw), basis="model v2"
    )


def plan_fields(version: int = 1, **over: Any) -> dict[str, Any]:
    battery = PlanBattery("b1", (1.0, -0.5), (50.0, 49.0, 49.5))
    record = PlanRecord(version, T0, 900.0, "peak", "optimal", (3.0, 2.5), (battery,), 3.0, 5.5,
                        "peak 3.0 kW", "n1: model v2", T0 + 2.0, 0, 0)  # fmt: skip
    return {**record.to_fields(), **over}


def test_a_node_forecast_replaces_the_previous_one_never_by_an_older_one() -> None:
    state, res = run(declared(), forecast(T0, "f1"), forecast(T0 + 900, "f2"), forecast(T0, "f3"))
    assert [r.code for r in res] == ["OK", "OK", "E_STALE_FORECAST"]
    rec = state.node_forecasts["n1"]
    assert (rec.start_s, rec.kw, rec.basis, rec.term) == (T0 + 900, (5.0, 6.5, 7.25), "model v2", 3)
    assert rec.at(T0 + 900) == 5.0 and rec.at(T0 + 900 * 3 + 1) == 7.25 and rec.at(T0 + 900 * 4) is None


def test_a_stranger_s_forecast_is_refused() -> None:
    _, res = run(declared(), forecast(T0, "f1", node="zz"))
    assert res[0].code == "E_UNKNOWN_NODE"


BAD_FORECASTS = [
    ("nan", dict(kw=pack([1.0, float("nan")]))),
    ("a list, not bytes", dict(kw=[1.0, 2.0])),
    ("not whole float32", dict(kw=b"\x00\x00\x00")),
    ("too long", dict(kw=pack([1.0] * (MAX_STEPS + 2)))),
    ("odd step", dict(step_s=600.0)),
    ("before the epoch", dict(start_s=-5.0)),
]  # fmt: skip


@pytest.mark.parametrize(("case", "over"), BAD_FORECASTS, ids=[b[0] for b in BAD_FORECASTS])
def test_malformed_forecasts_are_refused_the_same_way_everywhere(case: str, over: dict) -> None:
    fields = {"node_id": "n1", "start_s": T0, "step_s": 900.0, "kw": pack([1.0]), "basis": "x", **over}
    data = encode("node_forecast", "bad", **fields)
    first, second = decode(data), decode(data)
    assert first == second and getattr(first, "code", None) == "E_CMD_MALFORMED"


def test_a_plan_is_committed_with_a_rising_version_and_survives_a_snapshot() -> None:
    entries = [encode("plan", rid, **plan_fields(v)) for rid, v in (("p1", 1), ("p0", 1), ("p2", 2))]
    state, res = run(declared(), *entries)
    assert [r.code for r in res] == ["OK", "E_STALE_PLAN", "OK"]
    p = state.plan
    assert p is not None and p.version == 2 and p.import_kw == (3.0, 2.5)
    assert p.battery("b1") == PlanBattery("b1", (1.0, -0.5), (50.0, 49.0, 49.5))
    assert p.step_at(T0) == 0 and p.step_at(T0 + 1799) == 1 and p.step_at(T0 + 1800) is None
    state, _ = run(state, forecast(T0, "f1"))
    again = restore(snapshot(state))
    assert again == state and state_hash(again) == state_hash(state)
    assert plan_dict(again.plan)["batteries"][0]["soc_pct"] == [50.0, 49.0, 49.5]  # type: ignore[arg-type]


def test_a_plan_may_not_name_a_stranger_or_move_a_battery_past_its_limits() -> None:
    stranger = plan_fields(batteries=[row([0.0, 0.0], [1.0] * 3, "m1")])
    too_much = plan_fields(batteries=[row([11.0, 0.0], [1.0] * 3)])
    state, res = run(declared(), encode("plan", "a", **stranger), encode("plan", "b", **too_much))
    assert [r.code for r in res] == ["E_UNKNOWN_DEVICE", "E_LIMIT"] and state.plan is None


def row(kw: list[float], soc: list[float], id_: str = "b1") -> dict[str, Any]:
    return {"id": id_, "kw": pack(kw), "soc": pack16(soc)}


BAD_PLANS = [
    ("series of different lengths", dict(batteries=[row([1.0], [1.0] * 3)])),
    ("soc needs one more value", dict(batteries=[row([1.0, 1.0], [1.0, 1.0])])),
    ("soc is float16", dict(batteries=[{"id": "b1", "kw": pack([1.0, 1.0]), "soc": pack([1.0] * 3)}])),
    ("a battery twice", dict(batteries=[row([0.0, 0.0], [1.0] * 3)] * 2)),
    ("too many batteries", dict(batteries=[row([0.0, 0.0], [1.0] * 3, f"b{i}")
                                           for i in range(MAX_PLAN_BATTERIES + 1)])),
    ("unknown mode", dict(mode="cheapest")),
    ("unknown status", dict(status="great")),
    ("version 0", dict(version=0)),
    ("infinite peak", dict(peak_kw=float("inf"))),
]  # fmt: skip


@pytest.mark.parametrize(("case", "over"), BAD_PLANS, ids=[b[0] for b in BAD_PLANS])
def test_malformed_plans_are_refused(case: str, over: dict) -> None:
    result = decode(encode("plan", "bad", **plan_fields(**over)))
    assert getattr(result, "code", None) == "E_CMD_MALFORMED", result


def test_a_plan_of_50_batteries_over_36_hours_fits_one_entry() -> None:
    steps = MAX_STEPS
    batteries = [row([1.0] * steps, [50.0] * (steps + 1), f"b{i}") for i in range(MAX_PLAN_BATTERIES)]
    data = encode("plan", "big", **plan_fields(import_kw=pack([1.0] * steps), batteries=batteries))
    assert getattr(decode(data), "type", None) == "plan"


def test_operators_cannot_send_either() -> None:
    assert {"plan", "node_forecast"} <= INTERNAL_TYPES
