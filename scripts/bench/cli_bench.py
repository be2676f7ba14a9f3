#!/usr/bin/env python3
"""CLI benchmark: the wall time of `meshems` calls against a real 3-node cluster on 127.0.0.1,
next to a bare `python -c pass` and the raw HTTP round trip of the same request, in one run.

Each figure is N sequential processes: `meshems --help`, `meshems status -o json`, `meshems
setpoint set` (with the config cache, and with it off: the full schema load), and help and
setpoint set without a bytecode cache; the raw round trips are NodeClient calls from here.
CLI processes get their own config cache and bytecode folder (PYTHONPYCACHEPREFIX, as an
installed meshems has its .pyc files), warmed by one call. Prints a table (median, p99,
ratio to `python -c pass`) and the top imports of `python -X importtime`; never asserts on
time. `--json` prints one JSON object, `--quick` a smaller run.

    python scripts/bench/cli_bench.py [--quick] [--json] [--calls 30] [--no-warm]
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
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from benchlib import pct

from meshems.adapters.config_file import load_config
from meshems.adapters.secret import init_secret, read_secret
from meshems.core import commands
from meshems.ops.supervisor import LocalCluster
from tests.conftest import write_config

NODES = ("n1", "n2", "n3")
HEAVY = ("pydantic", "yaml", "rich", "numpy", "pysyncobj", "aiohttp", "http.client")


def meshems_cmd() -> list[str]:
    """The venv's console script (what an operator runs), else `python -m meshems`."""
    script = Path(sys.executable).with_name("meshems")
    return [str(script)] if script.exists() else [sys.executable, "-m", "meshems"]


def timed(cmd: list[str], env: dict[str, str], n: int) -> tuple[list[float], int]:
    """Wall times (ms) of `n` sequential runs of `cmd`, and how many exited non-zero."""
    lat, errors = [], 0
    for _ in range(n):
        t0 = time.perf_counter()
        rc = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).returncode
        lat.append((time.perf_counter() - t0) * 1000)
        errors += rc != 0
    return lat, errors


def timed_calls(fn: Any, n: int) -> tuple[list[float], int]:
    lat, errors = [], 0
    for i in range(n):
        t0 = time.perf_counter()
        try:
            ok = fn(i)
        except Exception:
            ok = False
        lat.append((time.perf_counter() - t0) * 1000)
        errors += not ok
    return lat, errors


def top_imports(cmd: list[str], env: dict[str, str], k: int = 12) -> list[tuple[str, int, int]]:
    """The `k` imports with the largest cumulative time in one `python -X importtime CMD` run:
    (module, self_us, cumulative_us)."""
    out = subprocess.run([sys.executable, "-X", "importtime", *cmd], env=env, capture_output=True, text=True)
    rows = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        self_us, cum_us, name = (part.strip() for part in line.removeprefix("import time:").split("|"))
        rows.append((name, int(self_us), int(cum_us)))
    return sorted(rows, key=lambda r: -r[2])[:k]


def loaded_modules(args: list[str], env: dict[str, str]) -> list[str]:
    """Which of HEAVY a `meshems ARGS` call imported (it runs main() in a child process)."""
    code = (
        "import sys\nfrom meshems.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
        f"    pass\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)"
    )
    out = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True)
    last = out.stderr.strip().splitlines()[-1] if out.stderr.strip() else ""
    return [m for m in last.split(",") if m in HEAVY]


def stats(prefix: str, lat: list[float]) -> dict[str, float]:
    return {f"{prefix}_p50_ms": statistics.median(lat), f"{prefix}_p99_ms": pct(lat, 99)}


def run(quick: bool, calls: int | None, warm: bool = True) -> dict[str, Any]:
    n = calls or (8 if quick else 30)
    folder = Path(tempfile.mkdtemp(prefix="meshems-cli-bench-"))
    try:
        path = write_config(folder)
        cfg = load_config(path)
        init_secret(cfg.secret_path)
        c = LocalCluster(cfg, str(path), read_secret(cfg.secret_path), folder / "logs")
        try:
            c.start_all()
            for node in NODES:
                c.wait_api(node)
            leader = c.wait_leader()
            end = time.monotonic() + 15
            while c.client.request(cfg.node(leader), "GET", "/v1/status")[1]["devices"] < 3:
                if time.monotonic() > end:
                    raise TimeoutError("devices were not declared within 15 s")
                time.sleep(0.05)
            return measure(c, str(path), folder, n, warm)
        finally:
            for node_id in list(c.procs):  # all at once: their shutdowns overlap
                c.signal(node_id, signal.SIGTERM)
            c.stop_all()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def measure(c: LocalCluster, config: str, folder: Path, n: int, warm: bool = True) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env |= {"MESHEMS_CACHE_DIR": str(folder / "cache"), "PYTHONPYCACHEPREFIX": str(folder / "pyc")}
    no_cache = env | {"MESHEMS_CACHE_DIR": "off"}
    no_pyc = {k: v for k, v in env.items() if k != "PYTHONPYCACHEPREFIX"} | {"PYTHONDONTWRITEBYTECODE": "1"}
    cli = meshems_cmd()
    cmds = {
        "python_pass": ([sys.executable, "-c", "pass"], env),
        "help": ([*cli, "--help"], env),
        "status_json": ([*cli, "status", "--config", config, "-o", "json"], env),
        "setpoint_set": ([*cli, "setpoint", "set", "--config", config, "n1-bat", "-2.5"], env),
        "setpoint_set_no_cache": ([*cli, "setpoint", "set", "--config", config, "n1-bat", "-2.5"], no_cache),
        "help_no_pyc": ([*cli, "--help"], no_pyc),
        "setpoint_set_no_pyc": ([*cli, "setpoint", "set", "--config", config, "n1-bat", "-2.5"], no_pyc),
    }
    out: dict[str, Any] = {"calls": n, "errors": 0}
    for cmd, e in cmds.values() if warm else ():  # warm: bytecode, config cache, page cache
        subprocess.run(cmd, env=e, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    print(f"bench: {n} sequential calls each...", file=sys.stderr)
    for name, (cmd, e) in cmds.items():
        lat, errors = timed(cmd, e, n)
        out |= stats(name, lat)
        out["errors"] += errors
    # the same requests from this process: what the network and the cluster cost
    node = c.cfg.node("n1")

    def propose(i: int) -> bool:
        data = commands.encode("set_setpoint", f"bench-{os.urandom(8).hex()}", device_id="n1-bat",
                               kw=float(i % 40), source="operator")  # fmt: skip
        return bool(c.client.propose(data).get("ok"))

    lat, err_a = timed_calls(lambda i: c.client.request(node, "GET", "/v1/status")[0] == 200, n)
    out |= stats("rtt_status", lat)
    lat, err_b = timed_calls(propose, n)
    out |= stats("rtt_propose", lat)
    out["errors"] += err_a + err_b
    base = out["python_pass_p50_ms"]
    for name in cmds:
        out[f"{name}_ratio"] = out[f"{name}_p50_ms"] / base
    out["setpoint_set_over_rtt_ms"] = out["setpoint_set_p50_ms"] - out["rtt_propose_p50_ms"]
    out["setpoint_set_no_cache_over_cache"] = out["setpoint_set_no_cache_p50_ms"] / out["setpoint_set_p50_ms"]
    out["top_imports_help"] = top_imports(["-m", "meshems", "--help"], env)
    set_args = ["setpoint", "set", "--config", config, "n1-bat", "-2.5"]
    out["top_imports_setpoint_set"] = top_imports(["-m", "meshems", *set_args], env)
    out["heavy_modules_help"] = loaded_modules(["--help"], env)
    out["heavy_modules_setpoint_set"] = loaded_modules(set_args, env)
    return out


ROWS = (
    ("python -c pass", "python_pass"),
    ("meshems --help", "help"),
    ("meshems status -o json", "status_json"),
    ("meshems setpoint set", "setpoint_set"),
    ("meshems setpoint set (config cache off)", "setpoint_set_no_cache"),
    ("meshems --help (no bytecode cache)", "help_no_pyc"),
    ("meshems setpoint set (no bytecode cache)", "setpoint_set_no_pyc"),
    ("raw GET /v1/status (in process)", "rtt_status"),
    ("raw setpoint propose (in process)", "rtt_propose"),
)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run for a smoke test")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--calls", type=int, help="sequential calls per command (default 30, quick 8)")
    ap.add_argument("--no-warm", action="store_true",
                    help="skip each command's untimed warm-up call (the first timed calls then pay for "
                    "bytecode and the config cache; for smoke tests)")  # fmt: skip
    args = ap.parse_args()
    out = run(args.quick, args.calls, warm=not args.no_warm)
    if args.json:
        print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in out.items()}))
        return 0
    base = out["python_pass_p50_ms"]
    print(f"{'wall time, ' + str(out['calls']) + ' sequential calls':<42}{'p50 ms':>10}{'p99 ms':>10}"
          f"{'x python':>10}")  # fmt: skip
    for label, key in ROWS:
        p50, p99 = out[f"{key}_p50_ms"], out[f"{key}_p99_ms"]
        print(f"{label:<42}{p50:>10.1f}{p99:>10.1f}{p50 / base:>10.2f}")
    print(f"setpoint set over its raw round trip: {out['setpoint_set_over_rtt_ms']:.1f} ms; the config cache "
          f"saves {out['setpoint_set_no_cache_p50_ms'] - out['setpoint_set_p50_ms']:.1f} ms "
          f"(x{out['setpoint_set_no_cache_over_cache']:.2f}); errors {out['errors']}")  # fmt: skip
    for key in ("help", "setpoint_set"):
        heavy = ", ".join(out[f"heavy_modules_{key}"]) or "none"
        print(f"\ntop imports of `meshems {key.replace('_', ' ')}` (python -X importtime; heavy ones loaded: "
              f"{heavy}):")  # fmt: skip
        print(f"  {'module':<44}{'self ms':>9}{'cumulative ms':>15}")
        for name, self_us, cum_us in out[f"top_imports_{key}"]:
            print(f"  {name:<44}{self_us / 1000:>9.1f}{cum_us / 1000:>15.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
