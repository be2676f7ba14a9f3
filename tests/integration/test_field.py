"""Field I/O against simulated devices served by real pymodbus servers: reads, scaled
values, writes with read-back, the revert timeout, every fault kind, RTU over a socat pty
and over TCP, and mbpoll as an independent Modbus client."""

from __future__ import annotations

import asyncio
import itertools
import shutil
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from meshems.adapters.poller import Poller
from meshems.adapters.profiles import builtin_profiles
from meshems.core.config import NodeConfig
from meshems.sim.server import SimRunner
from meshems.sim.sitefile import parse_site
from tests.conftest import free_ports

pytestmark = pytest.mark.integration
PROFILES = builtin_profiles()


def site(servers: list[dict[str, Any]], faults: tuple = (), **params: Any) -> Any:
    devices = []
    for s in servers:
        devices += [
            {"server": s["id"], "unit_id": 1, "model": "meter", "profile": "meter"},
            {"server": s["id"], "unit_id": 2, "model": "battery", "profile": "battery"},
            {"server": s["id"], "unit_id": 3, "model": "pv", "profile": "pv"},
            {"server": s["id"], "unit_id": 4, "model": "relay", "profile": "relay"},
        ]
    return parse_site(
        {"site": {"seed": 3, "start_h": 12, "soc_pct": 50, **params}, "servers": servers,
         "devices": devices, "faults": list(faults)}, "test-site",
    )  # fmt: skip


def node(
    buses: list[dict[str, Any]], per_bus: dict[str, list[int]] | None = None, interval: float = 0.2
) -> NodeConfig:
    kinds = {1: ("meter", "meter"), 2: ("battery", "battery"), 3: ("pv", "pv"), 4: ("relay", "relay")}
    devices = []
    for b in buses:
        for unit in (per_bus or {}).get(b["id"], [1, 2, 3, 4]):
            kind, profile = kinds[unit]
            devices.append(
                {
                    "id": f"{b['id']}-{kind}",
                    "kind": kind,
                    "bus": b["id"],
                    "unit_id": unit,
                    "profile": profile,
                    "poll_interval_s": interval,
                    "min_kw": -50,
                    "max_kw": 50,
                }
            )
    return NodeConfig.model_validate(
        {
            "id": "n1",
            "address": "127.0.0.1",
            "raft_port": 1,
            "api_port": 2,
            "buses": buses,
            "devices": devices,
        }
    )


def run(coro: Callable[[], Awaitable[Any]]) -> Any:
    return asyncio.run(asyncio.wait_for(coro(), timeout=60))


async def started(spec: Any, cfg: NodeConfig) -> tuple[SimRunner, Poller]:
    runner = SimRunner(spec, {p: PROFILES[p] for p in PROFILES})
    await runner.start()
    poller = Poller(cfg, {d.id: PROFILES[d.profile] for d in cfg.devices})
    await poller.start()
    return runner, poller


async def until(fn: Callable[[], bool], timeout_s: float = 10.0, what: str = "condition") -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if fn():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def status(poller: Poller, dev_id: str) -> dict[str, Any]:
    return poller.device_status(poller.devices[dev_id])


def test_reads_scaled_values_over_tcp() -> None:
    (port,) = free_ports(1)

    async def body() -> None:
        runner, poller = await started(
            site([{"id": "a", "type": "tcp", "port": port}]),
            node([{"id": "a", "type": "tcp", "host": "127.0.0.1", "port": port}]),
        )
        try:
            await until(
                lambda: all(status(poller, d)["state"] == "ok" for d in poller.devices), what="all ok"
            )
            bat = status(poller, "a-battery")["values"]
            assert bat["capacity_kwh"] == pytest.approx(100.0)
            assert bat["max_charge_kw"] == pytest.approx(50.0)
            assert bat["soc_pct"] == pytest.approx(50.0, abs=0.1)
            sim = runner.sim.site
            meter = status(poller, "a-meter")["values"]
            assert meter["power_kw"] == pytest.approx(sim.meter.grid_kw, abs=0.5)
            assert meter["frequency_hz"] == pytest.approx(50.0)
            pv = status(poller, "a-pv")["values"]
            assert pv["rated_kw"] == pytest.approx(40.0) and 0 < pv["power_kw"] <= 40.0
            relays = status(poller, "a-relay")["values"]
            assert relays["relay_1"] == 1.0 and relays["load_1_kw"] > 0
        finally:
            await poller.stop()
            await runner.stop()

    run(body)


def test_write_is_read_back_and_reverts_when_not_refreshed() -> None:
    (port,) = free_ports(1)

    async def body() -> None:
        runner, poller = await started(
            site([{"id": "a", "type": "tcp", "port": port}]),
            node([{"id": "a", "type": "tcp", "host": "127.0.0.1", "port": port}], {"a": [2, 4]}),
        )
        try:
            res = await poller.write("a-battery", "WSetRvrtTms", 1)
            assert res["ok"] and res["read_back"] == 1
            res = await poller.write("a-battery", "WSet", -12.5)
            assert res == {"ok": True, "code": "OK", "message": "", "written": -12.5, "read_back": -12.5}
            assert runner.sim.site.battery.setpoint_kw == pytest.approx(-12.5)
            # the same absolute write again is harmless (idempotent)
            assert (await poller.write("a-battery", "WSet", -12.5))["ok"]
            await asyncio.sleep(0.6)
            assert runner.sim.site.battery.setpoint_kw == pytest.approx(-12.5)  # not yet
            await asyncio.sleep(1.2)
            assert runner.sim.site.battery.setpoint_kw == 0.0  # reverted to the safe default
            await until(
                lambda: status(poller, "a-battery")["values"]["setpoint_kw"] == 0.0, what="poll sees it"
            )
            # a value outside the point's range never reaches the wire
            res = await poller.write("a-battery", "WSet", 5000)
            assert not res["ok"] and res["code"] == "E_LIMIT"
            # relays switch loads in the physics
            assert (await poller.write("a-relay", "Relay2", 0))["ok"]
            assert not runner.sim.site.relays.is_closed(2)
        finally:
            await poller.stop()
            await runner.stop()

    run(body)


def test_each_fault_kind_is_counted_and_others_keep_their_rate() -> None:
    (port,) = free_ports(1)
    faults = [
        {"server": "a", "unit_id": 3, "kind": "silent"},
        {"server": "a", "unit_id": 4, "kind": "garbage"},
        {"server": "a", "unit_id": 1, "kind": "exception", "code": 0x0B},
    ]

    async def body() -> None:
        runner, poller = await started(
            site([{"id": "a", "type": "tcp", "port": port}], faults=faults),
            node(
                [{"id": "a", "type": "tcp", "host": "127.0.0.1", "port": port, "timeout_s": 0.1}],
                interval=0.5,
            ),
        )
        try:
            await asyncio.sleep(4.0)  # the failing devices are backed off by now
            polls_before = status(poller, "a-battery")["polls"]
            await asyncio.sleep(4.0)
            good_rate = (status(poller, "a-battery")["polls"] - polls_before) / 4.0
            silent, garbage, gw, good = (
                status(poller, d) for d in ("a-pv", "a-relay", "a-meter", "a-battery")
            )
            assert silent["timeouts"] >= 3 and silent["state"] == "defective"
            assert garbage["frame_errors"] >= 3 and garbage["state"] == "defective"
            assert gw["timeouts"] >= 3
            assert gw["exceptions"] == {"0x0B": gw["timeouts"]}  # 0x0B counts in the E_TIMEOUT class
            # backed off: the failing devices were polled far less often than every 0.5 s
            assert silent["polls"] <= 8 and garbage["polls"] <= 8
            # the healthy device on the same connection kept its cadence and was never stale
            assert good["state"] == "ok" and good["timeouts"] == 0
            assert good_rate == pytest.approx(2.0, rel=0.15)
            # heal: slow answers within the timeout are fine, an illegal address is counted by code
            runner.sim.set_fault({"server": "a", "unit_id": 3, "kind": "none"})
            runner.sim.set_fault({"server": "a", "unit_id": 4, "kind": "slow", "delay_s": 0.05})
            runner.sim.set_fault({"server": "a", "unit_id": 1, "kind": "exception", "code": 2})
            await until(lambda: status(poller, "a-pv")["state"] == "ok", timeout_s=40, what="pv recovers")
            await until(
                lambda: status(poller, "a-relay")["state"] == "ok", timeout_s=40, what="relay recovers"
            )
            await until(
                lambda: status(poller, "a-meter")["exceptions"].get("0x02", 0) > 0,
                timeout_s=40,
                what="0x02 counted",
            )
        finally:
            await poller.stop()
            await runner.stop()

    run(body)


def test_connection_loss_reconnects_forever() -> None:
    (port,) = free_ports(1)

    async def body() -> None:
        cfg = node(
            [{"id": "a", "type": "tcp", "host": "127.0.0.1", "port": port, "timeout_s": 0.2}], {"a": [2]}
        )
        poller = Poller(cfg, {d.id: PROFILES[d.profile] for d in cfg.devices})
        await poller.start()
        try:
            await asyncio.sleep(1.0)  # nothing listens yet
            assert status(poller, "a-battery")["connect_errors"] >= 1
            runner = SimRunner(site([{"id": "a", "type": "tcp", "port": port}]), PROFILES)
            await runner.start()
            await until(
                lambda: status(poller, "a-battery")["state"] == "ok", timeout_s=40, what="first connect"
            )
            await runner.stop()
            await until(lambda: status(poller, "a-battery")["failures_in_a_row"] >= 1, what="loss seen")
            runner = SimRunner(site([{"id": "a", "type": "tcp", "port": port}]), PROFILES)
            await runner.start()
            await until(
                lambda: status(poller, "a-battery")["failures_in_a_row"] == 0,
                timeout_s=40,
                what="reconnected",
            )
            await runner.stop()
        finally:
            await poller.stop()

    run(body)


@pytest.mark.skipif(shutil.which("socat") is None, reason="socat is installed by scripts/setup")
def test_rtu_over_a_pty_and_over_tcp_with_crc_errors(tmp_path: Path) -> None:
    (port,) = free_ports(1)
    link = str(tmp_path / "ttyGW0")
    servers = [
        {"id": "pty", "type": "rtu-pty", "link": link},
        {"id": "gw", "type": "rtu-over-tcp", "port": port},
    ]
    faults = [{"server": "pty", "unit_id": 3, "kind": "crc"}, {"server": "gw", "unit_id": 4, "kind": "crc"}]

    async def body() -> None:
        spec = site(servers, faults=faults)
        runner = SimRunner(spec, PROFILES)
        await runner.start()
        cfg = node(
            [
                {"id": "pty", "type": "rtu", "serial_port": link, "baud": 9600, "timeout_s": 0.3},
                {"id": "gw", "type": "rtu-over-tcp", "host": "127.0.0.1", "port": port, "timeout_s": 0.3},
            ],
            interval=0.5,
        )
        poller = Poller(cfg, {d.id: PROFILES[d.profile] for d in cfg.devices})
        await poller.start()
        try:
            await until(lambda: status(poller, "pty-battery")["state"] == "ok", timeout_s=20, what="pty read")
            await until(lambda: status(poller, "gw-battery")["state"] == "ok", timeout_s=20, what="gw read")
            await asyncio.sleep(3.0)
            assert status(poller, "pty-pv")["crc_errors"] >= 1
            assert status(poller, "gw-relay")["crc_errors"] >= 1
            assert (
                status(poller, "pty-meter")["state"] == "ok" and status(poller, "gw-meter")["state"] == "ok"
            )
            assert status(poller, "pty-battery")["values"]["capacity_kwh"] == pytest.approx(100.0)
            res = await poller.write("pty-battery", "WSet", 7.0)
            assert res["ok"] and res["read_back"] == 7.0
            # the line time at 9600 baud paces the serial bus: about 20 reads/s at most
            rate = sum(status(poller, d)["polls"] for d in poller.devices if d.startswith("pty"))
            assert rate > 0
        finally:
            await poller.stop()
            await runner.stop()

    run(body)


@pytest.mark.skipif(shutil.which("mbpoll") is None, reason="mbpoll is installed by scripts/setup")
def test_mbpoll_reads_what_the_simulator_reports() -> None:
    (port,) = free_ports(1)

    async def body() -> None:
        runner = SimRunner(site([{"id": "a", "type": "tcp", "port": port}], speed=0.0001), PROFILES)
        await runner.start()
        try:
            # -0: PDU (0-based) addressing, so -r 40070 is wire address 40070 (W, int32 big-endian)
            out = await asyncio.to_thread(
                subprocess.run,
                ["mbpoll", "-m", "tcp", "-a", "1", "-r", "40070", "-c", "10", "-p", str(port), "-1", "-0",
                 "127.0.0.1"],
                capture_output=True, text=True, timeout=20,
            )  # fmt: skip
            assert out.returncode == 0, out.stdout + out.stderr
            regs = {
                int(k): int(v)
                for k, v in (
                    line.strip("[").split("]:")
                    for line in out.stdout.splitlines()
                    if line.startswith("[") and "]:" in line
                )
            }
            raw = (regs[40070] << 16) | regs[40071]
            raw = raw - (1 << 32) if raw >= 1 << 31 else raw
            assert raw / 1000 == pytest.approx(runner.sim.site.meter.grid_kw, abs=0.01)
            assert regs[40079] / 100 == pytest.approx(50.0)  # Hz at 40079, scale 0.01
        finally:
            await runner.stop()

    run(body)


@pytest.mark.parametrize("phase_s", [0.002, 0.011])
def test_a_50_hz_meter_is_polled_evenly_whatever_its_phase(phase_s: float) -> None:
    """A device faster than a few grid ticks keeps its own cadence: whatever the phase of its
    schedule against the workers' shared wake-up grid, polls are one interval apart (not in
    bunched pairs every two intervals, which halves how often protection sees the meter)."""
    from meshems.adapters import poller as poller_mod

    (port,) = free_ports(1)

    async def body() -> None:
        runner = SimRunner(site([{"id": "a", "type": "tcp", "port": port}]), PROFILES)
        await runner.start()
        cfg = node([{"id": "a", "type": "tcp", "host": "127.0.0.1", "port": port}], {"a": [1]}, 0.02)
        poller = Poller(cfg, {d.id: PROFILES[d.profile] for d in cfg.devices})
        grid = poller_mod.GRID_S
        first = (int(time.monotonic() / grid) + 5) * grid + phase_s  # just after a grid tick
        bus = poller.buses["a"]
        bus.heap = [(first, 0, rt) for rt in poller.devices.values()]
        await poller.start()
        try:
            dev = poller.devices["a-meter"]
            await until(lambda: dev.counters["ok"] >= 40, what="40 polls")
            starts = list(dev.poll_starts)
            gaps = [b - a for a, b in itertools.pairwise(starts)]
            assert min(gaps) > 0.01, f"polls bunched: gaps {[round(g * 1000, 1) for g in gaps]} ms"
            assert statistics.median(dev.lateness_s) < 0.005
        finally:
            await poller.stop()
            await runner.stop()

    run(body)
