"""The local demo mesh: secret, node processes, a live status view, clean Ctrl-C.

Owns the demo's flow only; processes come from ops.supervisor and status from the API.
"""

from __future__ import annotations

import itertools
import time
import uuid

from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from meshems.adapters.secret import init_secret, read_secret
from meshems.cli import status_table
from meshems.core import commands
from meshems.core.config import ClusterConfig
from meshems.ops.supervisor import LocalCluster


def run_demo(cfg: ClusterConfig, config_path: str, duration_s: float = 0, writes: bool = True) -> int:
    console = Console()
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
    cluster.start_all()
    devices = [d for n in cfg.nodes for d in n.devices if d.kind == "battery"]
    values = itertools.cycle([10.0, -5.0, 0.0, 20.0, -15.0])
    last_write = "no write yet"
    started = time.monotonic()
    next_write = started + 3.0
    try:
        with Live(console=console, auto_refresh=False, transient=False) as live:
            while duration_s <= 0 or time.monotonic() - started < duration_s:
                rows = cluster.client.status_all(timeout_s=0.5)
                if writes and devices and time.monotonic() >= next_write:
                    next_write = time.monotonic() + 2.0
                    dev = devices[int(time.monotonic()) % len(devices)]
                    kw = max(dev.min_kw, min(dev.max_kw, next(values)))
                    data = commands.encode(
                        "set_setpoint",
                        f"demo-{uuid.uuid4().hex}",
                        device_id=dev.id,
                        kw=kw,
                        source="demo",
                    )
                    try:
                        res = cluster.client.propose(data, deadline_s=3)
                        last_write = (
                            f"setpoint {dev.id} = {kw:g} kW committed at term "
                            f"{res.get('term')}, index {res.get('index')}"
                            if res.get("ok")
                            else f"{res.get('code')}: {res.get('message')}"
                        )
                    except Exception as exc:
                        last_write = f"write failed: {exc}"
                dead = [n for n in cluster.procs if not cluster.running(n)]
                footer = Text(
                    f"\n{last_write}\n"
                    + (f"exited: {', '.join(dead)} (see logs)\n" if dead else "")
                    + "Ctrl-C to stop"
                )
                live.update(
                    Group(
                        Text(f"meshems demo: cluster {cfg.cluster}, zone {cfg.zone}", style="bold"),
                        status_table(rows),
                        footer,
                    ),
                    refresh=True,
                )
                time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopping...")
    finally:
        cluster.stop_all()
    console.print("all nodes stopped")
    return 0
