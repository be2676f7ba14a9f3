"""Shadow comparison and the health verdict of a payload's shadow phase; what a payload sees of
the process image and policy (the example controller run on it, in this process)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from meshems.core.dispatch import dispatch
from meshems.core.payload_cycle import image_doc, policy_doc
from meshems.core.payload_decisions import check_decisions
from meshems.core.payload_shadow import DeviceDiff, ShadowCycle, compare, percentile, shadow_cycle, verdict
from meshems.core.policy import Policy
from meshems.core.process_image import DeviceInfo, image_from_readings
from meshems.core.zone_records import Device

EXAMPLE = Path(__file__).resolve().parents[2] / "cluster-configs/payloads/peak-guard/controller.py"
DEVICES = {"b1": Device("b1", "battery", "n1", -50.0, 50.0), "b2": Device("b2", "battery", "n2", -20.0, 20.0)}


def test_compare_pairs_the_setpoints_of_both_sides_per_device() -> None:
    builtin = [("b1", 10.0, "import_limit", "peak"), ("pv", 30.0, "pv", "")]
    payload = [("b1", 12.5, "why"), ("b2", -4.0, "why")]
    diffs = compare(builtin, payload)
    assert diffs == (DeviceDiff("b1", 10.0, 12.5), DeviceDiff("b2", None, -4.0), DeviceDiff("pv", 30.0, None))
    assert [d.diff_kw for d in diffs] == [2.5, -4.0, -30.0]
    assert compare([], []) == ()


def test_a_shadow_cycle_records_refusals_and_the_largest_difference() -> None:
    checked = check_decisions([{"device_id": "b1", "kw": 15.0}, {"device_id": "b2", "kw": 99.0}], DEVICES)
    c = shadow_cycle("ok", 0.4, checked, [("b1", 10.0, "c", "r")])
    assert c.refused == 1 and c.max_diff_kw == 5.0 and c.message.startswith("E_LIMIT: decision 1")
    assert shadow_cycle("timeout", 50.2, None, message="late") == ShadowCycle("timeout", 50.2, 0, 0.0, "late")
    with pytest.raises(ValueError, match="not a shadow cycle status"):
        shadow_cycle("fine", 1.0, None)


OK = ShadowCycle("ok", 0.3)


@pytest.mark.parametrize(
    ("cycles", "state", "words"),
    [
        ([OK] * 29, "pending", ""),
        ([OK] * 30, "healthy", ""),
        ([OK] * 40, "healthy", ""),
        (
            [OK, ShadowCycle("crash", 0.2, message="E_PAYLOAD_CRASH: killed by SIGSEGV")],
            "failed",
            "1 crashes",
        ),
        ([ShadowCycle("error", 0.2, message="ZeroDivisionError")] + [OK] * 30, "failed", "1 errors: Zero"),
        ([ShadowCycle("start_failed", 0.0, message="no decide")], "failed", "1 start_failures"),
        ([OK] * 30 + [ShadowCycle("timeout", 50.0)], "failed", "1 cycles past the 50 ms budget"),
        ([OK] * 10 + [ShadowCycle("ok", 50.5)], "failed", "answered past the 50 ms budget"),
        ([OK, ShadowCycle("ok", 0.3, refused=2, message="E_LIMIT: b2")], "failed", "2 decisions refused"),
    ],
)
def test_the_verdict_fails_at_the_first_broken_rule_and_is_healthy_after_n_clean_cycles(
    cycles: list[ShadowCycle], state: str, words: str
) -> None:
    v = verdict(cycles, want_cycles=30, budget_ms=50)
    assert v.state == state, v.reasons
    assert v.healthy is (state == "healthy")
    assert words in " | ".join(v.reasons)
    assert v.cycles == len(cycles)
    json.dumps(v.to_dict())  # status shows it as JSON


def test_timeouts_up_to_the_manifest_allowance_keep_a_phase_healthy() -> None:
    cycles = [OK] * 29 + [ShadowCycle("timeout", 51.0)]
    assert verdict(cycles, 30, 50, max_timeouts=1).state == "healthy"
    assert verdict(cycles, 30, 50, max_timeouts=0).state == "failed"


def test_the_verdict_figures() -> None:
    cycles = [ShadowCycle("ok", float(ms), max_diff_kw=ms / 10) for ms in range(1, 101)]
    v = verdict(cycles, 100, 1000)
    assert (v.ok, v.p50_ms, v.p99_ms, v.max_diff_kw) == (100, 51.0, 99.0, 10.0)
    assert percentile([], 99) == 0.0


def _example():
    spec = importlib.util.spec_from_file_location("peak_guard_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_image_and_policy_docs_carry_what_the_example_controller_reads() -> None:
    infos = [DeviceInfo("m1", "meter", "n1", 0, 0), DeviceInfo("b1", "battery", "n1", -50, 50),
             DeviceInfo("b2", "battery", "n2", -20, 20), DeviceInfo("m2", "meter", "n2", 0, 0)]  # fmt: skip
    readings = {"m1": ("ok", {"power_kw": 30.0}), "m2": ("ok", {"power_kw": 20.0}),
                "b1": ("ok", {"power_kw": 0.0, "soc_pct": 60.0}),
                "b2": ("ok", {"power_kw": 0.0, "soc_pct": 80.0})}  # fmt: skip
    image = image_from_readings(infos, readings)
    policy = Policy(import_limit_kw=40.0, shed_order=("r1:1",), soc_targets=(("06:00", 50.0),))
    doc, pol = image_doc(image, DEVICES), policy_doc(policy)
    assert json.loads(json.dumps(doc)) == doc and json.loads(json.dumps(pol)) == pol  # JSON types only
    assert doc["grid_kw"] == 50.0 and doc["complete"] is True
    assert [b["id"] for b in doc["batteries"]] == ["b1", "b2"] and doc["batteries"][1][
        "max_discharge_kw"
    ] == 20.0
    assert doc["devices"][0] == {
        "id": "b1",
        "kind": "battery",
        "owner": "n1",
        "min_kw": -50.0,
        "max_kw": 50.0,
    }
    assert pol["import_limit_kw"] == 40.0 and pol["shed_order"] == ["r1:1"]
    assert pol["soc_targets"] == [{"at": "06:00", "pct": 50.0}]
    answer = _example().decide(doc, pol)
    rows = [{"device_id": d, "kw": kw, "reason": answer["reason"]} for d, kw in answer["setpoints"].items()]
    checked = check_decisions(rows, DEVICES)
    assert checked.ok and sum(kw for _, kw, _ in checked.accepted) == pytest.approx(10.0)
    builtin = dispatch(image, policy).setpoints
    diffs = compare(builtin, checked.accepted)
    assert {d.device_id for d in diffs} >= {"b1", "b2"}
