#!/usr/bin/env python3
"""API benchmark: the node API over HTTPS (TLS 1.3, the zone CA, an operator certificate) vs
the same API over plain HTTP as it was before (the code of `--baseline`, default the commit
before HTTPS, run from a git worktree), on a real 3-node cluster on 127.0.0.1 each.

Per mode: `GET /v1/status` and `POST /v1/propose` (a setpoint commit) on one kept-alive
connection (latency p50/p99, requests/s), and new connections per second (HTTPS: a full
TLS 1.3 handshake each, with a client certificate). Ratios HTTPS / plain; the target is
<= 1.5x for kept-alive requests. Never asserts on time.

    python scripts/bench/api_bench.py [--quick] [--json] [--baseline REV]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BASELINE = "12fd865^"  # the last commit whose API spoke plain HTTP


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def worker(mode: str, n: int) -> dict[str, Any]:
    """Run in the tree under test (PYTHONPATH): start a cluster, measure, stop it."""
    sys.path.insert(0, os.getcwd())
    from meshems.adapters.config_file import load_config
    from meshems.adapters.secret import init_secret, read_secret
    from meshems.core import commands
    from meshems.ops.supervisor import LocalCluster
    from tests.conftest import write_config

    folder = Path(tempfile.mkdtemp(prefix="api-bench-"))
    try:
        path = write_config(folder)
        cfg = load_config(path)
        init_secret(cfg.secret_path)
        c = LocalCluster(cfg, str(path), read_secret(cfg.secret_path), folder / "logs")
        c.start_all()
        try:
            leader = c.wait_leader()
            node = cfg.node(leader)
            headers = {"Authorization": f"Bearer {c.client.token}", "Content-Type": "application/msgpack"}
            ctx = getattr(c.client, "ssl_context", None)

            def connect() -> http.client.HTTPConnection:
                if mode == "https":
                    return http.client.HTTPSConnection(node.bind_host, node.api_port, timeout=10, context=ctx)
                return http.client.HTTPConnection(node.bind_host, node.api_port, timeout=10)

            def timed(conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None) -> float:
                t0 = time.perf_counter()
                conn.request(method, path, body=body, headers=headers)
                resp = conn.getresponse()
                data = resp.read()
                if resp.status != 200:
                    raise RuntimeError(f"{method} {path}: {resp.status} {data[:200]!r}")
                return time.perf_counter() - t0

            conn = connect()
            for _ in range(20):
                timed(conn, "GET", "/v1/status", None)
            t0 = time.perf_counter()
            status = [timed(conn, "GET", "/v1/status", None) for _ in range(n)]
            status_rps = n / (time.perf_counter() - t0)
            writes = []
            t0 = time.perf_counter()
            for i in range(max(20, n // 5)):
                data = commands.encode("set_setpoint", f"b-{uuid.uuid4().hex}", device_id="n1-bat",
                                       kw=float(i % 10), source="bench")  # fmt: skip
                writes.append(timed(conn, "POST", "/v1/propose", data))
            write_rps = len(writes) / (time.perf_counter() - t0)
            conn.close()
            t0, fresh = time.perf_counter(), 0
            while time.perf_counter() - t0 < 3.0:
                one = connect()
                timed(one, "GET", "/v1/status", None)
                one.close()
                fresh += 1
            return {
                "status_p50_ms": 1000 * pct(status, 0.5),
                "status_p99_ms": 1000 * pct(status, 0.99),
                "status_rps": status_rps,
                "commit_p50_ms": 1000 * pct(writes, 0.5),
                "commit_p99_ms": 1000 * pct(writes, 0.99),
                "commit_rps": write_rps,
                "new_connections_per_s": fresh / (time.perf_counter() - t0),
            }
        finally:
            c.stop_all()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def run_in(tree: Path, mode: str, n: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(tree)}
    out = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--worker", mode, "--n", str(n)],
        cwd=tree, env=env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if out.returncode != 0:
        raise RuntimeError(f"{mode} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer requests")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--baseline", default=BASELINE, help=f"the plain-HTTP revision (default {BASELINE})")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--n", type=int, default=1000, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.n)))
        return 0
    n = 200 if args.quick else args.n
    base = Path(tempfile.mkdtemp(prefix="api-bench-base-"))
    try:
        add = ["git", "-C", str(ROOT), "worktree", "add", "-f", "--detach", str(base), args.baseline]
        subprocess.run(add, check=True, capture_output=True)
        print(f"bench: plain HTTP at {args.baseline}...", file=sys.stderr)
        plain = run_in(base, "http", n)
    finally:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], capture_output=True
        )
        shutil.rmtree(base, ignore_errors=True)
    print("bench: HTTPS at this tree...", file=sys.stderr)
    https = run_in(ROOT, "https", n)
    ratio = {k: https[k] / plain[k] for k in plain if plain[k]}
    if args.json:
        print(json.dumps({"plain": plain, "https": https, "ratio": ratio}))
        return 0
    print(f"{'':28}{'plain HTTP':>12}{'HTTPS':>12}{'HTTPS/plain':>12}")
    rows = [("status p50 (ms)", "status_p50_ms"), ("status p99 (ms)", "status_p99_ms"),
            ("status requests/s", "status_rps"), ("setpoint commit p50 (ms)", "commit_p50_ms"),
            ("setpoint commit p99 (ms)", "commit_p99_ms"), ("setpoint commits/s", "commit_rps"),
            ("new connections/s", "new_connections_per_s")]  # fmt: skip
    for label, key in rows:
        print(f"{label:28}{plain[key]:12.2f}{https[key]:12.2f}{ratio[key]:11.2f}x")
    print(f"({n} status requests and {max(20, n // 5)} commits per mode on one kept-alive connection; "
          "HTTPS new connections are full TLS 1.3 handshakes with a client certificate)")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
