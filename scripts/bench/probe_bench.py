#!/usr/bin/env python3
"""Attack-probe benchmark: what a LAN attacker costs a 3-node cluster, each against the same
cluster idle in the same run. Real node processes on 127.0.0.1; the attacker connects from
127.0.0.2 (loopback), the operator from 127.0.0.1.

- API flood: connections that each POST a 1 MiB body without a token: the operator's
  `GET /v1/status` latency during it vs idle, the node's RSS growth, how the flood was answered.
- Raft garbage: connections to the leader's Raft port sending a 2**31 length prefix and random
  bytes, plus idle sockets: setpoint commit latency during it vs idle, term and leader changes.
- Graceful restarts of followers: term and leader changes (pre-vote keeps both).
Prints a table (medians, p99, ratios to idle); never asserts on time. `--json` prints one
JSON object, `--quick` a smaller run.

    python scripts/bench/probe_bench.py [--quick] [--json] [--restarts N] [--flood-s S] [--requests N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchlib import pct

from meshems.adapters.api_tls import client_context
from meshems.adapters.config_file import load_config
from meshems.adapters.secret import init_secret, read_secret
from meshems.core import commands
from meshems.ops.supervisor import LocalCluster
from tests.conftest import write_config

ATTACKER = "127.0.0.2"
NODES = ("n1", "n2", "n3")


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def status(c: LocalCluster, node: str) -> dict[str, Any]:
    return c.client.request(c.cfg.node(node), "GET", "/v1/status")[1]


def timed_status(c: LocalCluster, node: str, n: int) -> tuple[list[float], int]:
    lat, errors = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        try:
            status(c, node)
        except Exception:
            errors += 1
        lat.append((time.perf_counter() - t0) * 1000)
    return lat, errors


def timed_commits(c: LocalCluster, n: int) -> tuple[list[float], int]:
    lat, errors = [], 0
    for i in range(n):
        data = commands.encode("set_setpoint", f"b-{uuid.uuid4().hex}", device_id="n1-bat", kw=float(i % 40),
                               source="bench")  # fmt: skip
        t0 = time.perf_counter()
        try:
            ok = c.client.propose(data, deadline_s=10).get("ok")
        except Exception:
            ok = False
        lat.append((time.perf_counter() - t0) * 1000)
        errors += not ok
    return lat, errors


def in_background(fn: Any, *args: Any) -> tuple[threading.Thread, dict[str, Any]]:
    out: dict[str, Any] = {}
    t = threading.Thread(target=lambda: out.update(fn(*args)), daemon=True)
    t.start()
    return t, out


def api_flood(host: str, port: int, conns: int, seconds: float, tls: Any = None) -> dict[str, int]:
    """Waves of `conns` connections (TLS when given a context: the API is HTTPS), each sending
    headers and 1 MiB without a token."""
    outcome = {"answered_401": 0, "refused": 0, "connections": 0}
    head = f"POST /v1/propose HTTP/1.1\r\nHost: x\r\nContent-Length: {1 << 20}\r\n\r\n".encode()
    chunk = os.urandom(65536)

    async def one() -> None:
        outcome["connections"] += 1
        try:
            opened = asyncio.open_connection(
                host, port, local_addr=(ATTACKER, 0), ssl=tls, server_hostname=host if tls else None
            )
            r, w = await asyncio.wait_for(opened, 5)
            w.write(head + chunk)
            line = await asyncio.wait_for(r.readline(), 5)
            outcome["answered_401" if b" 401 " in line else "refused"] += 1
            with contextlib.suppress(Exception):
                for _ in range(15):
                    w.write(chunk)
                    await asyncio.wait_for(w.drain(), 5)
            w.close()
        except (OSError, TimeoutError, asyncio.IncompleteReadError):
            outcome["refused"] += 1

    async def waves() -> None:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            await asyncio.gather(*(one() for _ in range(conns)))

    asyncio.run(waves())
    return outcome


def raft_garbage(host: str, port: int, seconds: float) -> dict[str, int]:
    idle = []
    for _ in range(100):
        s = socket.socket()
        s.bind((ATTACKER, 0))
        with contextlib.suppress(OSError):
            s.connect((host, port))
        idle.append(s)
    end, sent = time.monotonic() + seconds, 0
    while time.monotonic() < end:
        with socket.socket() as s:
            s.bind((ATTACKER, 0))
            s.settimeout(1)
            with contextlib.suppress(OSError):
                s.connect((host, port))
                s.sendall(struct.pack("i", 0x7FFFFFFF) + os.urandom(64 * 1024))
            sent += 1
    for s in idle:
        s.close()
    return {"garbage_connections": sent}


def leader_and_terms(c: LocalCluster) -> tuple[str, dict[str, int]]:
    return c.wait_leader(), {n: status(c, n)["term"] for n in NODES}


def run(
    quick: bool, restarts: int | None = None, flood_s: float | None = None, n_req: int | None = None
) -> dict[str, Any]:
    n_req = n_req or (100 if quick else 400)
    flood_s = flood_s or (3.0 if quick else 10.0)
    restarts = restarts or (3 if quick else 10)
    folder = Path(tempfile.mkdtemp(prefix="meshems-probe-"))
    try:
        path = write_config(folder)
        cfg = load_config(path)
        init_secret(cfg.secret_path)
        c = LocalCluster(cfg, str(path), read_secret(cfg.secret_path), folder / "logs")
        try:
            c.start_all()
            for n in NODES:
                c.wait_api(n)
            leader, terms0 = leader_and_terms(c)
            while status(c, leader)["devices"] < 3:
                time.sleep(0.05)
            follower = next(n for n in NODES if n != leader)
            out: dict[str, Any] = {}
            # --- API flood against a follower's API -------------------------------------------
            node = cfg.node(follower)
            pid = status(c, follower)["pid"]
            idle_lat, _ = timed_status(c, follower, n_req)
            rss0 = rss_mb(pid)
            print("bench: API flood...", file=sys.stderr)
            no_cert = client_context(cfg.tls_dir, cert="")  # an attacker trusts the CA, has no credential
            t, flood = in_background(api_flood, node.bind_host, node.api_port, 300, flood_s, no_cert)
            flood_lat, flood_err = timed_status(c, follower, n_req)
            t.join()
            out |= {
                "api_status_p50_ms_idle": statistics.median(idle_lat),
                "api_status_p99_ms_idle": pct(idle_lat, 99),
                "api_status_p50_ms_flood": statistics.median(flood_lat),
                "api_status_p99_ms_flood": pct(flood_lat, 99),
                "api_status_errors_flood": flood_err,
                "api_flood_ratio": statistics.median(flood_lat) / statistics.median(idle_lat),
                "rss_mb_before_flood": rss0,
                "rss_growth_mb": rss_mb(pid) - rss0,
                **{f"flood_{k}": v for k, v in flood.items()},
            }
            # --- Raft garbage at the leader's Raft port ---------------------------------------
            print("bench: Raft garbage...", file=sys.stderr)
            idle_c, _ = timed_commits(c, n_req)
            lpid = status(c, leader)["pid"]
            lrss0 = rss_mb(lpid)
            rnode = cfg.node(leader)
            t, garbage = in_background(raft_garbage, rnode.bind_host, rnode.raft_port, flood_s)
            garbage_c, garbage_err = timed_commits(c, n_req)
            t.join()
            leader2, terms1 = leader_and_terms(c)
            out |= {
                "commit_p50_ms_idle": statistics.median(idle_c),
                "commit_p99_ms_idle": pct(idle_c, 99),
                "commit_p50_ms_garbage": statistics.median(garbage_c),
                "commit_p99_ms_garbage": pct(garbage_c, 99),
                "commit_errors_garbage": garbage_err,
                "raft_garbage_ratio": statistics.median(garbage_c) / statistics.median(idle_c),
                "leader_rss_growth_mb": rss_mb(lpid) - lrss0,
                "term_changes_garbage": sum(terms1[n] - terms0[n] for n in NODES),
                "leader_changes_garbage": int(leader2 != leader),
                **garbage,
            }
            # --- graceful follower restarts -------------------------------------------------
            print("bench: graceful restarts...", file=sys.stderr)
            followers = [n for n in NODES if n != leader2]
            for i in range(restarts):
                f = followers[i % 2]
                c.stop(f)
                c.start(f)
                c.wait_api(f)
                end = time.monotonic() + 15
                while time.monotonic() < end and status(c, f).get("leader") != leader2:
                    time.sleep(0.05)
            leader3, terms2 = leader_and_terms(c)
            out |= {
                "restarts": restarts,
                "restart_term_changes": terms2[leader3] - terms1[leader2],
                "restart_leader_changes": int(leader3 != leader2),
            }
            return out
        finally:
            for node_id in list(c.procs):  # all at once: their shutdowns overlap
                c.signal(node_id, signal.SIGTERM)
            c.stop_all()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run for a smoke test")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--restarts", type=int, help="graceful follower restarts (default 10; --quick 3)")
    ap.add_argument("--flood-s", type=float, help="seconds of each flood (default 10; --quick 3)")
    ap.add_argument("--requests", type=int, help="timed requests per phase (default 400; --quick 100)")
    args = ap.parse_args()
    out = run(args.quick, args.restarts, args.flood_s, args.requests)
    rounded = {k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}
    if args.json:
        print(json.dumps(rounded))
        return 0
    rows = [
        ("operator GET /v1/status p50 (ms)", out["api_status_p50_ms_flood"], out["api_status_p50_ms_idle"]),
        ("operator GET /v1/status p99 (ms)", out["api_status_p99_ms_flood"], out["api_status_p99_ms_idle"]),
        ("setpoint commit p50 (ms)", out["commit_p50_ms_garbage"], out["commit_p50_ms_idle"]),
        ("setpoint commit p99 (ms)", out["commit_p99_ms_garbage"], out["commit_p99_ms_idle"]),
    ]
    print(f"{'metric':<40}{'attacked':>12}{'idle':>12}{'ratio':>8}")
    for name, a, b in rows:
        print(f"{name:<40}{a:>12.2f}{b:>12.2f}{a / b:>8.2f}")
    o = out
    print(f"API flood: {o['flood_connections']} unauthenticated 1 MiB POSTs, {o['flood_answered_401']} "
          f"answered 401 before their body, {o['flood_refused']} refused or reset at the caps; operator "
          f"errors {o['api_status_errors_flood']}; RSS {o['rss_mb_before_flood']:.0f} MB, growth "
          f"{o['rss_growth_mb']:+.1f} MB")  # fmt: skip
    print(f"Raft garbage: {o['garbage_connections']} connections with a 2**31 frame + 100 idle sockets "
          f"at the leader; term changes {o['term_changes_garbage']}, leader changes "
          f"{o['leader_changes_garbage']}, commit errors {o['commit_errors_garbage']}, leader RSS growth "
          f"{o['leader_rss_growth_mb']:+.1f} MB")  # fmt: skip
    print(f"{o['restarts']} graceful follower restarts: term changes {o['restart_term_changes']}, "
          f"leader changes {o['restart_leader_changes']}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
