"""Smoke test of scripts/bench/metrics_bench.py: it runs, prints the keys issue 14 names
(render time at 2,000 devices, the CPU a node spends more under scraping) and its /metrics
body came through Prometheus' way in (HTTPS, read token). Figures are not judged here."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.skipif(shutil.which("prometheus") is None, reason="prometheus missing (Debian prometheus)")
def test_metrics_bench_quick_json() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts/bench/metrics_bench.py"),
            "--quick",
            "--json",
            "--window",
            "1",
            "--settle-s",
            "0",
            "--scrape-s",
            "1",
            "--renders",
            "5",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"render_2000_p50_ms", "cpu_extra_pct", "render", "cpu"} <= set(result)
    assert [r["devices"] for r in result["render"]] == [100, 500, 2000]
    assert result["render"][-1]["samples"] > 2 * 2000  # up and state per device, at least
    assert result["cpu"]["metrics_bytes"] > 0
