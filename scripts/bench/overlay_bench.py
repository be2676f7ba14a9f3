#!/usr/bin/env python3
"""Overlay benchmark: the same 3-node meshems cluster over loopback and over the wireguard-go
overlay of the lab (network namespaces on a bridge), in one run. Root only.

Per setup: TCP RTT (1-byte ping-pong, median), commit latency p50/p99 of a setpoint write
through the leader's API, throughput with 100 writes in flight, and failover (kill -9 of the
leader -> first committed write through another node) median/max over N trials. The veth
RTT between two namespaces (no tunnel) is printed for reference. Never asserts on time.
`--fsync both` (the default of a full run; `--quick` measures only `on`) measures commits
and throughput with `raft.fsync` on and off in the same run, on the same cluster restarted
with the other setting (keys ending in `_fsync` / `_nofsync`, and the on/off ratios); the
failover trials and the unsuffixed keys use the first setting measured. The journals are
on the machine's disk (the lab without lossyfs), so fsync costs what it costs there.

    sudo .venv/bin/python scripts/bench/overlay_bench.py [--quick] [--json] [--trials 10] [--seq N] [--pipe N]
        [--fsync on|off|both]
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
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import yaml
from benchlib import pct

from meshems.adapters.config_file import load_config
from meshems.adapters.secret import init_secret, read_secret
from meshems.core import commands
from meshems.core.config import ClusterConfig, NodeConfig
from meshems.core.errors import UnreachableError
from meshems.lab.gateways import Lab
from meshems.ops.client import NodeClient
from meshems.ops.supervisor import LocalCluster
from tests.conftest import free_ports

RTT_SCRIPT = r"""
import socket, statistics, sys, time, threading
host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
srv_host = sys.argv[4] if len(sys.argv) > 4 else None
s = socket.create_connection((host, port), timeout=5)
s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
rtts = []
for i in range(n):
    t = time.perf_counter_ns()
    s.sendall(b"x")
    if s.recv(1) != b"x":
        raise SystemExit("echo broke")
    rtts.append((time.perf_counter_ns() - t) / 1000)
print(statistics.median(rtts[n // 10:]))
"""

ECHO_SCRIPT = r"""
import socket, sys
srv = socket.socket()
srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind((sys.argv[1], int(sys.argv[2])))
srv.listen(1)
print("ready", flush=True)
c, _ = srv.accept()
c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
while True:
    b = c.recv(1)
    if not b:
        break
    c.sendall(b)
"""


def rtt_us(server_prefix: list[str], client_prefix: list[str], host: str, port: int, n: int) -> float:
    srv = subprocess.Popen(
        [*server_prefix, sys.executable, "-c", ECHO_SCRIPT, host, str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert srv.stdout is not None and srv.stdout.readline().strip() == "ready"
        out = subprocess.run(
            [*client_prefix, sys.executable, "-c", RTT_SCRIPT, host, str(port), str(n)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if out.returncode != 0:
            raise RuntimeError(out.stderr)
        return float(out.stdout.strip())
    finally:
        srv.kill()
        srv.wait(timeout=5)


def loopback_config(folder: Path, ports: list[int], fsync: bool = True) -> ClusterConfig:
    folder.mkdir(parents=True, exist_ok=True)
    doc = {
        "cluster": "bench",
        "zone": "bench",
        "raft": {"secret_file": "secret/raft.secret", "data_dir": "data", "fsync": fsync},
        # 100 writes in flight from one address, each closing and reconnecting: a connection
        # counts until the node has seen it close, so allow twice that and some
        "api": {"max_connections_per_peer": 256},
        "nodes": [
            {
                "id": f"n{i + 1}",
                "address": "127.0.0.1",
                "raft_port": ports[i],
                "api_port": ports[3 + i],
                "devices": [{"id": f"n{i + 1}-bat", "kind": "battery", "min_kw": -50, "max_kw": 50}],
            }
            for i in range(3)
        ],
    }
    path = folder / "loop.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = load_config(path)
    init_secret(cfg.secret_path)
    return cfg


def set_fsync(path: Path, fsync: bool) -> None:
    """Rewrite a cluster config's raft.fsync (the nodes read it when they next start)."""
    doc = yaml.safe_load(path.read_text())
    doc["raft"]["fsync"] = fsync
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


class Target:
    """What the measurements need from a cluster: a client, a leader, kill and restart."""

    def __init__(
        self,
        client: NodeClient,
        cfg: ClusterConfig,
        wait_leader: Any,
        kill: Any,
        start: Any,
        restart_all: Any,
    ) -> None:
        self.client, self.cfg = client, cfg
        self.wait_leader, self.kill, self.start = wait_leader, kill, start
        self.restart_all = restart_all  # every node stopped at once, then started (a new raft.fsync)

    def write(self, node: NodeConfig, kw: float, timeout_s: float = 3.0) -> dict[str, Any]:
        data = commands.encode("set_setpoint", uuid.uuid4().hex, device_id="n1-bat", kw=kw, source="bench")
        try:
            _, body = self.client.request(node, "POST", "/v1/propose", data, timeout_s=timeout_s)
        except UnreachableError as exc:
            return {"ok": False, "code": "E_UNREACHABLE", "message": exc.message}
        return dict(body)

    def wait_caught_up(self, timeout_s: float = 20.0) -> None:
        end = time.monotonic() + timeout_s
        rows: list[dict[str, Any]] = []
        while time.monotonic() < end:
            rows = self.client.status_all(timeout_s=0.5)
            if all(r.get("reachable") for r in rows):
                applied = {r["applied_index"] for r in rows}
                if max(applied) - min(applied) <= 2 and any(r["role"] == "leader" for r in rows):
                    return
            time.sleep(0.05)
        seen = [(r["id"], r.get("role"), r.get("applied_index"), r.get("error")) for r in rows]
        raise TimeoutError(f"cluster did not catch up within {timeout_s} s: {seen}")


def commits(t: Target, n_seq: int, n_pipe: int) -> dict[str, Any]:
    """Commit latency of sequential writes and throughput with 100 in flight, via the leader."""
    leader = t.cfg.node(t.wait_leader(30))
    t.wait_caught_up()
    for i in range(50):  # warm connections and code paths
        t.write(leader, i * 0.01)
    lat, errors, codes = [], 0, Counter()
    for i in range(n_seq):
        s = time.perf_counter()
        res = t.write(leader, (i % 1000) * 0.01)
        lat.append((time.perf_counter() - s) * 1000)
        errors += not res.get("ok")
        codes[res.get("code")] += not res.get("ok")
    with ThreadPoolExecutor(max_workers=100) as pool:
        s = time.perf_counter()
        results = list(pool.map(lambda i: t.write(leader, (i % 1000) * 0.01), range(n_pipe)))
        tput = n_pipe / (time.perf_counter() - s)
    errors += sum(not r.get("ok") for r in results)
    codes.update(r.get("code") for r in results if not r.get("ok"))
    return {
        "p50": statistics.median(lat),
        "p99": pct(lat, 99),
        "tput": tput,
        "errors": errors,
        "codes": codes,
    }


def failovers(t: Target, trials: int) -> dict[str, Any]:
    """kill -9 of the leader -> the first write committed through another node, `trials` times."""
    failover, missing = [], 0
    for _ in range(trials):
        t.wait_caught_up()
        old = t.wait_leader(10)
        others = [n for n in t.cfg.nodes if n.id != old]
        t.kill(old)
        s = time.perf_counter()
        done, attempt = False, 0
        while time.perf_counter() - s < 10:
            res = t.write(others[attempt % 2], 1.0, timeout_s=0.5)
            attempt += 1
            if res.get("ok"):
                failover.append((time.perf_counter() - s) * 1000)
                done = True
                break
            time.sleep(0.005)
        missing += not done
        t.start(old)
    return {"failover": failover, "failover_missing": missing}


def measure(t: Target, n_seq: int, n_pipe: int, trials: int, modes: list[bool]) -> dict[str, Any]:
    """Commits and throughput per raft.fsync setting (the cluster restarted for each after the
    first), failover with the first; the first setting's figures also unsuffixed."""
    runs: dict[bool, dict[str, Any]] = {}
    for i, fsync in enumerate(modes):
        if i:
            t.restart_all(fsync)
        runs[fsync] = commits(t, n_seq, n_pipe)
        if i == 0:
            runs[fsync] |= failovers(t, trials)
    codes = sum((r["codes"] for r in runs.values()), Counter())
    return {**runs[modes[0]], "runs": runs, "errors": sum(r["errors"] for r in runs.values()),
            "error_codes": {k: v for k, v in codes.items() if v}}  # fmt: skip


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run for a smoke test")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--trials", type=int, default=None, help="failover trials (default 10)")
    ap.add_argument("--seq", type=int, help="sequential writes timed per setup (default 1000; --quick 150)")
    ap.add_argument(
        "--pipe", type=int, help="writes with 100 in flight per setup (default 5000; --quick 600)"
    )
    ap.add_argument(
        "--fsync", choices=("on", "off", "both"), default=None, help="raft.fsync (default both; --quick: on)"
    )
    args = ap.parse_args()
    fsync_arg = args.fsync or ("on" if args.quick else "both")
    modes = {"on": [True], "off": [False], "both": [True, False]}[fsync_arg]
    if os.geteuid() != 0:
        print("overlay_bench needs root (network namespaces, wireguard-go)", file=sys.stderr)
        return 2
    n_seq, n_pipe, n_rtt = (150, 600, 500) if args.quick else (1000, 5000, 5000)
    n_seq, n_pipe = args.seq or n_seq, args.pipe or n_pipe
    trials = args.trials or (3 if args.quick else 10)
    folder = Path(tempfile.mkdtemp(prefix="meshems-overlay-bench-"))
    ports = free_ports(7)
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    results: dict[str, dict[str, Any]] = {}
    rtts: dict[str, float] = {}
    try:
        say("bench: loopback cluster...")
        rtts["loopback"] = rtt_us([], [], "127.0.0.1", ports[6], n_rtt)
        cfg = loopback_config(folder / "loop", ports, modes[0])
        lc = LocalCluster(cfg, str(cfg.source), read_secret(cfg.secret_path), folder / "loop" / "logs")

        def stop_local() -> None:
            for node_id in list(lc.procs):  # all at once: their shutdowns overlap
                lc.signal(node_id, signal.SIGTERM)
            lc.stop_all()

        try:
            lc.start_all()

            def restart_local(node: str) -> None:
                lc.stop(node)
                lc.start(node)

            def reconfigure_local(fsync: bool) -> None:
                stop_local()
                set_fsync(Path(cfg.source), fsync)
                lc.start_all()

            target = Target(lc.client, cfg, lc.wait_leader, lc.kill, restart_local, reconfigure_local)
            results["loopback"] = measure(target, n_seq, n_pipe, trials, modes)
        finally:
            stop_local()
        say("bench: lab over wireguard-go...")
        lab = Lab.create(folder / "lab", nodes=3, sims=False, progress=say, fsync=modes[0])

        def reconfigure_lab(fsync: bool) -> None:
            for n in lab.plan.nodes:  # all at once: their shutdowns overlap
                os.kill(lab.pids[n], signal.SIGTERM)
            for n in lab.plan.nodes:
                lab.stop(n)
            set_fsync(Path(lab.cfg.source), fsync)
            for n in lab.plan.nodes:
                lab.start_node(n)

        try:
            a, b = lab.plan.nodes[0], lab.plan.nodes[1]
            rtts["veth"] = rtt_us(lab.ns_cmd(b), lab.ns_cmd(a), lab.plan.underlay(b), 7001, n_rtt)
            rtts["overlay"] = rtt_us(lab.ns_cmd(b), lab.ns_cmd(a), lab.plan.overlay(b), 7002, n_rtt)

            def wait_lab(timeout_s: float) -> str:
                return lab.wait_leader(timeout_s)

            target = Target(lab.client, lab.cfg, wait_lab, lab.kill, lab.start_node, reconfigure_lab)
            results["overlay"] = measure(target, n_seq, n_pipe, trials, modes)
        finally:
            lab.down()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    lo, ov = results["loopback"], results["overlay"]

    def med(xs: list[float]) -> float | None:
        return round(statistics.median(xs), 1) if xs else None

    def top(xs: list[float]) -> float | None:
        return round(max(xs), 1) if xs else None

    out = {
        "loopback_rtt_us": round(rtts["loopback"], 1),
        "veth_rtt_us": round(rtts["veth"], 1),
        "overlay_rtt_us": round(rtts["overlay"], 1),
        "loopback_commit_p50_ms": round(lo["p50"], 3),
        "loopback_commit_p99_ms": round(lo["p99"], 3),
        "overlay_commit_p50_ms": round(ov["p50"], 3),
        "overlay_commit_p99_ms": round(ov["p99"], 3),
        "loopback_throughput_ops_s": round(lo["tput"]),
        "overlay_throughput_ops_s": round(ov["tput"]),
        "loopback_failover_median_ms": med(lo["failover"]),
        "loopback_failover_max_ms": top(lo["failover"]),
        "overlay_failover_median_ms": med(ov["failover"]),
        "overlay_failover_max_ms": top(ov["failover"]),
        "failover_trials": trials,
        "failover_missing": lo["failover_missing"] + ov["failover_missing"],
        "errors": lo["errors"] + ov["errors"],
        "error_codes": {"loopback": lo["error_codes"], "overlay": ov["error_codes"]},
        "fsync": fsync_arg,
    }
    for setup, res in results.items():
        for fsync, r in res["runs"].items():
            sfx = "fsync" if fsync else "nofsync"
            out |= {
                f"{setup}_commit_p50_ms_{sfx}": round(r["p50"], 3),
                f"{setup}_commit_p99_ms_{sfx}": round(r["p99"], 3),
                f"{setup}_throughput_ops_s_{sfx}": round(r["tput"]),
                f"{setup}_errors_{sfx}": r["errors"],
            }
        if len(res["runs"]) == 2:
            on, off = res["runs"][True], res["runs"][False]
            out[f"{setup}_fsync_p50_ratio"] = round(on["p50"] / off["p50"], 3)
            out[f"{setup}_fsync_p99_ratio"] = round(on["p99"] / off["p99"], 3)
            out[f"{setup}_fsync_throughput_ratio"] = round(on["tput"] / off["tput"], 3)
    if args.json:
        print(json.dumps(out))
        return 0
    first = "on" if modes[0] else "off"
    print(f"{'metric':<44}{'loopback':>12}{'overlay':>12}{'ratio':>8}  (raft.fsync {first})")
    rows = [
        ("TCP RTT, median (us)", rtts["loopback"], rtts["overlay"]),
        ("commit p50 via the leader's API (ms)", lo["p50"], ov["p50"]),
        ("commit p99 via the leader's API (ms)", lo["p99"], ov["p99"]),
        ("throughput, 100 in flight (ops/s)", lo["tput"], ov["tput"]),
        ("failover kill -9 -> commit, median (ms)", out["loopback_failover_median_ms"] or float("nan"),
         out["overlay_failover_median_ms"] or float("nan")),
        ("failover kill -9 -> commit, max (ms)", out["loopback_failover_max_ms"] or float("nan"),
         out["overlay_failover_max_ms"] or float("nan")),
    ]  # fmt: skip
    for name, a_, b_ in rows:
        print(f"{name:<44}{a_:>12.2f}{b_:>12.2f}{b_ / a_:>8.2f}")
    if len(modes) == 2:
        side = f"{'off':>9}{'on/off':>8}"
        print(f"\n{'raft.fsync':<44}{'loopback on':>13}{side}{'overlay on':>13}{side}")
        for name, key in (("commit p50 via the leader's API (ms)", "p50"),
                          ("commit p99 via the leader's API (ms)", "p99"),
                          ("throughput, 100 in flight (ops/s)", "tput")):  # fmt: skip
            cells = ""
            for setup in ("loopback", "overlay"):
                on, off = results[setup]["runs"][True][key], results[setup]["runs"][False][key]
                cells += f"{on:>13.2f}{off:>9.2f}{on / off:>8.2f}"
            print(f"{name:<44}{cells}")
        print()
    print(f"veth RTT between two namespaces, no tunnel (us): {rtts['veth']:.1f}")
    errors = f"{out['errors']} {out['error_codes']}" if out["errors"] else "0"
    print(f"failover trials: {trials} per setup, missing: {out['failover_missing']}; errors: {errors}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
