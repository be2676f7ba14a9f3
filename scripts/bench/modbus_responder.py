#!/usr/bin/env python3
"""A light Modbus TCP responder for the polling benchmark's rig: one process serving several
ports, answering read holding/input registers (03/04) for any unit with a fixed block that
decodes as a plausible meter (the bench meter's 10 registers at 40070), everything else with
exception 01. Written on asyncio.Protocol with struct, no Modbus library: a pymodbus server
spends ~10x more CPU per request, and at 2,000 requests/s ten of them and the poller share 2
cores, so the poller is measured preempted. This is the rig, not what the benchmark measures
(the poller and the bare pymodbus client are the same in both).

    python scripts/bench/modbus_responder.py --ports 15020,15021 --ready-file F
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

#: the bench meter's block (W, VA, var as int32 x 0.001; PF, A, V, Hz): 12.5 kW, 230 V, 50 Hz
METER = struct.pack(">iiihHHH", 12_500, 13_000, 1_200, 960, 543, 2300, 5000)
BLOCK_START = 40070


def registers(address: int, count: int) -> bytes:
    """`count` registers from `address`: the meter block where it lies, zeros elsewhere."""
    out = bytearray(2 * count)
    for i in range(count):
        k = address + i - BLOCK_START
        if 0 <= k < len(METER) // 2:
            out[2 * i : 2 * i + 2] = METER[2 * k : 2 * k + 2]
    return bytes(out)


class Responder(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 7:
            tid, _pid, length, unit = struct.unpack_from(">HHHB", self.buf)
            end = 6 + length
            if length < 2 or length > 254:
                self.transport.close()
                return
            if len(self.buf) < end:
                return
            pdu, self.buf = self.buf[7:end], self.buf[end:]
            fc = pdu[0]
            if fc in (3, 4) and len(pdu) == 5:
                address, count = struct.unpack_from(">HH", pdu, 1)
                if 1 <= count <= 125:
                    body = registers(address, count)
                    reply = struct.pack(">BB", fc, len(body)) + body
                else:
                    reply = struct.pack(">BB", fc | 0x80, 3)
            else:
                reply = struct.pack(">BB", fc | 0x80, 1)
            self.transport.write(struct.pack(">HHHB", tid, 0, len(reply) + 1, unit) + reply)  # type: ignore[attr-defined]


async def serve(ports: list[int], ready: Path | None) -> None:
    loop = asyncio.get_running_loop()
    servers = [await loop.create_server(Responder, "127.0.0.1", p) for p in ports]
    if ready is not None:
        ready.write_text("ready\n")
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    for s in servers:
        s.close()


class LightSims:
    """`poll_bench.Sims`' interface over one responder process: `servers` (port, units)."""

    def __init__(self, folder: Path, devices: int, per_server: int, ports: list[int]) -> None:
        self.folder, self.procs = folder, []
        n = (devices + per_server - 1) // per_server
        self.servers = [(p, min(per_server, devices - i * per_server)) for i, p in enumerate(ports[:n])]

    def start(self) -> None:
        ready = self.folder / "responder.ready"
        ports = ",".join(str(p) for p, _ in self.servers)
        cmd = [sys.executable, __file__, "--ports", ports, "--ready-file", str(ready)]
        self.procs.append(subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        end = time.monotonic() + 30
        while not (ready.exists() and ready.stat().st_size):
            if time.monotonic() > end or self.procs[0].poll() is not None:
                raise TimeoutError("the responder did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        for p in self.procs:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ports", required=True, help="comma-separated TCP ports on 127.0.0.1")
    ap.add_argument("--ready-file", type=Path, help="written once every port listens")
    args = ap.parse_args()
    asyncio.run(serve([int(p) for p in args.ports.split(",")], args.ready_file))
    return 0


if __name__ == "__main__":
    sys.exit(main())
