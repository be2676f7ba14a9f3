#!/usr/bin/env python3
"""Raft benchmark: meshems' replicated zone state vs a bare pysyncobj ReplDict, in one run.

Three worker processes per cluster on 127.0.0.1, same SyncObjConf (password, journal, no
batching, timeouts from the config). The baseline stores the same information per write
(device -> kW, request id, source) in a ReplDict, without validation, dedup or fencing.
Prints a table of medians/p99 and meshems/baseline ratios; never asserts on time.
`--json` prints one JSON object, `--quick` a smaller run. `--fsync both` (the default of a
full run; `--quick` measures only `on`) measures the meshems cluster with `raft.fsync` on
and off in the same run (keys ending in `_fsync` / `_nofsync`); the failover trials and the
unsuffixed keys use the first setting measured.

    python scripts/bench/raft_bench.py [--quick] [--json] [--trials 10] [--fsync on|off|both]
        [--reuse-clusters] [--seq 1000] [--pipe 20000]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchlib import pct
from raft_bench_worker import NODES, make_config, worker

# --- orchestrator side --------------------------------------------------------------------


class Cluster:
    def __init__(self, kind: str, folder: Path, base_port: int, fsync: bool = True) -> None:
        self.kind = kind
        self.cfg = make_config(folder, base_port, fsync)
        self.ctx = mp.get_context("spawn")
        self.procs: dict[str, Any] = {}
        self.conns: dict[str, Any] = {}

    def start(self, *node_ids: str) -> None:
        """Start workers side by side (their imports overlap), then wait until each is up."""
        started = []
        for node_id in node_ids:
            parent, child = self.ctx.Pipe()
            p = self.ctx.Process(target=worker, args=(self.kind, self.cfg, node_id, child), daemon=True)
            p.start()
            started.append((node_id, p, parent))
        for node_id, p, parent in started:
            if not parent.poll(30):
                raise RuntimeError(f"{self.kind} worker {node_id} did not start")
            parent.recv()
            self.procs[node_id], self.conns[node_id] = p, parent

    def ask(self, node_id: str, *msg: Any, timeout: float = 120) -> Any:
        conn = self.conns[node_id]
        conn.send(msg)
        if not conn.poll(timeout):
            raise TimeoutError(f"{node_id} did not answer {msg[0]}")
        return conn.recv()

    def alive(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.is_alive()]

    def leader(self, timeout: float = 15) -> str:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for n in self.alive():
                if self.ask(n, "role", timeout=5) == "leader":
                    return n
            time.sleep(0.02)
        raise TimeoutError("no leader")

    def kill(self, node_id: str) -> None:
        os.kill(self.procs[node_id].pid, signal.SIGKILL)
        self.procs[node_id].join(10)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.is_alive():
                os.kill(p.pid, signal.SIGCONT)
                p.kill()
            p.join(5)


def measure_cluster(
    kind: str, folder: Path, port: int, n_seq: int, n_pipe: int, fsync: bool = True, then: Any = None
) -> dict[str, Any]:
    """The commit latency and throughput rows of one cluster; `then(c)`, when given, runs on
    the same cluster afterwards (--reuse-clusters), its result under the key "then"."""
    c = Cluster(kind, folder, port, fsync)
    try:
        c.start(*NODES)
        leader = c.leader()
        if kind == "meshems":
            leader = declare(c, leader)
        follower = next(n for n in NODES if n != leader)
        c.ask(leader, "seq", 50)  # warm-up
        lat_l, err_l = c.ask(leader, "seq", n_seq)
        lat_f, err_f = c.ask(follower, "seq", n_seq)
        syncs = c.ask(leader, "syncs") if kind == "meshems" else 0
        tput_l, perr_l = c.ask(leader, "pipe", n_pipe, 100)
        syncs = (c.ask(leader, "syncs") - syncs) if kind == "meshems" else 0
        tput_f, perr_f = c.ask(follower, "pipe", n_pipe, 100)
        replicas_equal = None
        if kind == "meshems":  # after the load: did every replica reach the same state?
            end = time.monotonic() + 10
            while time.monotonic() < end:
                seen = {c.ask(n, "hash") for n in NODES}
                if len(seen) == 1:
                    break
                time.sleep(0.05)
            replicas_equal = len(seen) == 1
        return {
            "then": then(c) if then else None,
            "replicas_equal": replicas_equal,
            "p50_leader": statistics.median(lat_l),
            "p99_leader": pct(lat_l, 99),
            "p50_follower": statistics.median(lat_f),
            "p99_follower": pct(lat_f, 99),
            "tput_leader": tput_l,
            "tput_follower": tput_f,
            "errors": err_l + err_f + perr_l + perr_f,
            "syncs_per_commit": syncs / n_pipe,  # the leader's, 100 in flight
        }
    finally:
        c.stop()


def declare(c: Cluster, via: str) -> str:
    """Declare the device the benchmark writes target (meshems refuses unknown devices);
    returns the leader that committed it."""
    from meshems.core.node_spec import declaration

    data = declaration(c.cfg.node("n1"))  # the same request id on every try: applied once
    end = time.monotonic() + 15
    while True:
        res = c.ask(via, "raw", data)
        if isinstance(res, dict) and res.get("ok"):
            return via
        if time.monotonic() > end:
            raise RuntimeError(f"declare failed: {res}")
        time.sleep(0.2)  # an election right after the start (E_QUORUM, not leader): ask who leads now
        via = c.leader()


def failover_and_stepdown(
    folder: Path, port: int, trials: int, stepdowns: int, kind: str = "meshems", fsync: bool = True
) -> dict[str, Any]:
    c = Cluster(kind, folder, port, fsync)
    try:
        c.start(*NODES)
        if kind == "meshems":
            declare(c, c.leader())
        return failovers(c, trials, stepdowns)
    finally:
        c.stop()


def failovers(c: Cluster, trials: int, stepdowns: int) -> dict[str, Any]:
    """Kill -9 the leader `trials` times, then isolate it `stepdowns` times, on a running cluster."""
    kind = c.kind
    fail_ms: list[float] = []
    step_ms: list[float] = []
    for t in range(trials):
        leader = c.leader()
        survivor = next(n for n in NODES if n != leader)
        c.ask(survivor, "seq", 5)
        t0 = time.monotonic()
        c.kill(leader)
        t_ok, _ = c.ask(survivor, "until_commit", 10.0)
        if t_ok is not None:
            fail_ms.append((t_ok - t0) * 1000)
        c.start(leader)  # restart from its journal for the next trial
        c.ask(leader, "seq", 3)
        print(
            f"  {kind} failover trial {t + 1}/{trials}: {fail_ms[-1] if t_ok else float('nan'):.0f} ms",
            file=sys.stderr,
        )
    for t in range(stepdowns):
        leader = c.leader()
        others = [n for n in NODES if n != leader]
        t0 = time.monotonic()
        for n in others:
            os.kill(c.procs[n].pid, signal.SIGSTOP)
        end = t0 + 10
        while time.monotonic() < end and c.ask(leader, "role", timeout=5) == "leader":
            time.sleep(0.005)
        step_ms.append((time.monotonic() - t0) * 1000)
        for n in others:
            os.kill(c.procs[n].pid, signal.SIGCONT)
        c.leader()
        print(f"  step-down trial {t + 1}/{stepdowns}: {step_ms[-1]:.0f} ms", file=sys.stderr)
    return {"failover": fail_ms, "stepdown": step_ms, "failover_missing": trials - len(fail_ms)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run for a smoke test")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--trials", type=int, default=None, help="failover trials (default 10)")
    ap.add_argument(
        "--fsync", choices=("on", "off", "both"), default=None, help="raft.fsync (default both; --quick: on)"
    )
    ap.add_argument("--seq", type=int, help="sequential writes timed per node (default 1000; --quick 200)")
    ap.add_argument(
        "--pipe", type=int, help="writes with 100 in flight per node (default 20000; --quick 2000)"
    )
    ap.add_argument(
        "--reuse-clusters",
        action="store_true",
        help="run the failover and step-down trials on the clusters just measured instead of fresh"
        " ones (6 worker starts fewer; for smoke tests)",
    )
    args = ap.parse_args()
    modes = {"on": [True], "off": [False], "both": [True, False]}[
        args.fsync or ("on" if args.quick else "both")
    ]
    n_seq, n_pipe = (200, 2000) if args.quick else (1000, 20000)
    n_seq, n_pipe = args.seq or n_seq, args.pipe or n_pipe
    trials = args.trials or (3 if args.quick else 10)
    stepdowns = 2 if args.quick else 5
    folder = Path(tempfile.mkdtemp(prefix="meshems-bench-"))
    # below the ephemeral range (32768-60999 here): a fixed base there can collide with clients
    base = 20000 + (os.getpid() % 40) * 300
    try:
        reuse = args.reuse_clusters
        print("bench: bare pysyncobj ReplDict cluster...", file=sys.stderr)
        # the same kills against bare pysyncobj: what pre-vote and the transport guards cost
        bare = measure_cluster(
            "bare",
            folder / "bare",
            base,
            n_seq,
            n_pipe,
            then=(lambda c: failovers(c, trials, 0)) if reuse else None,
        )
        runs: dict[bool, dict[str, Any]] = {}
        for i, fsync in enumerate(modes):
            print(f"bench: meshems cluster, fsync {'on' if fsync else 'off'}...", file=sys.stderr)
            then = (lambda c: failovers(c, trials, stepdowns)) if reuse and i == 0 else None
            runs[fsync] = measure_cluster(
                "meshems", folder / f"mesh{i}", base + 100 + 20 * i, n_seq, n_pipe, fsync, then=then
            )
        mesh = runs[modes[0]]
        if reuse:
            fo, fo_bare = mesh["then"], bare["then"]
        else:
            print("bench: failover and step-down...", file=sys.stderr)
            fo = failover_and_stepdown(folder / "fo", base + 200, trials, stepdowns, fsync=modes[0])
            fo_bare = failover_and_stepdown(folder / "fo-bare", base + 250, trials, 0, kind="bare")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out = {
        "commit_p50_ms_leader": round(mesh["p50_leader"], 3),
        "commit_p99_ms_leader": round(mesh["p99_leader"], 3),
        "commit_p50_ms_follower": round(mesh["p50_follower"], 3),
        "commit_p99_ms_follower": round(mesh["p99_follower"], 3),
        "throughput_ops_s": round(mesh["tput_leader"]),
        "throughput_ops_s_follower": round(mesh["tput_follower"]),
        "failover_median_ms": round(statistics.median(fo["failover"]), 1) if fo["failover"] else None,
        "failover_max_ms": round(max(fo["failover"]), 1) if fo["failover"] else None,
        "failover_trials": len(fo["failover"]),
        "failover_missing": fo["failover_missing"],
        "failover_median_ms_bare": round(statistics.median(fo_bare["failover"]), 1)
        if fo_bare["failover"]
        else None,
        "failover_ratio": round(statistics.median(fo["failover"]) / statistics.median(fo_bare["failover"]), 3)
        if fo["failover"] and fo_bare["failover"]
        else None,
        "stepdown_ms": round(statistics.median(fo["stepdown"]), 1) if fo["stepdown"] else None,
        "stepdown_max_ms": round(max(fo["stepdown"]), 1) if fo["stepdown"] else None,
        "overhead_ratio": round(mesh["p50_follower"] / bare["p50_follower"], 3),
        "overhead_ratio_leader": round(mesh["p50_leader"] / bare["p50_leader"], 3),
        "throughput_ratio": round(mesh["tput_leader"] / bare["tput_leader"], 3),
        "baseline": {k: round(v, 3) for k, v in bare.items() if isinstance(v, float | int)},
        "errors": sum(r["errors"] for r in runs.values()) + bare["errors"],
        "replica_hashes_equal": all(r["replicas_equal"] for r in runs.values()),
        "fsync": args.fsync or ("on" if args.quick else "both"),
    }
    for fsync, r in runs.items():
        sfx = "fsync" if fsync else "nofsync"
        out |= {
            f"commit_p50_ms_{sfx}": round(r["p50_leader"], 3),
            f"commit_p99_ms_{sfx}": round(r["p99_leader"], 3),
            f"commit_p50_ms_follower_{sfx}": round(r["p50_follower"], 3),
            f"commit_p99_ms_follower_{sfx}": round(r["p99_follower"], 3),
            f"throughput_ops_s_{sfx}": round(r["tput_leader"]),
            f"throughput_ops_s_follower_{sfx}": round(r["tput_follower"]),
            f"syncs_per_commit_{sfx}": round(r["syncs_per_commit"], 3),
            f"errors_{sfx}": r["errors"],
        }
    if len(runs) == 2:
        on, off = runs[True], runs[False]
        out["fsync_p99_ratio"] = round(on["p99_leader"] / off["p99_leader"], 3)
        out["fsync_p99_ratio_follower"] = round(on["p99_follower"] / off["p99_follower"], 3)
    if args.json:
        print(json.dumps(out))
        return 0
    rows = [
        ("commit p50, from leader (ms)", mesh["p50_leader"], bare["p50_leader"]),
        ("commit p99, from leader (ms)", mesh["p99_leader"], bare["p99_leader"]),
        ("commit p50, from follower (ms)", mesh["p50_follower"], bare["p50_follower"]),
        ("commit p99, from follower (ms)", mesh["p99_follower"], bare["p99_follower"]),
        ("throughput, 100 in flight, leader (ops/s)", mesh["tput_leader"], bare["tput_leader"]),
        ("throughput, 100 in flight, follower (ops/s)", mesh["tput_follower"], bare["tput_follower"]),
    ]
    print(
        f"{'metric':<46}{'meshems':>12}{'bare':>12}{'ratio':>8}  (raft.fsync {'on' if modes[0] else 'off'})"
    )
    for name, m, b in rows:
        print(f"{name:<46}{m:>12.2f}{b:>12.2f}{m / b:>8.2f}")
    if len(runs) == 2:
        on, off = runs[True], runs[False]
        print(f"\n{'raft.fsync (meshems)':<46}{'on':>12}{'off':>12}{'ratio':>8}")
        for name, key in (
            ("commit p50, from leader (ms)", "p50_leader"),
            ("commit p99, from leader (ms)", "p99_leader"),
            ("commit p50, from follower (ms)", "p50_follower"),
            ("commit p99, from follower (ms)", "p99_follower"),
            ("throughput, 100 in flight, leader (ops/s)", "tput_leader"),
            ("throughput, 100 in flight, follower (ops/s)", "tput_follower"),
        ):
            print(f"{name:<46}{on[key]:>12.2f}{off[key]:>12.2f}{on[key] / off[key]:>8.2f}")
        print(f"{'leader fdatasyncs per commit, 100 in flight':<46}{on['syncs_per_commit']:>12.3f}{0:>12.3f}")
        print(f"{'errors (timeouts, leader changes)':<46}{on['errors']:>12}{off['errors']:>12}")
    print()
    f, fb = fo["failover"], fo_bare["failover"]
    med = statistics.median(f) if f else float("nan")
    med_b = statistics.median(fb) if fb else float("nan")
    print(
        f"{'failover kill -9 -> commit, median (ms)':<46}{med:>12.1f}{med_b:>12.1f}{med / med_b:>8.2f}"
        f"  ({len(f)} / {len(fb)} trials)"
    )
    print(
        f"{'failover kill -9 -> commit, max (ms)':<46}{max(f) if f else float('nan'):>12.1f}"
        f"{max(fb) if fb else float('nan'):>12.1f}"
    )
    s = fo["stepdown"]
    print(
        f"{'isolated leader steps down, median (ms)':<46}{statistics.median(s):>12.1f}"
        f"{'':>12}{'':>8}  ({len(s)} trials)"
    )
    print(f"{'isolated leader steps down, max (ms)':<46}{max(s):>12.1f}")
    print(
        f"errors during the measured runs: {out['errors']}; "
        f"replica state hashes equal after the load: {'yes' if out['replica_hashes_equal'] else 'NO'}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
