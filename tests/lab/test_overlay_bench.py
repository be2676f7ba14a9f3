"""Smoke test of scripts/bench/overlay_bench.py (root): it runs loopback and the wireguard-go
lab in one go (raft.fsync on only: --quick) and prints the keys the issue names; its own
error counters are zero. Figures are not judged here (they live in the benchmark's table)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.lab, pytest.mark.slow]


def test_overlay_bench_quick_json() -> None:
    out = subprocess.run(
        [sys.executable, str(ROOT / "scripts/bench/overlay_bench.py"), "--quick", "--json", "--trials", "1",
         "--seq", "50", "--pipe", "200"],
        capture_output=True, text=True, timeout=400,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"overlay_rtt_us", "overlay_commit_p99_ms", "overlay_failover_max_ms"} <= set(result)
    # --quick measures raft.fsync on only (a full run: on and off, the cluster restarted between)
    assert result["fsync"] == "on"
    assert result["overlay_commit_p99_ms_fsync"] == result["overlay_commit_p99_ms"] > 0
    assert "overlay_commit_p99_ms_nofsync" not in result
    assert result["errors"] == 0 and result["failover_missing"] == 0
    # the overlay is a real tunnel: slower than loopback, and measured at all
    assert result["overlay_rtt_us"] > result["loopback_rtt_us"] > 0
    assert result["overlay_failover_max_ms"] is not None
