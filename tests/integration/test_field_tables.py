"""Field I/O on every Modbus table against simulated devices served by real pymodbus servers:
an Eastron SDM630 on input registers, a Waveshare relay board on coils and discrete inputs,
and a holding-register map with every type and order (written, read back, polled again),
SunSpec scale factors, function 06 writes, and mbpoll as an independent client."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from typing import Any

import pytest

from meshems.adapters.poller import Poller
from meshems.adapters.profiles import device_profiles
from meshems.core.config import NodeConfig
from meshems.core.profile_schema import parse_profile
from meshems.core.register_map import Profile
from meshems.sim.server import SimRunner
from meshems.sim.sitefile import parse_site
from tests.conftest import free_ports
from tests.integration.test_field import run, until

pytestmark = pytest.mark.integration

TYPES = parse_profile(
    {
        "name": "types",
        "kind": "meter",
        "description": "every type and order on holding registers",
        "write_single_register": True,
        "points": [
            {"name": "W", "address": 40200, "type": "int32", "scale": 0.001, "unit": "kW"},
            {"name": "I64", "address": 40202, "type": "int64", "access": "rw"},
            {"name": "U64", "address": 40206, "type": "uint64", "order": "CDAB", "access": "rw"},
            {"name": "F64", "address": 40210, "type": "float64", "order": "BADC", "access": "rw"},
            {"name": "F32", "address": 40214, "type": "float32", "order": "DCBA", "access": "rw"},
            {"name": "I32", "address": 40216, "type": "int32", "word_order": "little", "access": "rw"},
            {"name": "Sn", "address": 40218, "type": "string", "length": 6, "access": "rw"},
            {"name": "U16", "address": 40224, "type": "uint16", "scale": 0.1, "access": "rw"},
            {"name": "P", "address": 40225, "type": "int16", "scale_point": "P_SF", "access": "rw"},
            {"name": "P_SF", "address": 40226, "type": "int16", "access": "rw"},
            {"name": "Flags", "address": 40227, "type": "uint16", "access": "rw"},
            {"name": "Bit3", "address": 40227, "type": "bit", "bit": 3},
            {"name": "Mb", "address": 40230, "type": "float32", "access": "rw"},
        ],
        "roles": {"power_kw": "W"},
    },
    "types.yaml",
)
PROFILES: dict[str, Profile] = {**device_profiles(), "types": TYPES}
UNITS = {
    1: ("sdm", "meter", "sdm630"),
    4: ("board", "relay", "waveshare-relay-8ch"),
    5: ("types", "meter", "types"),
}


def site(port: int, **params: Any) -> Any:
    devices = [{"server": "a", "unit_id": u, "model": m, "profile": p} for u, (_, m, p) in UNITS.items()]
    return parse_site(
        {"site": {"seed": 2, "start_h": 12, **params}, "servers": [{"id": "a", "type": "tcp", "port": port}],
         "devices": devices}, "test-site",
    )  # fmt: skip


def node(port: int) -> NodeConfig:
    devices = [
        {"id": f"a-{name}", "kind": kind, "bus": "a", "unit_id": u, "profile": p, "poll_interval_s": 0.2}
        for u, (name, kind, p) in UNITS.items()
    ]
    bus = {"id": "a", "type": "tcp", "host": "127.0.0.1", "port": port, "timeout_s": 0.5}
    return NodeConfig.model_validate(
        {
            "id": "n1",
            "address": "127.0.0.1",
            "raft_port": 1,
            "api_port": 2,
            "buses": [bus],
            "devices": devices,
        }
    )


async def started(port: int, **params: Any) -> tuple[SimRunner, Poller]:
    runner = SimRunner(site(port, **params), PROFILES)
    await runner.start()
    cfg = node(port)
    poller = Poller(cfg, {d.id: PROFILES[d.profile or ""] for d in cfg.devices})
    await poller.start()
    await until(lambda: all(st(poller, d)["state"] == "ok" for d in poller.devices), what="all ok")
    return runner, poller


def st(poller: Poller, dev_id: str) -> dict[str, Any]:
    return poller.device_status(poller.devices[dev_id])


async def polled_after(poller: Poller, dev_id: str) -> dict[str, Any]:
    """The device's point values from a poll that started after this call."""
    polls = poller.devices[dev_id].counters["ok"]
    await until(lambda: poller.devices[dev_id].counters["ok"] >= polls + 2, what=f"{dev_id} polled")
    return poller.point_values(dev_id)


def test_an_sdm630_on_input_registers() -> None:
    (port,) = free_ports(1)

    async def body() -> None:
        runner, poller = await started(port, pv_rated_kw=0)
        try:
            meter = runner.sim.site.meter
            values = st(poller, "a-sdm")["values"]
            assert values["power_kw"] == pytest.approx(meter.grid_kw, abs=0.5) and values["power_kw"] > 5
            assert values["voltage_v"] == pytest.approx(meter.voltage_v, abs=0.5)
            assert values["frequency_hz"] == pytest.approx(50.0)
            assert values["energy_import_kwh"] >= 0 and values["energy_export_kwh"] == pytest.approx(0.0)
            points = poller.point_values("a-sdm")
            assert points["VL1"] == pytest.approx(meter.voltage_v, abs=0.5)
            assert points["WL1"] == pytest.approx(meter.grid_kw / 3, abs=0.5)
            assert points["A"] == pytest.approx(meter.grid_kw * 1000 / meter.voltage_v, rel=0.05)
            assert len(points) == 60
            dev = poller.devices["a-sdm"]
            blocks = [(b.table, b.count) for b in dev.plan.blocks]
            assert blocks == [("input", 80), ("input", 50), ("input", 30)]
            res = await poller.write("a-sdm", "W", 1.0)
            assert not res["ok"] and res["code"] == "E_LIMIT" and "read-only" in res["message"]
        finally:
            await poller.stop()
            await runner.stop()

    run(body)


def test_a_relay_board_on_coils_and_discrete_inputs() -> None:
    (port,) = free_ports(1)

    async def body() -> None:
        runner, poller = await started(port, loads=4)
        try:
            values = st(poller, "a-board")["values"]
            assert [values[f"relay_{i}"] for i in range(1, 9)] == [1.0] * 4 + [0.0] * 4
            assert [values[f"input_{i}"] for i in range(1, 9)] == [1.0] * 4 + [0.0] * 4  # auxiliary contacts
            res = await poller.write("a-board", "Relay2", 0)  # function 05, read back with 01
            assert res == {"ok": True, "code": "OK", "message": "", "written": 0.0, "read_back": 0.0}
            assert not runner.sim.site.relays.is_closed(2)
            points = await polled_after(poller, "a-board")
            assert (points["Relay2"], points["DI2"], points["Relay1"]) == (0.0, 0.0, 1.0)
            assert (await poller.write("a-board", "Relay2", 1))["ok"]
            assert runner.sim.site.relays.is_closed(2)
            # relay 6 switches no load in this site: the board reads it back open, and says so
            res = await poller.write("a-board", "Relay6", 1)
            assert not res["ok"] and res["code"] == "E_WRITE_VERIFY" and res["read_back"] == 0.0
            res = await poller.write("a-board", "DI1", 1)
            assert res["code"] == "E_LIMIT" and "read-only" in res["message"]
            assert (await poller.write("a-board", "Relay3", 2))["code"] == "E_LIMIT"
            c = st(poller, "a-board")
            assert c["writes"] == 3 and c["write_errors"] == 0 and c["timeouts"] == 0
        finally:
            await poller.stop()
            await runner.stop()

    run(body)


WRITES: list[tuple[str, Any]] = [
    ("I64", -(2**40) - 7),
    ("U64", 2**52 + 3),  # 64-bit integers travel as floats: exact up to 2**53
    ("F64", -123.456),
    ("F32", 1.5),
    ("I32", -70000),
    ("Sn", "MESH-1"),
    ("U16", 12.3),
    ("Flags", 0b1000),
]


def test_every_type_and_order_written_read_back_and_polled() -> None:
    (port,) = free_ports(1)

    async def body() -> None:
        runner, poller = await started(port)
        try:
            for name, value in WRITES:
                res = await poller.write("a-types", name, value)
                assert res["ok"], (name, res)
                assert res["read_back"] == (pytest.approx(value) if isinstance(value, float) else value)
            points = await polled_after(poller, "a-types")
            for name, value in WRITES:
                assert points[name] == (pytest.approx(value) if isinstance(value, float) else value), name
            assert points["Bit3"] == 1.0  # bit 3 of Flags
            assert st(poller, "a-types")["texts"] == {"Sn": "MESH-1"}
            assert "Sn" not in st(poller, "a-types")["values"]  # only numbers become role values
            # a SunSpec scale factor: written, polled, then used for the scaled point both ways
            assert (await poller.write("a-types", "P_SF", -2))["ok"]
            await polled_after(poller, "a-types")
            res = await poller.write("a-types", "P", 1.5)
            assert (
                res["ok"] and res["written"] == pytest.approx(1.5) and res["read_back"] == pytest.approx(1.5)
            )
            assert (await polled_after(poller, "a-types"))["P"] == pytest.approx(1.5)
            assert (await poller.write("a-types", "P_SF", -32768))["code"] == "E_LIMIT"  # the marker itself
        finally:
            await poller.stop()
            await runner.stop()

    run(body)


async def mbpoll(*args: str) -> str:
    out = await asyncio.to_thread(
        subprocess.run, ["mbpoll", "-m", "tcp", "-0", "-1", *args], capture_output=True, text=True, timeout=20
    )
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout


@pytest.mark.skipif(shutil.which("mbpoll") is None, reason="mbpoll is installed by scripts/setup")
def test_mbpoll_writes_a_coil_and_a_register_that_the_poller_reads() -> None:
    (port,) = free_ports(1)

    async def body() -> None:
        runner, poller = await started(port, loads=4)
        try:
            p = ["-p", str(port), "127.0.0.1"]
            await mbpoll("-a", "4", "-t", "0", "-r", "2", *p, "0")  # coil 2 = relay 3 off
            assert not runner.sim.site.relays.is_closed(3)
            await mbpoll("-a", "5", "-t", "4:float", "-B", "-r", "40230", *p, "42.5")  # ABCD float32
            points = await polled_after(poller, "a-types")
            assert points["Mb"] == 42.5
            assert (await polled_after(poller, "a-board"))["Relay3"] == 0.0
            # and mbpoll reads what the poller reads: the SDM630's total power on input registers
            out = await mbpoll("-a", "1", "-t", "3:float", "-B", "-r", str(0x34), *p)
            watts = float(next(line for line in out.splitlines() if line.startswith("[52]:")).split(":")[1])
            assert watts / 1000 == pytest.approx(st(poller, "a-sdm")["values"]["power_kw"], abs=1.0)
        finally:
            await poller.stop()
            await runner.stop()

    run(body)
