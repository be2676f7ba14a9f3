"""Smoke tests of the benchmarks that start no process but their own and judge no timing
(the forecast's skill, the control quality on realistic days): they run with the unit tests,
on the pytest workers, instead of in the serial part with the ones that start clusters."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_forecast_skill_quick_json() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench/forecast_skill.py"), "--quick", "--json"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"forecast_mae_vs_seasonal_naive", "fit_ms", "predict_ms"} <= set(result)
    assert 0 < result["forecast_mae_vs_seasonal_naive"] < 1.0  # beats same-time-last-week


def test_control_bench_quick_json() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench/control_bench.py"), "--quick", "--json", "--no-cluster"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for key in (
        "dispatch_ms_1000",
        "protection_p99_ms",
        "peak_reduction_vs_optimum",
        "peak_reduction_unreachable_limit",
        "tariff_cost_vs_optimum",
        "plan_ms",
        "forecast_mae_vs_seasonal_naive",
    ):
        assert isinstance(result[key], int | float), key
    for row in result["days_table"]:
        # the optimum is the floor; the node's plan never lifts the peak above no control's
        assert row["opt_peak_kw"] <= row["peak_kw"] + 1e-6 <= row["none_peak_kw"] + 2e-6, row
        assert row["tariff_cost"] >= row["opt_cost"] - 0.01, row  # perfect foresight is cheapest
        assert row["plans"] >= 96  # one plan per quarter-hour at least


def test_ingest_store_bench_json() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench/ingest_store_bench.py"), "--records", "2000",
         "--zones", "100", "--runs", "1", "--json"], capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    # the benchmark's own check: every record stored once, each zone's watermark at its last seq
    assert result["stored_once"] is True and result["records"] == 2000
    assert result["store_msgs_s"] > 0 and result["store_cpu_us_per_msg"] > 0
