"""The Modbus driver: one pymodbus client connection behind meshems' own small interface.

Owns connecting (capped backoff, forever), the requests (read 01/02/03/04, write 05/15/06/16,
per-request timeout and quiet gap) and their outcomes as stable codes: E_TIMEOUT (also 0x0A/
0x0B), E_CRC, E_FRAME, E_EXCEPTION, E_CONNECT. pymodbus never leaks past it; it schedules nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import Any

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException
from pymodbus.framer import FramerType

from meshems.core.config import BusConfig

# pymodbus logs every timeout at ERROR; we count them per device instead.
logging.getLogger("pymodbus").setLevel(logging.CRITICAL)

GATEWAY_EXCEPTIONS = {0x0A, 0x0B}
#: function codes whose answers pymodbus can decode
KNOWN_FUNCTION_CODES = frozenset({1, 2, 3, 4, 5, 6, 7, 8, 11, 12, 15, 16, 17, 20, 21, 22, 23, 24, 43})
EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    0x0A: "gateway path unavailable",
    0x0B: "gateway target device failed to respond",
}


class FieldError(Exception):
    """A failed Modbus request, with a stable code (and the exception code if any)."""

    def __init__(self, code: str, detail: str, exception_code: int | None = None) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail
        self.exception_code = exception_code


def crc16(data: bytes) -> int:
    """Modbus RTU CRC-16 (poly 0xA001, init 0xFFFF)."""
    crc = 0xFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc


def crc_ok(frame: bytes) -> bool:
    return len(frame) >= 4 and crc16(frame[:-2]) == int.from_bytes(frame[-2:], "little")


def line_time_s(bus: BusConfig, request_bytes: int, response_bytes: int) -> float:
    """Time a request/response pair occupies a serial line at the bus's baud rate
    (11 bits per character, 3.5 characters of silence after each frame)."""
    char_s = 11 / bus.baud
    return (request_bytes + response_bytes + 7) * char_s


@dataclass
class _Rx:
    bytes_seen: int = 0
    buffer: bytes = b""


class ModbusLink:
    """One connection to a bus: one request in flight at a time (pymodbus' own lock)."""

    BACKOFF_MIN_S = 0.2
    BACKOFF_MAX_S = 10.0

    def __init__(self, bus: BusConfig) -> None:
        self.bus = bus
        self._serial = bus.serial
        self._rx = _Rx()
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._next_connect = 0.0
        self._backoff_s = self.BACKOFF_MIN_S
        self.connects = 0
        self.connect_failures = 0
        self._timeout_s = bus.timeout_s
        self._last_done = 0.0

    def _trace(self, sending: bool, data: bytes) -> bytes:
        rx = self._rx
        if sending:
            rx.bytes_seen = 0
            rx.buffer = b""
            return data
        rx.bytes_seen += len(data)
        if self._serial:
            rx.buffer = (rx.buffer + data)[-512:]  # kept to tell CRC errors from other garbage
        elif len(data) >= 8 and (data[7] & 0x7F) not in KNOWN_FUNCTION_CODES:
            # pymodbus 3.16 raises inside data_received on an undecodable PDU, and asyncio
            # then drops the connection: swallow the garbage, the request times out and is
            # counted as E_FRAME (bytes were seen).
            return b""
        return data

    def _make_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        b = self.bus
        common = {"timeout": b.timeout_s, "retries": 0, "reconnect_delay": 0, "trace_packet": self._trace}
        if b.type == "tcp":
            return AsyncModbusTcpClient(b.host or "", port=b.port or 502, framer=FramerType.SOCKET, **common)
        if b.type == "rtu-over-tcp":
            return AsyncModbusTcpClient(b.host or "", port=b.port or 502, framer=FramerType.RTU, **common)
        return AsyncModbusSerialClient(
            b.serial_port or "", framer=FramerType.RTU, baudrate=b.baud, parity=b.parity,
            stopbits=b.stopbits, bytesize=8, **common,
        )  # fmt: skip

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.connected

    async def connect(self) -> None:
        """Connect unless connected; during backoff raise E_CONNECT at once."""
        if self.connected:
            return
        now = time.monotonic()
        if now < self._next_connect:
            raise FieldError(
                "E_CONNECT", f"bus {self.bus.id}: reconnecting in {self._next_connect - now:.1f} s"
            )
        if self._client is not None:
            self._client.close()
        self._client = self._make_client()
        self._timeout_s = self.bus.timeout_s  # what the new client was made with
        ok = False
        try:
            ok = await asyncio.wait_for(self._client.connect(), timeout=max(1.0, self.bus.timeout_s * 2))
        except (TimeoutError, OSError, ModbusException):
            ok = False
        if not ok or not self._client.connected:
            self.connect_failures += 1
            self._next_connect = time.monotonic() + self._backoff_s
            self._backoff_s = min(self._backoff_s * 2, self.BACKOFF_MAX_S)
            raise FieldError("E_CONNECT", f"bus {self.bus.id}: cannot connect to {self._where()}")
        self.connects += 1
        self._backoff_s = self.BACKOFF_MIN_S

    def _where(self) -> str:
        return self.bus.serial_port or f"{self.bus.host}:{self.bus.port}"

    async def _ready(self, timeout_s: float | None, gap_s: float) -> Any:
        """The connected client, with this request's answer timeout set and the quiet gap
        since the previous answer on this connection kept (requests here are sequential)."""
        client = self._client
        if client is None or not client.connected:
            await self.connect()
            client = self._client
            assert client is not None
        timeout_s = self.bus.timeout_s if timeout_s is None else timeout_s
        if timeout_s != self._timeout_s:
            self._timeout_s = client.comm_params.timeout_connect = timeout_s  # read per request
        if gap_s > 0:
            rest = self._last_done + gap_s - time.monotonic()
            if rest > 0:
                await asyncio.sleep(rest)
        return client

    def _failure(self, exc: Exception) -> FieldError:
        if isinstance(exc, ModbusIOException):
            return self._io_error(exc)
        return FieldError("E_CONNECT", f"bus {self.bus.id}: {exc}")

    async def _call(self, request: Awaitable[Any]) -> Any:
        """Await one pymodbus request; every failure as a FieldError with a stable code."""
        try:
            rr = await request
        except (ModbusIOException, ConnectionException, OSError) as exc:
            raise self._failure(exc) from None
        finally:
            self._last_done = time.monotonic()
        if rr.isError():
            raise self._exception(rr)
        return rr

    async def read(
        self,
        unit_id: int,
        address: int,
        count: int,
        table: str = "holding",
        timeout_s: float | None = None,
        gap_s: float = 0.0,
    ) -> list[int]:
        """Read `count` registers or bits of `table` (function 03, 04, 01 or 02); bits come
        back as 0/1 (bools). The poller's hot path: one coroutine, no copies."""
        client = self._client
        if client is None or gap_s > 0 or timeout_s is not None or not client.connected:
            client = await self._ready(timeout_s, gap_s)
        elif self._timeout_s != self.bus.timeout_s:
            self._timeout_s = client.comm_params.timeout_connect = self.bus.timeout_s
        try:
            if table == "holding":
                rr = await client.read_holding_registers(address, count=count, device_id=unit_id)
            elif table == "input":
                rr = await client.read_input_registers(address, count=count, device_id=unit_id)
            elif table == "coil":
                rr = await client.read_coils(address, count=count, device_id=unit_id)
            else:
                rr = await client.read_discrete_inputs(address, count=count, device_id=unit_id)
        except (ModbusIOException, ConnectionException, OSError) as exc:
            raise self._failure(exc) from None
        finally:
            self._last_done = time.monotonic()
        if rr.isError():
            raise self._exception(rr)
        if table == "holding" or table == "input":
            if len(rr.registers) != count:
                raise FieldError("E_FRAME", f"asked {count} registers, got {len(rr.registers)}")
            return rr.registers  # type: ignore[no-any-return]
        if len(rr.bits) < count:  # answers are padded to whole bytes, never shorter
            raise FieldError("E_FRAME", f"asked {count} bits, got {len(rr.bits)}")
        return rr.bits[:count]  # type: ignore[no-any-return]

    async def write(
        self,
        unit_id: int,
        address: int,
        values: list[int],
        *,
        single: bool = False,
        timeout_s: float | None = None,
        gap_s: float = 0.0,
    ) -> None:
        """Write holding registers: function 16, or 06 with `single` and one value."""
        client = await self._ready(timeout_s, gap_s)
        if single and len(values) == 1:
            await self._call(client.write_register(address, values[0], device_id=unit_id))
        else:
            await self._call(client.write_registers(address, values, device_id=unit_id))

    async def write_bits(
        self,
        unit_id: int,
        address: int,
        values: list[int],
        *,
        single: bool = True,
        timeout_s: float | None = None,
        gap_s: float = 0.0,
    ) -> None:
        """Write coils: function 05 for one coil with `single`, else 15."""
        client = await self._ready(timeout_s, gap_s)
        bits = [bool(v) for v in values]
        if single and len(bits) == 1:
            await self._call(client.write_coil(address, bits[0], device_id=unit_id))
        else:
            await self._call(client.write_coils(address, bits, device_id=unit_id))

    def _io_error(self, exc: ModbusIOException) -> FieldError:
        text = str(exc)
        if "transaction id" in text or "device id" in text:
            return FieldError("E_FRAME", "answer to another request (late or misrouted frame)")
        if self._rx.bytes_seen:
            if self.bus.serial and not crc_ok(self._rx.buffer):
                return FieldError("E_CRC", f"{self._rx.bytes_seen} bytes with a bad CRC")
            return FieldError("E_FRAME", f"{self._rx.bytes_seen} bytes that are no valid answer")
        return FieldError("E_TIMEOUT", f"no answer within {self._timeout_s} s")

    @staticmethod
    def _exception(rr: object) -> FieldError:
        code = int(getattr(rr, "exception_code", 0) or 0)
        name = EXCEPTION_NAMES.get(code, "unknown")
        if code in GATEWAY_EXCEPTIONS:
            return FieldError("E_TIMEOUT", f"gateway exception 0x{code:02X} ({name})", code)
        return FieldError("E_EXCEPTION", f"exception 0x{code:02X} ({name})", code)

    async def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None
