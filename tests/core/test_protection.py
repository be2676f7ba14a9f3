"""Unit tests for `meshems.core.protection.protect`: fast local protection at one node.

One meter reading and the node's loads go in, the trips come out, in order: over the import
maximum, closed loads are shed in the policy's shed order, then the unlisted ones in id
order, until the excess is covered; over the export maximum, every PV is curtailed to 0 %;
inside the limits nothing happens.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pytest

from meshems.core.protection import LoadState, Trip, protect


def on(id_: str, kw: float) -> LoadState:
    return LoadState(id_, True, kw)


def off(id_: str, kw: float = 0.0) -> LoadState:
    return LoadState(id_, False, kw)


@dataclass(frozen=True)
class Case:
    name: str
    grid_kw: float
    loads: Sequence[LoadState]
    shed_order: Sequence[str]
    want: Sequence[tuple[str, str]]  # (kind, target) in order
    pv_ids: Sequence[str] = ("pv1", "pv2")
    max_import_kw: float = 100.0
    max_export_kw: float = 50.0


LOADS = [on("r1:1", 10.0), on("r1:2", 20.0), on("r2:1", 5.0), on("r1:3", 8.0)]

CASES = [
    # inside the limits
    Case("inside the limits: nothing", 60.0, LOADS, ["r1:1"], []),
    Case("exactly at the import maximum: nothing", 100.0, LOADS, ["r1:1"], []),
    Case("exactly at the export maximum: nothing", -50.0, LOADS, [], []),
    Case("zero: nothing", 0.0, [], [], []),
    # over the import maximum
    Case("just over import: the first listed load", 100.5, LOADS, ["r1:2", "r1:1"], [("shed", "r1:2")]),
    Case(
        "shed in the shed order until the excess is covered",
        125.0,  # excess 25: r1:1 (10) then r2:1 (5) then r1:2 (20) -> covered
        LOADS,
        ["r1:1", "r2:1", "r1:2", "r1:3"],
        [("shed", "r1:1"), ("shed", "r2:1"), ("shed", "r1:2")],
    ),
    Case(
        "a load that exactly covers the excess stops shedding",
        110.0,
        LOADS,
        ["r1:1", "r1:2"],
        [("shed", "r1:1")],
    ),
    Case(
        "listed loads first, then the unlisted in id order",
        135.0,  # excess 35: r1:2 (20), then r1:1 (10), r1:3 (8) -> covered; r2:1 stays
        [on("r2:1", 5.0), on("r1:3", 8.0), on("r1:2", 20.0), on("r1:1", 10.0)],
        ["r1:2"],
        [("shed", "r1:2"), ("shed", "r1:1"), ("shed", "r1:3")],
    ),
    Case(
        "no shed order: id order",
        101.0,
        [on("b:1", 3.0), on("a:2", 1.0), on("a:10", 0.5)],
        [],
        [("shed", "a:10"), ("shed", "a:2")],  # string order: "a:10" < "a:2"
    ),
    Case(
        "open loads are skipped",
        115.0,
        [off("r1:1", 30.0), on("r1:2", 20.0), off("r2:1"), on("r2:2", 4.0)],
        ["r1:1", "r2:1", "r2:2", "r1:2"],
        [("shed", "r2:2"), ("shed", "r1:2")],
    ),
    Case(
        "unknown ids in the shed order are skipped",
        101.0,
        LOADS,
        ["ghost:1", "r1:3"],
        [("shed", "r1:3")],
    ),
    Case(
        "a load of unknown or negative power counts as 0 and shedding goes on",
        105.0,
        [on("r1:1", 0.0), on("r1:2", -3.0), on("r1:3", 6.0), on("r1:4", 6.0)],
        ["r1:1", "r1:2", "r1:3", "r1:4"],
        [("shed", "r1:1"), ("shed", "r1:2"), ("shed", "r1:3")],
    ),
    Case(
        "not enough load: shed everything that is closed",
        500.0,
        [on("r1:1", 10.0), off("r1:2", 10.0), on("r2:1", 5.0)],
        ["r2:1"],
        [("shed", "r2:1"), ("shed", "r1:1")],
    ),
    Case("import over the maximum never curtails PV", 200.0, [], [], []),
    # over the export maximum
    Case(
        "over-export curtails every PV to 0 %",
        -50.5,
        LOADS,
        ["r1:1"],
        [("curtail", "pv1"), ("curtail", "pv2")],
    ),
    Case("over-export without PV: nothing", -80.0, LOADS, [], [], pv_ids=()),
    Case("over-export sheds no load", -80.0, LOADS, ["r1:1"], [("curtail", "pv9")], pv_ids=["pv9"]),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_protect(case: Case) -> None:
    trips = protect(
        case.grid_kw, case.max_import_kw, case.max_export_kw, case.loads, case.shed_order, case.pv_ids
    )
    assert isinstance(trips, tuple)
    assert [(t.kind, t.target) for t in trips] == list(case.want)
    for t in trips:
        assert t.reason
        if t.kind == "curtail":
            assert t.pv_limit_pct == 0.0


def test_trip_reasons_name_the_reading_and_the_limit() -> None:
    (shed,) = protect(101.0, 100.0, 50.0, [on("r1:1", 5.0)], [])
    assert shed == Trip("shed", "r1:1", "import 101.0 kW over 100.0 kW")
    curtail = protect(-60.0, 100.0, 50.0, [], [], ["pv1"])
    assert curtail == (Trip("curtail", "pv1", "export 60.0 kW over 50.0 kW", 0.0),)


def test_protect_does_not_change_its_inputs() -> None:
    loads = [on("r1:1", 10.0), on("r1:2", 20.0)]
    order = ["r1:2"]
    protect(150.0, 100.0, 50.0, loads, order, ["pv1"])
    assert loads == [on("r1:1", 10.0), on("r1:2", 20.0)]
    assert order == ["r1:2"]
