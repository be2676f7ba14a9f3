#!/usr/bin/env python3
"""Scrape cost of GET /metrics: the time to render it and a node's CPU under Prometheus.

1. Render: the node's collector over a synthetic node (a real poller, never started, with
   100, 500 and 2,000 devices on 10 buses, every 4th a battery), median and p99 of many
   renders; the baseline in the same run is the JSON body of `GET /v1/devices` for the same
   node (what `meshems devices -o json` costs). Target: <= 50 ms at 2,000 devices.
2. CPU: a real 3-node cluster on 127.0.0.1 with simulated devices; one follower's CPU (% of a
   core, from /proc) over a window without scraping, with Debian's Prometheus scraping every
   node every 5 s over HTTPS with a read token, and without again. Target: <= 1 % of a core
   more. Never asserts on time.

    python scripts/bench/metrics_bench.py [--quick] [--json] [--window S] [--settle-s S]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from benchlib import pct  # noqa: E402

from tests.node.metrics_fixtures import synthetic_node  # noqa: E402

SIZES = (100, 500, 2000)
SCRAPE_S = 5


def timed(fn: Any, n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def measure_render(devices: int, n: int) -> dict[str, Any]:
    node = synthetic_node(devices, 10)
    for rt in list(node.field.poller.devices.values())[::10]:  # a few devices with errors
        rt.counters["timeouts"] += 3
    body = node.metrics.render()
    node.metrics.render()  # warm
    render = timed(node.metrics.render, n)
    devices_json = timed(lambda: json.dumps({"devices": node.field.snapshot()}, default=str).encode(), n)
    return {
        "devices": devices,
        "render_p50_ms": statistics.median(render),
        "render_p99_ms": pct(render, 99),
        "devices_json_p50_ms": statistics.median(devices_json),
        "ratio": statistics.median(render) / statistics.median(devices_json),
        "bytes": len(body),
        "samples": sum(1 for line in body.splitlines() if line and not line.startswith(b"#")),
    }


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_pct(pid: int, window_s: float) -> float:
    c0, t0 = cpu_s(pid), time.monotonic()
    time.sleep(window_s)
    return 100 * (cpu_s(pid) - c0) / (time.monotonic() - t0)


def measure_cpu(window_s: float, settle_s: float | None = None) -> dict[str, Any]:
    from meshems.adapters.config_file import load_config
    from meshems.adapters.secret import init_secret, read_secret
    from meshems.ops.http_exchange import exchange
    from meshems.ops.supervisor import LocalCluster
    from tests.conftest import write_config
    from tests.integration.test_prometheus import Prometheus

    folder = Path(tempfile.mkdtemp(prefix="metrics-bench-"))
    prom: Prometheus | None = None
    try:
        path = write_config(folder, wired=True)
        cfg = load_config(path)
        init_secret(cfg.secret_path)
        c = LocalCluster(cfg, str(path), read_secret(cfg.secret_path), folder / "logs")
        try:
            sims = threading.Thread(target=c.start_sims)  # beside the nodes (they retry their buses)
            sims.start()
            c.start_all()
            sims.join()
            leader = c.wait_leader()
            res = subprocess.run(
                [sys.executable, "-m", "meshems", "token", "create", "--config", str(path), "--role", "read",
                 "--name", "prom", "-o", "json"], capture_output=True, text=True, timeout=60, check=True,
            )  # fmt: skip
            token = json.loads(res.stdout)["token"]
            follower = next(n.id for n in cfg.nodes if n.initial and n.id != leader)
            pid = c.procs[follower].pid
            time.sleep(min(10.0, window_s / 2) if settle_s is None else settle_s)  # settle after start-up
            before = cpu_pct(pid, window_s)
            assert shutil.which("prometheus"), "prometheus missing (Debian prometheus; scripts/setup)"
            prom = Prometheus(c, token, folder, scrape_s=SCRAPE_S)
            time.sleep(SCRAPE_S + 2)  # Prometheus up and its first scrape done
            scraped = cpu_pct(pid, window_s)
            prom.close()
            prom = None
            after = cpu_pct(pid, window_s)
            node = cfg.node(follower)
            auth = {"Authorization": f"Bearer {token}"}
            status, body = exchange(node.bind_host, node.api_port, "GET", "/metrics", b"", auth, 2.0,
                                    c.client.ssl_context)  # fmt: skip
            assert status == 200, (status, body[:200])
        finally:
            for node_id in list(c.procs):  # all at once: their shutdowns overlap
                c.signal(node_id, signal.SIGTERM)
            c.stop_all()
    finally:
        if prom is not None:
            prom.close()
        shutil.rmtree(folder, ignore_errors=True)
    baseline = (before + after) / 2
    return {
        "window_s": window_s,
        "cpu_without_pct": baseline,
        "cpu_without_first_pct": before,
        "cpu_without_again_pct": after,
        "cpu_scraped_pct": scraped,
        "cpu_extra_pct": scraped - baseline,
        "scrape_interval_s": SCRAPE_S,
        "metrics_bytes": len(body),
    }


def main() -> int:
    global SCRAPE_S
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer renders and a shorter CPU window")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--window", type=float, help="CPU window in seconds (default 60; --quick 10)")
    ap.add_argument(
        "--scrape-s", type=float, default=SCRAPE_S, help="Prometheus' scrape interval (default 5)"
    )
    ap.add_argument("--renders", type=int, help="renders timed per size (default 200; --quick 20)")
    ap.add_argument(
        "--settle-s",
        type=float,
        help="seconds from the cluster's start to the first window (default window / 2, <= 10)",
    )
    args = ap.parse_args()
    SCRAPE_S = args.scrape_s
    n, window_s = (20, 10.0) if args.quick else (200, 60.0)
    n = args.renders or n
    window_s = args.window or window_s
    print("bench: rendering /metrics...", file=sys.stderr)
    render = [measure_render(d, n) for d in SIZES]
    print(
        f"bench: node CPU, {window_s:.0f} s windows without / with Prometheus / without...", file=sys.stderr
    )
    cpu = measure_cpu(window_s, args.settle_s)
    out = {
        "render": render,
        "render_2000_p50_ms": render[-1]["render_p50_ms"],
        "cpu": cpu,
        "cpu_extra_pct": cpu["cpu_extra_pct"],
    }
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{'devices':>8}{'render p50 ms':>15}{'p99 ms':>9}{'/v1/devices JSON p50 ms':>25}{'ratio':>8}"
          f"{'samples':>9}{'KiB':>7}")  # fmt: skip
    for r in render:
        print(f"{r['devices']:8d}{r['render_p50_ms']:15.2f}{r['render_p99_ms']:9.2f}{r['devices_json_p50_ms']:25.2f}"
              f"{r['ratio']:7.2f}x{r['samples']:9d}{r['bytes'] / 1024:7.0f}")  # fmt: skip
    print(f"({n} renders per size; target <= 50 ms at 2,000 devices)")
    print()
    print(f"{'node CPU (% of a core)':34}{'':>8}")
    print(f"{'without Prometheus (mean of 2)':34}{cpu['cpu_without_pct']:8.2f}")
    print(f"{f'scraped every {SCRAPE_S} s':34}{cpu['cpu_scraped_pct']:8.2f}")
    print(f"{'extra':34}{cpu['cpu_extra_pct']:+8.2f}")
    first, again = cpu["cpu_without_first_pct"], cpu["cpu_without_again_pct"]
    print(f"(one follower of a wired 3-node cluster, {window_s:.0f} s windows: without {first:.2f} "
          f"and {again:.2f}; target <= 1 % more)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
