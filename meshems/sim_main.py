"""`meshems sim`: load a site file and its profiles, run the simulated devices and a small
control API (fault injection, site state) until SIGINT/SIGTERM.

Owns the wiring of the simulator only; physics and servers live in `meshems.sim`.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path
from typing import Any

from meshems.adapters.config_file import load_yaml
from meshems.adapters.profiles import load_profile
from meshems.core.errors import ConfigError
from meshems.core.registers import Profile
from meshems.ops.http import HttpApi, Request
from meshems.sim.server import SimRunner
from meshems.sim.sitefile import SiteFile, parse_site


def load_site(path: str | Path) -> tuple[SiteFile, dict[str, Profile]]:
    spec = parse_site(load_yaml(path), str(path))
    base = Path(path).resolve().parent
    profiles = {d.profile: load_profile(d.profile, base) for d in spec.devices}
    return spec, profiles


async def serve(spec: SiteFile, profiles: dict[str, Profile], ready_file: Path | None = None) -> None:
    runner = SimRunner(spec, profiles)
    await runner.start()
    api = HttpApi(check_token=lambda token: True)

    async def site(req: Request) -> tuple[int, Any]:
        return 200, {**runner.sim.status(), "ports": runner.ports}

    async def fault(req: Request) -> tuple[int, Any]:
        try:
            runner.sim.set_fault(req.json())
        except (ValueError, KeyError) as exc:
            return 400, {"ok": False, "code": "E_BAD_REQUEST", "message": str(exc)}
        return 200, {"ok": True}

    api.route("GET", "/v1/site", site)
    api.route("POST", "/v1/fault", fault)
    if spec.control.port:
        await api.start(spec.control.host, spec.control.port)
    info = {"servers": runner.ports, "control": spec.control.port or None}
    print(f"meshems sim: serving {len(runner.sim.devices)} devices: {json.dumps(info)}", flush=True)
    if ready_file is not None:
        ready_file.write_text(json.dumps(info))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await api.stop()
        await runner.stop()
        print("meshems sim: stopped", flush=True)


def run_sim(path: str, ready_file: str | None = None) -> int:
    try:
        spec, profiles = load_site(path)
    except ConfigError as exc:
        print(f"error {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    asyncio.run(serve(spec, profiles, Path(ready_file) if ready_file else None))
    return 0
