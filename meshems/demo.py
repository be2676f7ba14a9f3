"""The local demo mesh: secret, node processes, a live status view, clean Ctrl-C.

Owns the demo's flow only; processes come from ops.supervisor and status from the API.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid

from rich.console import Group
from rich.live import Live
from rich.text import Text

from meshems.adapters.secret import init_secret, read_secret
from meshems.cli import out_console, status_table
from meshems.core import commands
from meshems.core.config import ClusterConfig, DeviceConfig
from meshems.ops.supervisor import LocalCluster


def _demo_write(cluster: LocalCluster, dev: DeviceConfig, kw: float) -> str:
    data = commands.encode("set_setpoint", f"demo-{uuid.uuid4().hex}", device_id=dev.id, kw=kw, source="demo")
    try:
        res = cluster.client.propose(data, deadline_s=3)
    except Exception as exc:
        return f"write failed: {exc}"
    if res.get("ok"):
        return f"setpoint {dev.id} = {kw:g} kW committed at term {res.get('term')}, index {res.get('index')}"
    return f"{res.get('code')}: {res.get('message')}"


def run_demo(cfg: ClusterConfig, config_path: str, duration_s: float = 0, writes: bool = True) -> int:
    console = out_console()
    if not cfg.secret_path.exists():
        init_secret(cfg.secret_path)
        console.print(f"created the Raft secret {cfg.secret_path.resolve()}")
    secret = read_secret(cfg.secret_path, config_path)
    log_dir = cfg.path(cfg.raft.data_dir) / "logs"
    cluster = LocalCluster(cfg, config_path, secret, log_dir)
    console.print(
        f"starting {sum(n.initial for n in cfg.nodes)} nodes of zone {cfg.zone} "
        f"(logs in {log_dir.resolve()}); Ctrl-C stops them"
    )
    if any(n.sim_site for n in cfg.nodes):
        console.print("starting the simulated sites (Modbus devices with physics)")
        cluster.start_sims()
    cluster.start_all()
    batteries = [d for n in cfg.nodes for d in n.devices if d.kind == "battery"]
    values = itertools.cycle([10.0, -5.0, 0.0, 20.0, -15.0])
    last_write = "no write yet"
    started = time.monotonic()
    next_write, last_print = started + 3.0, 0.0
    # A terminal gets a live view; a pipe or a log file gets a table every few seconds.
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None
    try:
        with live or contextlib.nullcontext():
            while duration_s <= 0 or time.monotonic() - started < duration_s:
                rows = cluster.client.status_all(timeout_s=0.5)
                if writes and batteries and time.monotonic() >= next_write:
                    next_write = time.monotonic() + 2.0
                    dev = batteries[int(time.monotonic()) % len(batteries)]
                    last_write = _demo_write(cluster, dev, max(dev.min_kw, min(dev.max_kw, next(values))))
                dead = [n for n in cluster.procs if not cluster.running(n)]
                exited = f"exited: {', '.join(dead)} (see logs)\n" if dead else ""
                view = Group(
                    Text(f"meshems demo: cluster {cfg.cluster}, zone {cfg.zone}", style="bold"),
                    status_table(rows),
                    Text(f"\n{last_write}\n{exited}Ctrl-C to stop\n"),
                )
                if live is not None:
                    live.update(view, refresh=True)
                elif time.monotonic() - last_print >= 3.0:
                    last_print = time.monotonic()
                    console.print(view)
                time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopping...")
    finally:
        cluster.stop_all()
    console.print("all nodes stopped")
    return 0
