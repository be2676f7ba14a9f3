"""The polling benchmark's light responder (scripts/bench/modbus_responder.py) speaks Modbus
TCP as the poller and the bare pymodbus client expect: the bench meter's block for any unit,
zeros around it, exceptions for what it does not serve."""

from __future__ import annotations

import asyncio
import struct
import sys
from pathlib import Path

import pytest
from pymodbus.client import AsyncModbusTcpClient

from tests.conftest import free_ports

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "scripts/bench"))
from modbus_responder import LightSims  # noqa: E402

pytestmark = pytest.mark.integration


def test_the_light_responder_answers_reads_for_every_unit_and_refuses_the_rest(tmp_path: Path) -> None:
    sims = LightSims(tmp_path, 300, 200, free_ports(2))
    assert [units for _, units in sims.servers] == [200, 100]
    sims.start()

    async def talk() -> None:
        port = sims.servers[1][0]
        c = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=2, retries=0)
        assert await c.connect()
        try:
            r = await c.read_holding_registers(40070, count=10, device_id=77)
            assert not r.isError()
            assert r.registers[:2] == [0, 12_500] and r.registers[6:] == [960, 543, 2300, 5000]
            r = await c.read_input_registers(0, count=3, device_id=1)
            assert not r.isError() and r.registers == [0, 0, 0]
            r = await c.write_register(40070, 1, device_id=1)
            assert r.isError() and r.exception_code == 1  # illegal function
            # past the 125-register limit (pymodbus will not send it: raw bytes)
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(struct.pack(">HHHBBHH", 9, 0, 6, 1, 3, 0, 200))
            assert await asyncio.wait_for(reader.readexactly(9), 2) == struct.pack(
                ">HHHBBB", 9, 0, 3, 1, 0x83, 3
            )
            writer.close()
        finally:
            c.close()

    try:
        asyncio.run(talk())
    finally:
        sims.stop()
    assert all(p.poll() is not None for p in sims.procs)
