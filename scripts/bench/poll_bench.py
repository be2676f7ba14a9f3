#!/usr/bin/env python3
"""Polling benchmark: the meshems poller against simulated meters served by real pymodbus
servers in their own processes, beside a naive sequential loop and the bare pymodbus client.

For each size (100, 500, 2000 devices x 10 registers, 1 s interval) it reports achieved
polls/s, p50/p99 lateness against each device's schedule, CPU % of one core and CPU us per
poll of the poller process alone, and its RSS. In the same run: a naive sequential loop
with the same pymodbus client, and the bare client's CPU us per request at the same
concurrency, two ways: back to back (as fast as the servers answer: the event loop then
serves many answers per pass, the cheapest a request can be) and paced (the poller's own job:
every device once per interval on its own slot, with nothing else; the floor for us), with
ratios. One more row: a silent device on a shared bus
and how much the other devices' rate changes. And the 60-point meter profile (the built-in
Eastron SDM630, float32 input registers): requests per poll from its read plan, and the
poller's rate and CPU against simulated SDM630s. Rows marked L repeat a size (default 2000)
against one light responder process (`modbus_responder.py`) instead of ten pymodbus servers,
which at 2,000 requests/s take the 2 cores from what is measured. Never asserts on time.

    python scripts/bench/poll_bench.py [--quick] [--json] [--side-by-side]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
from tests.conftest import free_ports  # noqa: E402

PROFILE = str(Path(__file__).resolve().parent / "bench-meter.yaml")
METER60 = "sdm630"  # the built-in 60-point meter profile
UNITS_PER_SERVER = 200
#: seconds each client runs before it is measured (--warmup-s; the silent-device rows
#: SILENT_SETTLE_S more, --silent-settle-s)
WARMUP_S = 3.0
SILENT_SETTLE_S = 2.0
#: --side-by-side: the rows that are not the poller's own measurement run at the same time
SIDE_BY_SIDE = False


def together(*fns: Any) -> list[Any]:
    """Each fn's result, in order: one after another, or at once with --side-by-side."""
    if not SIDE_BY_SIDE:
        return [fn() for fn in fns]
    with ThreadPoolExecutor(len(fns)) as pool:
        return [f.result() for f in [pool.submit(fn) for fn in fns]]


# --- simulators (separate processes) ------------------------------------------------------


class Sims:
    def __init__(
        self, folder: Path, devices: int, per_server: int = UNITS_PER_SERVER, profile: str = PROFILE
    ) -> None:
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []
        self.servers: list[tuple[int, int]] = []  # (port, units)
        n_servers = (devices + per_server - 1) // per_server
        ports = free_ports(n_servers)
        left = devices
        for i, port in enumerate(ports):
            units = min(per_server, left)
            left -= units
            self.servers.append((port, units))
            site = {
                "site": {"seed": i, "speed": 1.0, "tick_s": 1.0},
                "servers": [{"id": "s", "type": "tcp", "host": "127.0.0.1", "port": port}],
                "devices": [
                    {"server": "s", "unit_id": 1, "model": "meter", "profile": profile, "count": units}
                ],
            }
            (folder / f"site{i}.yaml").write_text(yaml.safe_dump(site))

    def start(self) -> None:
        for i in range(len(self.servers)):
            ready = self.folder / f"site{i}.ready"
            self.procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "meshems",
                        "sim",
                        "--site",
                        str(self.folder / f"site{i}.yaml"),
                        "--ready-file",
                        str(ready),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    cwd=ROOT,
                )
            )
        end = time.monotonic() + 60
        for i in range(len(self.servers)):
            ready = self.folder / f"site{i}.ready"
            while not (ready.exists() and ready.stat().st_size):
                if time.monotonic() > end:
                    raise TimeoutError("simulators did not start")
                time.sleep(0.05)

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


# --- worker side (runs in its own process so its CPU is its own) ----------------------------


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def run_poller(spec: dict[str, Any]) -> dict[str, Any]:
    from meshems.adapters.poller import Poller
    from meshems.adapters.profiles import load_profile
    from meshems.core.config import NodeConfig

    profile = load_profile(spec.get("profile", PROFILE))
    buses, devices = [], []
    for i, (port, units) in enumerate(spec["servers"]):
        buses.append(
            {
                "id": f"b{i}",
                "type": "tcp",
                "host": "127.0.0.1",
                "port": port,
                "concurrency": spec["concurrency"],
                "timeout_s": spec["timeout_s"],
            }
        )
        for u in range(1, units + 1):
            devices.append(
                {
                    "id": f"d{i}-{u}",
                    "kind": "meter",
                    "bus": f"b{i}",
                    "unit_id": u,
                    "profile": "bench",
                    "poll_interval_s": spec["interval_s"],
                }
            )
    node = NodeConfig.model_validate(
        {
            "id": "bench",
            "address": "127.0.0.1",
            "raft_port": 1,
            "api_port": 2,
            "buses": buses,
            "devices": devices,
        }
    )
    poller = Poller(node, {d.id: profile for d in node.devices})
    await poller.start()
    await asyncio.sleep(spec["warmup_s"])
    polls0 = {k: d.counters["polls"] for k, d in poller.devices.items()}
    oks0 = sum(d.counters["ok"] for d in poller.devices.values())
    for d in poller.devices.values():
        d.lateness_s.clear()
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(spec["measure_s"])
    cpu1, t1 = time.process_time(), time.monotonic()
    polls = {k: d.counters["polls"] - polls0[k] for k, d in poller.devices.items()}
    oks = sum(d.counters["ok"] for d in poller.devices.values()) - oks0
    late = sorted(x for d in poller.devices.values() for x in d.lateness_s)
    silent = spec.get("silent_unit")
    others = [v for k, v in polls.items() if k != f"d0-{silent}"]
    result = {
        "requests_per_poll": len(profile.read_blocks()),
        "polls_per_s": sum(polls.values()) / (t1 - t0),
        "ok_per_s": oks / (t1 - t0),
        "others_rate_hz": statistics.mean(others) / (t1 - t0) if others else 0.0,
        "lateness_p50_ms": 1000 * late[len(late) // 2] if late else float("nan"),
        "lateness_p99_ms": 1000 * late[min(len(late) - 1, int(len(late) * 0.99))] if late else float("nan"),
        "cpu_pct": 100 * (cpu1 - cpu0) / (t1 - t0),
        "cpu_us_per_poll": 1e6 * (cpu1 - cpu0) / max(1, sum(polls.values())),
        "rss_mb": rss_mb(),
        "errors": sum(
            d.counters[k]
            for d in poller.devices.values()
            for k in (
                "timeouts",
                "crc_errors",
                "frame_errors",
                "connect_errors",
                "exceptions",
                "other_errors",
            )
        ),
    }
    await poller.stop()
    return result


async def connect_clients(spec: dict[str, Any], per_server: int) -> list[tuple[Any, int]]:
    """`per_server` bare pymodbus clients to each simulator, connected, with its unit count."""
    from pymodbus.client import AsyncModbusTcpClient

    clients = []
    for port, units in spec["servers"]:
        for _ in range(per_server):
            c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=spec["timeout_s"], retries=0)
            await c.connect()
            clients.append((c, units))
    return clients


async def run_naive(spec: dict[str, Any]) -> dict[str, Any]:
    """A naive loop: one pymodbus client per server, devices read one after another."""

    clients = await connect_clients(spec, 1)
    interval = spec["interval_s"]
    polls, lateness = 0, []
    t_end = time.monotonic() + spec["warmup_s"] + spec["measure_s"]
    t_measure = time.monotonic() + spec["warmup_s"]
    cpu0 = t0 = None
    cycle_start = time.monotonic()
    while time.monotonic() < t_end:
        if cpu0 is None and time.monotonic() >= t_measure:
            cpu0, t0, polls = time.process_time(), time.monotonic(), 0
        for c, units in clients:
            for u in range(1, units + 1):
                await c.read_holding_registers(40070, count=10, device_id=u)
                polls += 1
        done = time.monotonic()
        lateness.append(max(0.0, done - cycle_start - interval))
        cycle_start = max(cycle_start + interval, done)
        await asyncio.sleep(max(0.0, cycle_start - time.monotonic()))
    cpu1, t1 = time.process_time(), time.monotonic()
    for c, _ in clients:
        c.close()
    assert cpu0 is not None and t0 is not None
    lateness.sort()
    return {
        "polls_per_s": polls / (t1 - t0),
        "cpu_us_per_poll": 1e6 * (cpu1 - cpu0) / max(1, polls),
        "cycle_overrun_p50_ms": 1000 * lateness[len(lateness) // 2],
    }


async def run_bare(spec: dict[str, Any]) -> dict[str, Any]:
    """The bare client at the same concurrency: N clients per server, back-to-back requests."""

    clients = await connect_clients(spec, spec["concurrency"])
    stop = time.monotonic() + spec["measure_s"]
    counts = [0] * len(clients)

    async def loop(i: int, c: Any, units: int) -> None:
        u = 0
        while time.monotonic() < stop:
            u = u % units + 1
            await c.read_holding_registers(40070, count=10, device_id=u)
            counts[i] += 1

    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.gather(*(loop(i, c, u) for i, (c, u) in enumerate(clients)))
    cpu1, t1 = time.process_time(), time.monotonic()
    for c, _ in clients:
        c.close()
    return {
        "requests_per_s": sum(counts) / (t1 - t0),
        "cpu_us_per_request": 1e6 * (cpu1 - cpu0) / sum(counts),
    }


async def run_bare_paced(spec: dict[str, Any]) -> dict[str, Any]:
    """The bare client doing the poller's job: the same connections, every device read once per
    interval on its own slot (spread over the interval like the poller's first polls), one
    `asyncio.sleep` to each slot; no bookkeeping, no decoding, no health rules."""
    conc, interval = spec["concurrency"], spec["interval_s"]
    clients = await connect_clients(spec, conc)
    # connection k of a server reads its units u with u % conc == k
    loops = [
        (c, [u for u in range(1, units + 1) if u % conc == i % conc]) for i, (c, units) in enumerate(clients)
    ]
    start = time.monotonic() + 0.1
    t_measure = start + spec["warmup_s"]
    stop = t_measure + spec["measure_s"]
    counts = [0] * len(loops)
    late: list[float] = []

    async def loop(i: int, c: Any, units: list[int]) -> None:
        slot = interval / max(1, len(units))
        offset = (i % 100) / 100 * slot
        k = 0
        while True:
            due = start + offset + k * slot
            now = time.monotonic()
            if due >= stop:
                return
            if due > now:
                await asyncio.sleep(due - now)
            elif due >= t_measure:
                late.append(now - due)
            await c.read_holding_registers(40070, count=10, device_id=units[k % len(units)])
            if due >= t_measure:
                counts[i] += 1
            k += 1

    tasks = [asyncio.create_task(loop(i, c, u)) for i, (c, u) in enumerate(loops) if u]
    await asyncio.sleep(max(0.0, t_measure - time.monotonic()))
    cpu0, t0 = time.process_time(), time.monotonic()
    await asyncio.sleep(max(0.0, stop - time.monotonic()))
    cpu1, t1 = time.process_time(), time.monotonic()
    await asyncio.gather(*tasks)
    for c, _ in loops:
        c.close()
    late.sort()
    return {
        "requests_per_s": sum(counts) / (t1 - t0),
        "cpu_us_per_request": 1e6 * (cpu1 - cpu0) / max(1, sum(counts)),
        "late_share": len(late) / max(1, sum(counts)),
    }


def worker(mode: str, spec_json: str) -> None:
    import logging

    logging.getLogger("pymodbus").setLevel(logging.CRITICAL)
    spec = json.loads(spec_json)
    fn = {"poller": run_poller, "naive": run_naive, "bare": run_bare, "paced": run_bare_paced}[mode]
    print(json.dumps(asyncio.run(fn(spec))))


def in_worker(mode: str, spec: dict[str, Any]) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", mode, "--spec", json.dumps(spec)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=ROOT,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{mode} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# --- orchestration ----------------------------------------------------------------------------


def poll_spec(
    sims: Sims, concurrency: int, measure_s: float, warmup_s: float | None = None, **extra: Any
) -> dict[str, Any]:
    """A worker's spec: the simulators' servers polled at 1 Hz with a 0.5 s timeout."""
    warmup_s = WARMUP_S if warmup_s is None else warmup_s
    return {"servers": sims.servers, "concurrency": concurrency, "timeout_s": 0.5, "interval_s": 1.0,
            "warmup_s": warmup_s, "measure_s": measure_s, **extra}  # fmt: skip


def measure_size(
    folder: Path, devices: int, measure_s: float, concurrency: int, light: bool = False
) -> dict[str, Any]:
    """One row: the poller, naive, bare and paced clients against the same servers (`light`:
    one light responder process instead of pymodbus servers, `modbus_responder`)."""
    if light:
        from modbus_responder import LightSims

        n_servers = (devices + UNITS_PER_SERVER - 1) // UNITS_PER_SERVER
        sims: Any = LightSims(folder, devices, UNITS_PER_SERVER, free_ports(n_servers))
    else:
        sims = Sims(folder, devices)
    sims.start()
    try:
        spec = poll_spec(sims, concurrency, measure_s)
        poller = in_worker("poller", spec)
        naive, paced = together(lambda: in_worker("naive", spec), lambda: in_worker("paced", spec))
        # alone: back to back, it takes the servers from a naive cycle (which must fit the run)
        bare = in_worker("bare", {**spec, "measure_s": min(5.0, measure_s)})
    finally:
        sims.stop()
    return {
        "devices": devices,
        "light": light,
        "poller": poller,
        "naive": naive,
        "bare": bare,
        "paced": paced,
    }


def measure_silent(folder: Path, measure_s: float) -> dict[str, Any]:
    """100 devices on ONE shared bus (one connection): others' rate with and without a silent one."""

    def one(silent: bool) -> dict[str, Any]:
        sub = folder / ("silent" if silent else "clean")
        sub.mkdir()
        sims = Sims(sub, 100, per_server=100)
        if silent:  # a silent device from the start, via the site file's faults
            site_file = sub / "site0.yaml"
            doc = yaml.safe_load(site_file.read_text())
            doc["faults"] = [{"server": "s", "unit_id": 1, "kind": "silent"}]
            site_file.write_text(yaml.safe_dump(doc))
        sims.start()
        try:
            spec = poll_spec(
                sims, 1, measure_s, warmup_s=WARMUP_S + SILENT_SETTLE_S, silent_unit=1 if silent else None
            )
            return in_worker("poller", spec)
        finally:
            sims.stop()

    results = dict(zip(("clean", "silent"), together(lambda: one(False), lambda: one(True)), strict=True))
    clean, dirty = results["clean"]["others_rate_hz"], results["silent"]["others_rate_hz"]
    return {**results, "rate_change_pct": 100 * (dirty - clean) / clean}


def measure_meter60(folder: Path, devices: int, measure_s: float, concurrency: int) -> dict[str, Any]:
    """The poller against simulated SDM630s (60 float32 input registers, 3 requests a poll)."""
    sims = Sims(folder, devices, profile=METER60)
    sims.start()
    try:
        result = in_worker("poller", poll_spec(sims, concurrency, measure_s, profile=METER60))
    finally:
        sims.stop()
    return {"devices": devices, **result}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="100 and 500 devices, short runs")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--concurrency", type=int, default=4, help="connections per simulated server")
    ap.add_argument("--sizes", help="comma-separated device counts (default 100,500,2000)")
    ap.add_argument(
        "--meter60", type=int, default=200, help="simulated SDM630s for the 60-point row (0: skip)"
    )
    ap.add_argument("--measure-s", type=float, help="seconds measured per run (default 10; --quick 5)")
    ap.add_argument("--light-sizes", help="sizes measured again against the light responder (default 2000; "
                    "--quick none; 0: none)")  # fmt: skip
    ap.add_argument(
        "--warmup-s", type=float, default=3.0, help="seconds each client runs before it is measured"
    )
    ap.add_argument("--silent-settle-s", type=float, default=2.0,
                    help="extra warm-up seconds of the silent-device rows (default 2)")  # fmt: skip
    ap.add_argument("--side-by-side", action="store_true",
                    help="run the naive and paced clients at the same time (after the poller alone), "
                    "and the two silent-device rows and the 60-point row at the same time: a shorter "
                    "run whose baseline figures share the cores (for smoke tests)")  # fmt: skip
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--spec", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.spec)
        return 0
    global WARMUP_S, SILENT_SETTLE_S, SIDE_BY_SIDE
    SIDE_BY_SIDE = args.side_by_side
    WARMUP_S = max(0.5, args.warmup_s)
    SILENT_SETTLE_S = max(0.0, args.silent_settle_s)
    sizes = (100, 500) if args.quick else (100, 500, 2000)
    if args.sizes:
        sizes = tuple(int(x) for x in args.sizes.split(","))
    measure_s = args.measure_s or (5.0 if args.quick else 10.0)
    rows = []
    with tempfile.TemporaryDirectory(prefix="meshems-pollbench-") as tmp:
        for n in sizes:
            print(f"bench: {n} devices...", file=sys.stderr)
            folder = Path(tmp) / f"n{n}"
            folder.mkdir()
            rows.append(measure_size(folder, n, measure_s, args.concurrency))
        light = "" if args.quick else "2000"
        for n in (int(x) for x in (args.light_sizes or light).split(",") if x and int(x) > 0):
            print(f"bench: {n} devices, light responder...", file=sys.stderr)
            folder = Path(tmp) / f"n{n}-light"
            folder.mkdir()
            rows.append(measure_size(folder, n, measure_s, args.concurrency, light=True))
        (Path(tmp) / "silent").mkdir()
        (Path(tmp) / "meter60").mkdir()
        meters = min(50, args.meter60) if args.quick else args.meter60

        def silent_rows() -> dict[str, Any]:
            print("bench: silent device on a shared bus...", file=sys.stderr)
            return measure_silent(Path(tmp) / "silent", measure_s)

        def meter60_row() -> dict[str, Any] | None:
            if not args.meter60:
                return None
            print(f"bench: {args.meter60} x 60-point meter (SDM630)...", file=sys.stderr)
            return measure_meter60(Path(tmp) / "meter60", meters, measure_s, args.concurrency)

        silent, meter60 = together(silent_rows, meter60_row)
    out: dict[str, Any] = {
        "sizes": rows,
        "silent": silent,
        "silent_device_rate_change_pct": round(silent["rate_change_pct"], 2),
        "meter60_requests_per_poll": meter60_requests_per_poll(),
        "dense60_requests_per_poll": dense60_requests_per_poll(),
    }
    if meter60 is not None:
        out["meter60"] = meter60
        out["meter60_polls_per_s"] = round(meter60["polls_per_s"], 1)
        out["meter60_cpu_us_per_poll"] = round(meter60["cpu_us_per_poll"], 1)
        out["meter60_errors"] = meter60["errors"]
    for r in rows:
        n, p, b = f"{r['devices']}{'_light' if r['light'] else ''}", r["poller"], r["bare"]
        out[f"polls_per_s_{n}"] = round(p["polls_per_s"], 1)
        out[f"cpu_pct_{n}"] = round(p["cpu_pct"], 1)
        out[f"lateness_p50_ms_{n}"] = round(p["lateness_p50_ms"], 2)
        out[f"lateness_p99_ms_{n}"] = round(p["lateness_p99_ms"], 2)
        out[f"rss_mb_{n}"] = round(p["rss_mb"], 1)
        out[f"cpu_us_per_poll_{n}"] = round(p["cpu_us_per_poll"], 1)
        out[f"cpu_per_poll_vs_bare_{n}"] = round(p["cpu_us_per_poll"] / b["cpu_us_per_request"], 2)
        paced = r["paced"]["cpu_us_per_request"]
        out[f"cpu_per_poll_vs_bare_paced_{n}"] = round(p["cpu_us_per_poll"] / paced, 2)
        out[f"errors_{n}"] = p["errors"]
    if args.json:
        print(json.dumps(out))
        return 0
    header = (
        "devices",
        "polls/s",
        "late p50",
        "late p99",
        "CPU %",
        "us/poll",
        "RSS MB",
        "naive p/s",
        "naive us",
        "bare us",
        "vs bare",
        "paced us",
        "vs paced",
        "vs naive",
    )
    print(" ".join(f"{h:>9}" for h in header))
    for r in rows:
        p, nv, b = r["poller"], r["naive"], r["bare"]
        cells = [
            f"{r['devices']}{'L' if r['light'] else ''}",
            f"{p['polls_per_s']:.1f}",
            f"{p['lateness_p50_ms']:.1f}ms",
            f"{p['lateness_p99_ms']:.1f}ms",
            f"{p['cpu_pct']:.1f}",
            f"{p['cpu_us_per_poll']:.1f}",
            f"{p['rss_mb']:.1f}",
            f"{nv['polls_per_s']:.1f}",
            f"{nv['cpu_us_per_poll']:.1f}",
            f"{b['cpu_us_per_request']:.1f}",
            f"{p['cpu_us_per_poll'] / b['cpu_us_per_request']:.2f}x",
            f"{r['paced']['cpu_us_per_request']:.1f}",
            f"{p['cpu_us_per_poll'] / r['paced']['cpu_us_per_request']:.2f}x",
            f"{p['cpu_us_per_poll'] / nv['cpu_us_per_poll']:.2f}x",
        ]
        print(" ".join(f"{c:>9}" for c in cells))
    s = silent
    print(
        f"silent device on a shared bus (100 devices, one connection): others' rate "
        f"{s['clean']['others_rate_hz']:.3f} Hz -> {s['silent']['others_rate_hz']:.3f} Hz "
        f"({s['rate_change_pct']:+.2f} %)"
    )
    print(
        "errors (failed polls) per size: "
        + ", ".join(f"{r['devices']}{'L' if r['light'] else ''}: {r['poller']['errors']}" for r in rows)
    )
    if any(r["light"] for r in rows):
        print("L: the same sizes against one light responder process (scripts/bench/modbus_responder.py)")
        print("   instead of pymodbus servers: the rig no longer takes the 2 cores from what is measured")
    m = meter60
    line = (
        f"60-point meter profile (built-in {METER60}): {out['meter60_requests_per_poll']} requests per poll"
    )
    if m is not None:
        line += (
            f"; {m['devices']} simulated meters: {m['polls_per_s']:.1f} polls/s, "
            f"CPU {m['cpu_us_per_poll']:.1f} us/poll "
            f"({m['cpu_us_per_poll'] / m['requests_per_poll']:.1f} us/request), "
            f"late p99 {m['lateness_p99_ms']:.1f} ms, errors {m['errors']}"
        )
    print(line)
    print(
        f"60-point dense map (60 float32 in a row, no device max_read): "
        f"{out['dense60_requests_per_poll']} request(s) per poll"
    )
    return 0


def meter60_requests_per_poll() -> int:
    from meshems.adapters.profiles import load_profile

    return len(load_profile(METER60).read_blocks())


def dense60_requests_per_poll() -> int:
    """Requests per poll of a dense 60-point meter map (60 float32 in a row, 120 registers):
    the planner's own limit (125 registers, no device `max_read`), unlike the SDM630 whose map
    has wide gaps and whose maker caps a request at 40 parameters."""
    from meshems.core.profile_schema import parse_profile

    points = [
        {"name": f"P{i}", "address": 2 * i, "type": "float32", "table": "input", "unit": "kW"}
        for i in range(60)
    ]
    doc = {
        "name": "dense60",
        "kind": "meter",
        "description": "bench",
        "points": points,
        "roles": {"power_kw": "P0"},
    }
    return len(parse_profile(doc, "dense60").read_blocks())


if __name__ == "__main__":
    raise SystemExit(main())
