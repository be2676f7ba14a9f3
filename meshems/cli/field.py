"""`meshems devices | sim`: the field side. `devices` shows every node's field devices
(health, rates, errors) over the API; `sim` serves simulated DER devices as real Modbus
servers with a control API (fault injection, site state) until SIGINT/SIGTERM.
Owns their arguments, output and the simulator's wiring; physics and servers are meshems.sim.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshems.cli.args import add_command, add_output
from meshems.cli.output import print_json

if TYPE_CHECKING:
    from meshems.core.register_map import Profile
    from meshems.sim.sitefile import SiteFile

EXAMPLES = {
    "devices": "meshems devices --config cluster-configs/local-3.yaml -o json",
    "sim": "meshems sim --site cluster-configs/sites/site-n1.yaml",
}
DEVICE_COLUMNS = ("NODE", "DEVICE", "KIND", "BUS", "UNIT", "STATE", "AGE", "RATE", "POLLS", "TIMEOUTS",
                  "CRC", "FRAME", "EXCEPTIONS", "VALUES")  # fmt: skip


def add_parsers(sub: Any) -> None:
    """Add `sim` and `devices` to the top-level subparsers."""
    s = sub.add_parser(
        "sim",
        help="run simulated DER devices as real Modbus servers",
        description="run simulated DER devices (meter, battery, PV, relays) as real Modbus "
        "servers with site physics and fault injection",
        epilog=f"Example: {EXAMPLES['sim']}",
    )
    s.add_argument("--site", required=True, help="site file (YAML)")
    s.add_argument("--ready-file", help="write the bound ports here as JSON once serving")
    s.set_defaults(run=cmd_sim)

    s = add_command(
        sub, "devices", "show every field device of the nodes: health, rates, errors", EXAMPLES["devices"]
    )
    s.add_argument("--node", "-n", help="only this node")
    add_output(s)
    s.set_defaults(run=cmd_devices)


def cmd_devices(args: Any) -> int:
    from meshems.cli.api import connect
    from meshems.core.errors import MeshemsError

    cfg, client = connect(args)
    nodes = [cfg.node(args.node)] if args.node else list(cfg.nodes)
    rows: list[dict[str, Any]] = []
    answered = 0
    for node in nodes:
        try:
            code, body = client.request(node, "GET", "/v1/devices")
        except MeshemsError as exc:
            print(f"warning: {node.id} unreachable: {exc.message}", file=sys.stderr)
            continue
        if code != 200:
            print(f"warning: {node.id}: {body.get('code')}: {body.get('message')}", file=sys.stderr)
            continue
        answered += 1
        rows += [{"node": node.id, **d} for d in body["devices"]]
    if args.output == "json":
        print_json(rows)
    else:
        _print_devices(rows)
    return 0 if answered else 1


def _print_devices(rows: list[dict[str, Any]]) -> None:
    from meshems.cli.output import out_console, table

    t = table(*DEVICE_COLUMNS)
    for r in rows:
        state = r["state"]
        color = {"ok": "green", "stale": "yellow", "defective": "red"}.get(state, "white")
        values = ", ".join(f"{k}={v:.2f}" for k, v in sorted(r["values"].items()))
        exc = ", ".join(f"{k}:{v}" for k, v in sorted(r["exceptions"].items())) or "-"
        t.add_row(
            r["node"],
            r["id"],
            r["kind"],
            str(r["bus"]),
            str(r["unit_id"]),
            f"[{color}]{state}[/{color}]",
            "-" if r["age_s"] is None else f"{r['age_s']:.1f}s",
            "-" if r["rate_hz"] is None else f"{r['rate_hz']:.2f}/s",
            str(r["polls"]),
            str(r["timeouts"]),
            str(r["crc_errors"]),
            str(r["frame_errors"]),
            exc,
            values,
        )
    out_console().print(t)


def cmd_sim(args: argparse.Namespace) -> int:
    return run_sim(args.site, args.ready_file)


def load_site(path: str | Path) -> tuple[SiteFile, dict[str, Profile]]:
    """A site file and the register profiles its devices name (relative to the site file)."""
    from meshems.adapters.config_file import load_yaml
    from meshems.adapters.profiles import load_profile
    from meshems.sim.sitefile import parse_site

    spec = parse_site(load_yaml(path), str(path))
    base = Path(path).resolve().parent
    from meshems.sim.sim_site import profile_key
    from meshems.sim.sunspec_chain import chain_profile

    profiles = {
        profile_key(d.profile, d.model): chain_profile(d.model)
        if d.profile == "sunspec"
        else load_profile(d.profile, base)
        for d in spec.devices
    }
    return spec, profiles


async def serve(spec: SiteFile, profiles: dict[str, Profile], ready_file: Path | None = None) -> None:
    """Serve the site's devices and its control API until SIGINT or SIGTERM."""
    import asyncio
    import json
    import signal

    from meshems.ops.http import HttpApi, Request
    from meshems.sim.server import SimRunner

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):  # before anything starts: a stop always cleans up
        loop.add_signal_handler(sig, stop.set)
    runner = SimRunner(spec, profiles)
    api = HttpApi(check_token=lambda token: True, name="sim control API")

    async def site(req: Request) -> tuple[int, Any]:
        return 200, {**runner.sim.status(), "ports": runner.ports}

    async def fault(req: Request) -> tuple[int, Any]:
        try:
            runner.sim.set_fault(req.json())
        except (ValueError, KeyError) as exc:
            return 400, {"ok": False, "code": "E_BAD_REQUEST", "message": str(exc)}
        return 200, {"ok": True}

    api.route("GET", "/v1/site", site)
    api.route("POST", "/v1/fault", fault, max_body=4096)
    try:
        await runner.start()
        if spec.control.port:
            await api.start(spec.control.host, spec.control.port)
        info = {"servers": runner.ports, "control": spec.control.port or None}
        print(f"meshems sim: serving {len(runner.sim.devices)} devices: {json.dumps(info)}", flush=True)
        if ready_file is not None:
            ready_file.write_text(json.dumps(info))
        await stop.wait()
    finally:
        await api.stop()
        await runner.stop()
        print("meshems sim: stopped", flush=True)


def run_sim(path: str, ready_file: str | None = None) -> int:
    import asyncio

    from meshems.core.errors import ConfigError

    try:
        spec, profiles = load_site(path)
    except ConfigError as exc:
        print(f"error {exc.code}: {exc.message}", file=sys.stderr)
        return 2
    asyncio.run(serve(spec, profiles, Path(ready_file) if ready_file else None))
    return 0
