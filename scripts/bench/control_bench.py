#!/usr/bin/env python3
"""Control benchmark: dispatch compute time, protection latency, the control gap at a leader
kill, and control quality over one simulated day against no control and a perfect-foresight
optimum (a linear program over the battery schedule, scipy). Never asserts on time.

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

from benchlib import pct  # noqa: E402

from meshems.core.dispatch import dispatch  # noqa: E402
from meshems.core.policy import Policy  # noqa: E402
from meshems.core.process_image import DeviceInfo, image_from_readings  # noqa: E402
from meshems.sim.physics import Site  # noqa: E402

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

    gaps = []
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
                end = time.monotonic() + 15
                while time.monotonic() < end:
                    cyc = cycle()
                    if cyc != last_cycle:
                        gaps.append((time.monotonic() - last_change) * 1000)
                        break
                    time.sleep(0.01)
                c.start(leader)
                c.wait_api(leader)
                time.sleep(2.0)
        finally:
            factory.close()
    return {"median_ms": statistics.median(gaps), "max_ms": max(gaps), "trials": len(gaps)}


# --- 4. control quality over one simulated day -------------------------------------------------

DT_S = 60.0
STEPS = int(86400 / DT_S)


def idle_day(site: Site) -> tuple[Site, np.ndarray]:
    """Step a site one day with the battery idle; returns the end state and the minute-by-
    minute import with the battery at 0 (the base load the controller must shave)."""
    base = []
    s = site
    for _ in range(STEPS):
        s = s.step(DT_S)
        base.append(s.meter.grid_kw + s.battery_kw)
    return s, np.array(base)


def simulate(site: Site, policy: Policy | None, forecast: np.ndarray | None = None) -> dict[str, float]:
    """One day under dispatch every minute (or none). With `forecast` (base load for the day,
    here yesterday's: seasonal naive), dispatch holds battery energy for the forecast peak."""
    s = site
    imports, throughput = [], 0.0
    devices = [
        DeviceInfo("m", "meter", "n", 0, 0),
        DeviceInfo("b", "battery", "n", -50, 50),
        DeviceInfo("pv", "pv", "n", 0, 40),
    ]
    for t in range(STEPS):
        if policy is not None:
            b = s.battery
            readings = {
                "m": ("ok", {"power_kw": s.meter.grid_kw}),
                "b": (
                    "ok",
                    {
                        "power_kw": b.power_kw,
                        "soc_pct": b.soc_pct,
                        "capacity_kwh": b.capacity_kwh,
                        "max_charge_kw": b.max_charge_kw,
                        "max_discharge_kw": b.max_discharge_kw,
                    },
                ),
                "pv": ("ok", {"power_kw": s.pv_kw, "rated_kw": s.pv.rated_kw}),
            }
            reserve = 0.0
            if forecast is not None:
                ahead = forecast[t + 1 :] - (policy.import_limit_kw - policy.margin_kw)
                reserve = float(np.maximum(ahead, 0).sum() * DT_S / 3600)
            result = dispatch(image_from_readings(devices, readings), policy, reserve_kwh=reserve)
            sp = {d: kw for d, kw, _, _ in result.setpoints}
            s = dataclasses.replace(s, battery=s.battery.write_setpoint(sp.get("b", 0.0)))
            if "pv" in sp and s.pv.rated_kw > 0:
                s = dataclasses.replace(
                    s, pv=s.pv.write_limit_pct(min(100.0, sp["pv"] / s.pv.rated_kw * 100))
                )
        s = s.step(DT_S)
        imports.append(s.meter.grid_kw)
        throughput += abs(s.battery_kw) * DT_S / 3600
    return quality(np.array(imports), policy.import_limit_kw if policy else None, throughput)


def quality(imports: np.ndarray, limit: float | None, throughput: float) -> dict[str, float]:
    over = np.maximum(imports - (limit if limit is not None else np.inf), 0)
    return {
        "peak_kw": float(imports.max()),
        "minutes_over": float((over > 0.05).sum() * DT_S / 60),
        "kwh_over": float(over.sum() * DT_S / 3600),
        "throughput_kwh": throughput,
    }


def optimum(site: Site, base: np.ndarray, soc_floor: float, soc_ceiling: float) -> tuple[float, float]:
    """Perfect foresight: the battery schedule that minimises the peak import (LP)."""
    from scipy.optimize import linprog

    b = site.battery
    n, h = len(base), DT_S / 3600
    eta = b.one_way_efficiency
    cost = np.zeros(2 * n + 1)  # variables: discharge d_t >= 0, charge c_t >= 0, peak P
    cost[-1] = 1.0
    rows, rhs = [], []
    for t in range(n):  # base_t - d_t + c_t <= P
        r = np.zeros(2 * n + 1)
        r[t], r[n + t], r[-1] = -1.0, 1.0, -1.0
        rows.append(r)
        rhs.append(-base[t])
    e0 = b.soc_pct / 100 * b.capacity_kwh
    lo, hi = soc_floor / 100 * b.capacity_kwh, soc_ceiling / 100 * b.capacity_kwh
    cum = np.zeros(2 * n + 1)
    for t in range(n):  # stored energy after step t stays within [lo, hi]
        cum[t] = -h / eta
        cum[n + t] = h * eta
        rows.append(cum.copy())
        rhs.append(hi - e0)
        rows.append(-cum.copy())
        rhs.append(e0 - lo)
    bounds = [(0, b.max_discharge_kw)] * n + [(0, b.max_charge_kw)] * n + [(None, None)]
    res = linprog(cost, A_ub=np.array(rows), b_ub=np.array(rhs), bounds=bounds, method="highs")
    if not res.success:
        raise RuntimeError(res.message)
    d, c = res.x[:n], res.x[n : 2 * n]
    return float(res.x[-1]), float((d + c).sum() * h)


def bench_quality(seeds: tuple[int, ...]) -> list[dict[str, Any]]:
    """Day 2 (a Tuesday) of a site; day 1 serves as the forecast (same time yesterday)."""
    rows = []
    for seed in seeds:
        day1_end, yesterday = idle_day(Site.demo(seed=seed, soc_pct=50.0, t_s=0.0))
        start = dataclasses.replace(day1_end, battery=dataclasses.replace(day1_end.battery, soc_pct=50.0))
        _, base = idle_day(start)
        none = simulate(start, None)
        opt_peak, opt_tp = optimum(start, base, 10.0, 95.0)
        limit = round(opt_peak + 0.1 * (none["peak_kw"] - opt_peak), 1)  # a limit the battery can hold
        policy = Policy(import_limit_kw=limit, soc_floor_pct=10.0, soc_ceiling_pct=95.0, margin_kw=1.0)
        ctrl = simulate(start, policy, forecast=yesterday)
        reactive = simulate(start, policy)
        reduction = (none["peak_kw"] - ctrl["peak_kw"]) / max(1e-9, none["peak_kw"] - opt_peak)
        rows.append(
            {
                "seed": seed,
                "limit_kw": limit,
                "none": none,
                "controlled": ctrl,
                "reactive": reactive,
                "optimum": {"peak_kw": opt_peak, "throughput_kwh": opt_tp},
                "peak_reduction_vs_optimum": reduction,
                "reactive_reduction_vs_optimum": (none["peak_kw"] - reactive["peak_kw"])
                / max(1e-9, none["peak_kw"] - opt_peak),
            }
        )
    return rows


def forecast_ratio(quick: bool) -> float:
    """The load forecaster's MAE over seasonal naive (same time last week) on a synthetic year
    (see scripts/bench/forecast_skill.py for the full table)."""
    from meshems.core.forecast_eval import evaluate
    from meshems.sim.load_data import synthetic_year

    series = synthetic_year(seed=1, shape="office", start_weekday=3)  # day 0 of Unix time is a Thursday
    res = evaluate(series, 0.0, 900.0, train_days=56, test_days=14 if quick else 60)
    return round(res["ratio"], 3)


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
    print("bench: control quality over a simulated day...", file=sys.stderr)
    qual = bench_quality((1,) if args.quick else (1, 2, 3))
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
        "peak_reduction_vs_optimum": round(
            statistics.median(r["peak_reduction_vs_optimum"] for r in qual), 3
        ),
        "forecast_mae_vs_seasonal_naive": forecast_ratio(args.quick),
        "quality": qual,
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
    print(f"\n{'one day, 1 min':<16}{'limit':>7}{'peak kW':>9}{'min over':>9}{'kWh over':>9}{'batt kWh':>9}")
    for r in qual:
        for name in ("none", "reactive", "controlled", "optimum"):
            q = r[name]
            print(
                f"{'seed ' + str(r['seed']) + ' ' + name:<16}{r['limit_kw']:>7.1f}{q['peak_kw']:>9.1f}"
                f"{q.get('minutes_over', float('nan')):>9.0f}{q.get('kwh_over', float('nan')):>9.2f}"
                f"{q['throughput_kwh']:>9.1f}"
            )
        print(
            f"  peak reduction vs the optimum's: {r['peak_reduction_vs_optimum']:.2f} with the forecast "
            "reserve, "
            f"{r['reactive_reduction_vs_optimum']:.2f} reactive only"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
