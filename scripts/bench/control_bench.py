#!/usr/bin/env python3
"""Control benchmark: dispatch compute time, protection latency, the control gap at a leader
kill (and kill -> the next committed dispatch), plan compute time, and control quality on
realistic days of three sites (`plan_days.py`: the node's forecast, planner and dispatch
against no control and the perfect-foresight optimum: peak mode with the default policy and
with a limit that cannot be met, tariff mode under a time-of-use tariff), and the forecaster's
MAE against same time last week on the same data. Never asserts on time.

    python scripts/bench/control_bench.py [--quick] [--json] [--no-cluster]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import plan_days  # noqa: E402
from benchlib import pct  # noqa: E402

from meshems.core.dispatch import dispatch  # noqa: E402
from meshems.core.policy import Policy  # noqa: E402
from meshems.core.process_image import DeviceInfo, image_from_readings  # noqa: E402

# --- 1. dispatch compute time -------------------------------------------------------------------


def zone_image(n_devices: int, seed: int = 0) -> Any:
    rng = np.random.default_rng(seed)
    devices, readings = [], {}
    per_node = 10
    for i in range(n_devices):
        node = f"n{i // per_node}"
        k = i % per_node
        did = f"{node}-d{k}"
        if k == 0:
            devices.append(DeviceInfo(did, "meter", node, 0, 0))
            readings[did] = ("ok", {"power_kw": float(rng.uniform(5, 60))})
        elif k < 5:
            devices.append(DeviceInfo(did, "battery", node, -50, 50))
            readings[did] = (
                "ok",
                {
                    "power_kw": 0.0,
                    "soc_pct": float(rng.uniform(10, 95)),
                    "capacity_kwh": 100.0,
                    "max_charge_kw": 50.0,
                    "max_discharge_kw": 50.0,
                },
            )
        elif k < 8:
            devices.append(DeviceInfo(did, "pv", node, 0, 40))
            readings[did] = ("ok", {"power_kw": float(rng.uniform(0, 40)), "rated_kw": 40.0})
        else:
            devices.append(DeviceInfo(did, "relay", node, 0, 0))
            readings[did] = ("ok", {"relay_1": 1.0, "relay_2": 1.0, "load_1_kw": 5.0, "load_2_kw": 3.0})
    return image_from_readings(devices, readings)


def bench_dispatch(sizes: tuple[int, ...], runs: int) -> dict[int, dict[str, float]]:
    out = {}
    for n in sizes:
        img = zone_image(n)
        loads = [ld.id for ld in img.loads]
        policy = Policy(import_limit_kw=len(img.nodes) * 20.0, shed_order=tuple(loads[: len(loads) // 2]))
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            dispatch(img, policy)
            times.append((time.perf_counter() - t0) * 1000)
        out[n] = {"median_ms": statistics.median(times), "p99_ms": pct(times, 99)}
    return out


def bench_plan_compute(runs: int = 20) -> dict[str, float]:
    """plan() compute time, median ms: (a) three sites (office, household, farm, each with PV
    and a 100 kWh battery on its own node) over 36 h of quarter-hours; (b) 50 batteries on ten
    nodes over a day. Both in peak mode with an import limit, from a late-June day."""
    from meshems.core.planner import BatteryModel, PlanRequest, plan
    from meshems.sim.load_data import SHAPES, STEPS_PER_DAY, pv_year, synthetic_year

    day = 180
    first = day * STEPS_PER_DAY

    def net(seed: int, shape: str, n: int, pv_kw: float) -> np.ndarray:
        load = synthetic_year(seed=seed, shape=shape, peak_kw=60.0)[first : first + n]
        return load - pv_year(seed=seed, peak_kw=pv_kw)[first : first + n]

    base3 = sum(net(i, shape, 144, 40.0) for i, shape in enumerate(SHAPES))
    bats3 = tuple(BatteryModel(f"b{i}", f"n{i}", 100.0, 50.0, 50.0, 50.0) for i in range(3))
    base50 = sum(net(10 + i, SHAPES[i % 3], 96, 40.0) for i in range(10))
    rng = np.random.default_rng(0)
    bats50 = tuple(
        BatteryModel(f"n{i // 5}-b{i % 5}", f"n{i // 5}", 100.0, float(rng.uniform(20, 90)), 50.0, 50.0)
        for i in range(50)
    )
    out = {}
    for key, base, bats in (("plan_ms_3x144", base3, bats3), ("plan_ms_50", base50, bats50)):
        limit = round(0.8 * float(np.max(base)), 1)
        req = PlanRequest(day * 86400.0, tuple(np.asarray(base).tolist()), bats, import_limit_kw=limit)
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            result = plan(req)
            times.append((time.perf_counter() - t0) * 1000)
        if result.status in ("infeasible", "solver_failed"):
            raise RuntimeError(f"{key}: {result.reason}")
        out[key] = round(statistics.median(times), 1)
    return out


# --- 2. protection latency (in process: sim server, poller at 20 Hz, protect(), coil write) -----


async def bench_protection(trials: int, meter_poll_s: float = 0.05) -> dict[str, float]:
    from meshems.adapters.poller import Poller
    from meshems.adapters.profiles import builtin_profiles
    from meshems.core.config import NodeConfig
    from meshems.core.protection import LoadState, protect
    from meshems.sim.server import SimRunner
    from meshems.sim.sitefile import parse_site

    profiles = builtin_profiles()
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    spec = parse_site(
        {
            "site": {"seed": 1, "start_h": 12, "tick_s": 0.01},
            "servers": [{"id": "s", "type": "tcp", "port": port}],
            "devices": [
                {"server": "s", "unit_id": 1, "model": "meter", "profile": "meter"},
                {"server": "s", "unit_id": 2, "model": "battery", "profile": "battery"},
                {"server": "s", "unit_id": 4, "model": "relay", "profile": "relay"},
            ],
        },
        "bench",
    )
    runner = SimRunner(spec, profiles)
    await runner.start()
    node = NodeConfig.model_validate(
        {
            "id": "n1",
            "address": "127.0.0.1",
            "raft_port": 1,
            "api_port": 2,
            "buses": [
                {
                    "id": "s",
                    "type": "tcp",
                    "host": "127.0.0.1",
                    "port": port,
                    "concurrency": 2,
                    "timeout_s": 0.3,
                }
            ],
            "devices": [
                {
                    "id": "m",
                    "kind": "meter",
                    "bus": "s",
                    "unit_id": 1,
                    "profile": "meter",
                    "poll_interval_s": meter_poll_s,
                },
                {
                    "id": "r",
                    "kind": "relay",
                    "bus": "s",
                    "unit_id": 4,
                    "profile": "relay",
                    "poll_interval_s": 0.5,
                },
            ],
        }
    )
    rng = random.Random(7)
    state: dict[str, Any] = {"armed": False, "t0": 0.0, "done": None, "limit": 0.0}
    latencies: list[float] = []
    detect: list[float] = []
    poller: Poller

    def on_poll(dev: Any) -> None:
        if dev.cfg.id != "m" or not state["armed"] or dev.failures:
            return
        grid = dev.values.get("W")
        trips = protect(grid, state["limit"], 1e9, [LoadState("r:1", True, 20.0)], ["r:1"])
        if trips:
            state["armed"] = False
            state["detected"] = time.monotonic()
            asyncio.get_running_loop().create_task(trip())

    async def trip() -> None:
        await poller.write("r", "Relay1", 0.0, verify=False)
        state["done"].set_result(time.monotonic())

    poller = Poller(node, {"m": profiles["meter"], "r": profiles["relay"]}, on_poll=on_poll)
    await poller.start()
    await asyncio.sleep(1.0)
    try:
        for _ in range(trials):
            site = runner.sim.site
            runner.sim.site = site.write_relay(1, True)
            await asyncio.sleep(0.3)
            state["limit"] = runner.sim.site.meter.grid_kw + 10.0
            state["done"] = asyncio.get_running_loop().create_future()
            state["armed"] = True
            await asyncio.sleep(0.2)
            # a random phase against the meter's poll schedule: the trials are 0.8 s apart, a
            # multiple of both poll intervals, so without it every trial of a run would hit the
            # same phase and a run's p50 would be one point between 0 and one interval
            await asyncio.sleep(rng.uniform(0.0, meter_poll_s))
            # the overload: the battery starts charging at 40 kW, the meter sees +40 kW import
            b = runner.sim.site.battery
            t0 = time.monotonic()
            runner.sim.site = dataclasses.replace(runner.sim.site, battery=b.write_setpoint(-40.0))
            runner.sim.tick()
            t1 = await asyncio.wait_for(state["done"], 5)
            latencies.append((t1 - t0) * 1000)
            detect.append((state["detected"] - t0) * 1000)
            runner.sim.site = dataclasses.replace(
                runner.sim.site, battery=runner.sim.site.battery.write_setpoint(0.0)
            )
            await asyncio.sleep(0.3)
    finally:
        await poller.stop()
        await runner.stop()
    return {
        "p50_ms": statistics.median(latencies),
        "p99_ms": pct(latencies, 99),
        "max_ms": max(latencies),
        "detect_p50_ms": statistics.median(detect),
        "trials": len(latencies),
    }


# --- 3. control gap at a leader kill (real node processes and simulated sites) -----------------


def bench_control_gap(trials: int, cycle_s: float = 1.0) -> dict[str, float]:
    from tests.integration.conftest import ClusterFactory

    gaps: list[float] = []
    after_kill: list[float] = []  # kill -> the next committed dispatch (seen 10 ms polls apart)
    with tempfile.TemporaryDirectory() as tmp:
        factory = ClusterFactory(Path(tmp))
        try:
            c = factory(wired=True, policy={"import_limit_kw": 20.0, "cycle_s": cycle_s})
            for _ in range(trials):
                leader = c.wait_leader()
                watcher = next(n for n in ("n1", "n2", "n3") if n != leader)
                node = c.cfg.node(watcher)

                def cycle(node: Any = node) -> int:
                    _, body = c.client.request(node, "GET", "/v1/control", timeout_s=0.5)
                    return (body.get("last_dispatch") or {}).get("cycle", 0)

                end = time.monotonic() + 20
                while cycle() < 2 and time.monotonic() < end:
                    time.sleep(0.05)
                last_cycle, last_change = cycle(), time.monotonic()
                while time.monotonic() < last_change + 0.5:  # see one fresh commit before the kill
                    cyc = cycle()
                    if cyc != last_cycle:
                        last_cycle, last_change = cyc, time.monotonic()
                    time.sleep(0.01)
                c.kill(leader)
                killed = time.monotonic()
                end = killed + 15
                while time.monotonic() < end:
                    cyc = cycle()
                    if cyc != last_cycle:
                        gaps.append((time.monotonic() - last_change) * 1000)
                        after_kill.append((time.monotonic() - killed) * 1000)
                        break
                    time.sleep(0.01)
                c.start(leader)
                c.wait_api(leader)
                time.sleep(2.0)
        finally:
            factory.close()
    return {"median_ms": statistics.median(gaps), "max_ms": max(gaps), "trials": len(gaps),
            "kill_median_ms": statistics.median(after_kill), "kill_max_ms": max(after_kill)}  # fmt: skip


# --- 4. control quality on realistic days: scripts/bench/plan_days.py ----------------------------


def forecast_ratio(quick: bool) -> dict[str, float]:
    """The node's base-load forecast (load model refitted weekly, less the PV forecast) over
    seasonal naive (same time last week) on each benchmark site (`plan_days.forecast_mae`)."""
    from plan_days import SITES, forecast_mae

    return {
        s.name: round(forecast_mae(s, 60, 7 if quick else 120), 3) for s in (SITES[:1] if quick else SITES)
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-cluster", action="store_true", help="skip the control-gap run (node processes)")
    args = ap.parse_args()
    print("bench: dispatch compute time...", file=sys.stderr)
    disp = bench_dispatch((10, 100, 1000), 50 if args.quick else 300)
    print("bench: protection latency...", file=sys.stderr)
    prot20 = asyncio.run(bench_protection(5 if args.quick else 20, 0.05))
    prot = asyncio.run(bench_protection(5 if args.quick else 20, 0.02))
    gap = gap_fast = None
    if not args.no_cluster:
        print("bench: control gap at a leader kill...", file=sys.stderr)
        gap = bench_control_gap(2 if args.quick else 5)
        gap_fast = None if args.quick else bench_control_gap(5, cycle_s=0.5)
    print("bench: plan compute time...", file=sys.stderr)
    plan_ms = bench_plan_compute(5 if args.quick else 20)
    print("bench: control quality on realistic days (this takes minutes)...", file=sys.stderr)
    # 7 days across the year, every weekday, and each site's holiday: 24 days
    days = (100,) if args.quick else tuple(range(60, 360, 43))
    rows = plan_days.bench_days(days, plan_days.SITES[:1] if args.quick else plan_days.SITES, not args.quick)
    summ = plan_days.summary(rows)
    mae = forecast_ratio(args.quick)
    out = {
        "dispatch_ms_10": round(disp[10]["median_ms"], 3),
        "dispatch_ms_100": round(disp[100]["median_ms"], 3),
        "dispatch_ms_1000": round(disp[1000]["median_ms"], 3),
        "dispatch_p99_ms_1000": round(disp[1000]["p99_ms"], 3),
        "protection_p50_ms": round(prot["p50_ms"], 1),
        "protection_p99_ms": round(prot["p99_ms"], 1),  # site meter polled at 50 Hz
        "protection_p99_ms_20hz": round(prot20["p99_ms"], 1),
        "control_gap_ms": None if gap is None else round(gap["max_ms"], 1),
        "control_gap_median_ms": None if gap is None else round(gap["median_ms"], 1),
        "control_gap_ms_cycle_0_5s": None if gap_fast is None else round(gap_fast["max_ms"], 1),
        "kill_to_dispatch_median_ms": None if gap is None else round(gap["kill_median_ms"], 1),
        "kill_to_dispatch_max_ms": None if gap is None else round(gap["kill_max_ms"], 1),
        "plan_ms": plan_ms["plan_ms_3x144"],
        "plan_ms_50_batteries": plan_ms["plan_ms_50"],
        **summ,
        "forecast_mae_vs_seasonal_naive": round(statistics.median(mae.values()), 3),
        "forecast_mae_by_site": mae,
        "days_table": rows,
    }
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{'dispatch compute':<40}{'median ms':>12}{'p99 ms':>10}")
    for n, d in disp.items():
        print(f"{f'  {n} devices':<40}{d['median_ms']:>12.3f}{d['p99_ms']:>10.3f}")
    for hz, pr in ((20, prot20), (50, prot)):
        print(
            f"protection, meter polled at {hz} Hz: meter change -> relay coil write: "
            f"p50 {pr['p50_ms']:.1f} ms, "
            f"p99 {pr['p99_ms']:.1f} ms, max {pr['max_ms']:.1f} ms ({pr['trials']} trials; "
            f"reading that saw it: p50 {pr['detect_p50_ms']:.1f} ms)"
        )
    for cycle, g in ((1.0, gap), (0.5, gap_fast)):
        if g is not None:
            print(
                f"control gap at a leader kill, dispatch cycle {cycle} s "
                "(last commit before -> first after): "
                f"median {g['median_ms']:.0f} ms, max {g['max_ms']:.0f} ms ({g['trials']} trials)"
            )
    print(f"plan compute: 3 sites x 144 steps {plan_ms['plan_ms_3x144']:.1f} ms, "
          f"50 batteries x 96 steps {plan_ms['plan_ms_50']:.1f} ms (medians)")  # fmt: skip
    if gap is not None:
        print(f"kill -> next committed dispatch (1 s cycle): median {gap['kill_median_ms']:.0f} ms, "
              f"max {gap['kill_max_ms']:.0f} ms")  # fmt: skip
    print(
        "\nrealistic days (billing peak = highest quarter-hour mean import; red = peak reduction as a share"
        "\nof the perfect-foresight optimum's; fixed = with a limit the battery cannot hold; react = the"
        "\nreactive rules under that limit; tariff costs under a time-of-use tariff (perf: its ratio with"
        "\na perfect forecast); * a holiday, in the policy's days_off; the optimum ends the day with at"
        "\nleast the run's SoC):"
    )
    plan_days.print_table(rows)
    print(f"medians: peak reduction {summ['peak_reduction_vs_optimum']:.3f} "
          f"(min {summ['peak_reduction_min']:.3f}), "
          f"with an unreachable limit {summ['peak_reduction_unreachable_limit']:.3f} (reactive "
          f"{summ['peak_reduction_unreachable_limit_reactive']:.3f}), days with a charging-induced peak "
          f"{summ['charging_peak_days']}, tariff cost vs optimum {summ['tariff_cost_vs_optimum']:.3f} "
          f"(max {summ['tariff_cost_vs_optimum_max']:.3f}), with a perfect forecast "
          f"{summ['peak_reduction_oracle']:.3f} (tariff max "
          f"{summ['tariff_cost_vs_optimum_oracle_max']:.3f})")  # fmt: skip
    print("forecast MAE vs same time last week (base load = load model - PV clear-sky, refit weekly): "
          + ", ".join(f"{k} {v:.3f}" for k, v in mae.items()))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
