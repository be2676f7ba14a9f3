"""Simulated DER sites served as real Modbus devices: pymodbus TCP and serial servers, socat
for pty pairs (in a temp folder removed on stop), and the wall-clock physics tick.

Owns the servers and their lifetime; the devices' register views and faults are
`sim.sim_site`. Profiles come in as objects: this module reads no files.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import weakref
from pathlib import Path
from typing import Any

from pymodbus.framer import FramerType
from pymodbus.server import ModbusSerialServer, ModbusTcpServer

from meshems.core.register_map import Profile
from meshems.sim.sim_site import SimSite
from meshems.sim.sitefile import SiteFile


class SimRunner:
    """Starts the servers of a site file (and socat for pty pairs) and the physics tick.

    The server side of a pty pair lives in a `meshems-sim-*` temp folder, made only when a
    pty server needs it and removed by `stop()` (the process entry point calls it on SIGINT
    and SIGTERM); should nobody call `stop()`, it goes when the runner is collected or the
    interpreter exits normally.
    """

    def __init__(self, spec: SiteFile, profiles: dict[str, Profile]) -> None:
        self.spec = spec
        self.sim = SimSite(spec, profiles)
        self.servers: list[Any] = []
        self.socats: list[subprocess.Popen[bytes]] = []
        self.ports: dict[str, int] = {}
        self._tick_task: asyncio.Task[None] | None = None
        self._tmp: Path | None = None
        self._remove_tmp: weakref.finalize | None = None

    async def start(self) -> None:
        try:
            await self._start()
        except BaseException:
            await self.stop()  # leave no socat or half-started server behind
            raise

    async def _start(self) -> None:
        for s in self.spec.servers:
            devices = self.sim.sim_devices(s.id)
            if s.type == "rtu-pty":
                assert s.link is not None
                server_side = str(self._pty_folder() / f"{s.id}.pty")
                await self._socat(s.link, server_side)
                srv = ModbusSerialServer(
                    devices,
                    framer=FramerType.RTU,
                    port=server_side,
                    baudrate=9600,
                    ignore_missing_devices=True,
                    trace_packet=self.sim.trace_for(s.id, True),
                )
            else:
                rtu = s.type == "rtu-over-tcp"
                srv = ModbusTcpServer(
                    devices,
                    framer=FramerType.RTU if rtu else FramerType.SOCKET,
                    address=(s.host, s.port or 0),
                    ignore_missing_devices=True,
                    trace_packet=self.sim.trace_for(s.id, rtu),
                )
            await srv.serve_forever(background=True)
            self.servers.append(srv)
            if s.type != "rtu-pty":
                self.ports[s.id] = _bound_port(srv, s.port or 0)
        self._tick_task = asyncio.create_task(self._tick())

    def _pty_folder(self) -> Path:
        """The temp folder for the server sides of pty pairs, made on first use."""
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="meshems-sim-"))
            self._remove_tmp = weakref.finalize(self, shutil.rmtree, str(self._tmp), ignore_errors=True)
        return self._tmp

    async def _socat(self, link: str, server_side: str) -> None:
        for p in (link, server_side):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(p)
        proc = subprocess.Popen(
            ["socat", f"pty,raw,echo=0,link={link}", f"pty,raw,echo=0,link={server_side}"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.socats.append(proc)
        for _ in range(100):
            if os.path.exists(link) and os.path.exists(server_side):
                return
            await asyncio.sleep(0.02)
        raise RuntimeError(f"socat did not create the pty pair {link} <-> {server_side}")

    async def _tick(self) -> None:
        while True:
            self.sim.tick()
            await asyncio.sleep(self.spec.site.tick_s)

    async def stop(self) -> None:
        if self._tick_task is not None:
            self._tick_task.cancel()
        for srv in self.servers:
            with contextlib.suppress(Exception):
                await srv.shutdown()
        for proc in self.socats:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
        for s in self.spec.servers:
            if s.link:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(s.link)
        if self._remove_tmp is not None:
            self._remove_tmp()  # once: later calls do nothing
            self._tmp = self._remove_tmp = None


def _bound_port(srv: Any, asked: int) -> int:
    """The TCP port a server listens on (useful when asked for port 0)."""
    if asked:
        return asked
    with contextlib.suppress(Exception):
        for sock in srv.transport.sockets:  # pymodbus keeps the asyncio server as transport
            return int(sock.getsockname()[1])
    return asked
