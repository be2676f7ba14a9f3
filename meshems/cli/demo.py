"""`meshems demo`: the local demo mesh. Secret, node processes (and the simulated sites),
a live status view with the zone's control, and a clean Ctrl-C.

Owns the demo's arguments and flow only; processes come from ops.supervisor and status from
the API. rich, the schema and the supervisor are imported inside the command.
"""

from __future__ import annotations

import contextlib
import itertools
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshems.cli.args import add_command

if TYPE_CHECKING:
    from rich.console import Group

    from meshems.core.config import ClusterConfig, DeviceConfig
    from meshems.ops.supervisor import LocalCluster

EXAMPLE = "meshems demo --config cluster-configs/local-3.yaml --deploy"


def add_parsers(sub: Any) -> None:
    """Add `demo` to the top-level subparsers."""
    s = add_command(
        sub, "demo", "start a local mesh from the config and show it live (Ctrl-C stops)", EXAMPLE
    )
    s.add_argument("--duration", type=float, default=0,
                   help="stop S seconds after the mesh has its first leader (0 = until Ctrl-C)")  # fmt: skip
    s.add_argument("--no-writes", action="store_true", help="do not write demo setpoints (without a policy)")
    s.add_argument(
        "--chaos",
        type=float,
        default=0,
        metavar="N",
        help="kill -9 the leader every N seconds (restarted 3 s later) to show control continuing",
    )
    s.add_argument(
        "--deploy",
        nargs="?",
        const="",
        metavar="DIR",
        help="also build a controller payload folder (default: the example cluster-configs/payloads/"
        "peak-guard) with a throw-away key and roll it out to the zone (needs a policy)",
    )
    s.add_argument(
        "--deploy-cycles",
        type=int,
        default=5,
        metavar="N",
        help="with --deploy: shadow and then watch cycles on each node (default 5)",
    )
    s.set_defaults(run=cmd_demo)


def cmd_demo(args: Any) -> int:
    from meshems.adapters.config_file import load_config

    cfg = load_config(args.config)
    deploy = None
    if args.deploy is not None:
        from meshems.cli.demo_deploy import EXAMPLE_PAYLOAD
        from meshems.core.errors import ConfigError

        deploy = Path(args.deploy) if args.deploy else EXAMPLE_PAYLOAD
        if cfg.policy is None:
            raise ConfigError(f"--deploy: {args.config} has no policy; a controller payload runs once per "
                              "policy cycle (add policy:, as in cluster-configs/local-3.yaml)")  # fmt: skip
        if not (deploy / "manifest.yaml").is_file():
            raise ConfigError(f"--deploy {deploy}: no manifest.yaml there (a payload folder, see "
                              "cluster-configs/payloads/peak-guard)")  # fmt: skip
        if not 1 <= args.deploy_cycles <= 100_000:
            raise ConfigError(f"--deploy-cycles {args.deploy_cycles}: a count of cycles from 1 to 100000")
    return run_demo(cfg, args.config, duration_s=args.duration, writes=not args.no_writes, chaos_s=args.chaos,
                    deploy=deploy, deploy_cycles=args.deploy_cycles)  # fmt: skip


def _demo_write(cluster: LocalCluster, dev: DeviceConfig, kw: float) -> str:
    import uuid

    from meshems.core import commands

    data = commands.encode("set_setpoint", f"demo-{uuid.uuid4().hex}", device_id=dev.id, kw=kw, source="demo")
    try:
        res = cluster.client.propose(data, deadline_s=3)
    except Exception as exc:
        return f"write failed: {exc}"
    if res.get("ok"):
        return f"setpoint {dev.id} = {kw:g} kW committed at term {res.get('term')}, index {res.get('index')}"
    return f"{res.get('code')}: {res.get('message')}"


def control_view(cluster: LocalCluster, rows: list[dict[str, Any]]) -> Group | None:
    """Zone import vs limit, each site's battery/PV/loads and which controller set them."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    leader = next((r for r in rows if r.get("reachable") and r.get("role") == "leader"), None)
    if leader is None:
        return None
    try:
        _, ctl = cluster.client.request(cluster.cfg.node(leader["id"]), "GET", "/v1/control", timeout_s=0.5)
    except Exception:
        return None
    ld = ctl.get("last_dispatch")
    if not ctl.get("policy") or not ld:
        return None
    inputs, decisions = ld["inputs"], ld.get("decisions", {})
    limit = inputs.get("import_limit_kw", 0.0)
    zone = inputs.get("zone_import_kw", 0.0)
    style = "bold red" if zone > limit + 0.5 else "bold green"
    head = Text.assemble(
        ("zone import ", ""),
        (f"{zone:.1f} kW", style),
        (f" / limit {limit:.0f} kW", ""),
        (f"   dispatch cycle {ld['cycle']} (term {ld['term']}) by {leader['id']}", "dim"),
    )
    t = Table(header_style="bold")
    for col in ("NODE", "MODE", "GRID kW", "BATTERY kW", "SoC %", "PV kW", "SHED", "BATTERY SET BY"):
        t.add_column(col)
    shed = {k for k, r in ctl.get("relays", {}).items() if not r["closed"]}
    for r in rows:
        readings = r.get("readings") or {}
        vals = {k.split("-", 1)[-1]: v.get("values", {}) for k, v in readings.items()}
        bat, pv, meter = vals.get("bat", {}), vals.get("pv", {}), vals.get("meter", {})
        node_shed = sorted(x.split(":")[1] for x in shed if x.startswith(f"{r['id']}-"))
        dec = decisions.get(f"{r['id']}-bat", {})
        t.add_row(
            r["id"],
            "-" if not r.get("reachable") else r.get("role", ""),
            f"{meter.get('power_kw', float('nan')):.1f}",
            f"{bat.get('power_kw', float('nan')):.1f}",
            f"{bat.get('soc_pct', float('nan')):.1f}",
            f"{pv.get('power_kw', float('nan')):.1f}",
            ",".join(node_shed) or "-",
            dec.get("controller", "-"),
        )
    return Group(head, t)


#: how long a timed demo waits for its first leader before its duration counts anyway
STARTUP_S = 60.0


def _deadline(started: float, leader_at: float | None, duration_s: float) -> float:
    """When a timed run ends: `duration_s` after the first leader (a slow start on a busy
    machine does not eat the run), or after STARTUP_S more if none ever came."""
    return (leader_at if leader_at is not None else started + STARTUP_S) + duration_s


def _last_round(started: float, leader_at: float | None, duration_s: float) -> bool:
    """True in the loop's last round, so a pipe also gets the view at the end of a timed run."""
    return duration_s > 0 and time.monotonic() + 0.5 >= _deadline(started, leader_at, duration_s)


def run_demo(
    cfg: ClusterConfig, config_path: str, duration_s: float = 0, writes: bool = True, chaos_s: float = 0,
    deploy: Path | None = None, deploy_cycles: int = 5,
) -> int:  # fmt: skip
    """Run the demo until Ctrl-C or `duration_s` (0: no limit); 0 when every node stopped.
    `deploy`: a controller payload folder to roll out once the zone has a leader."""
    from rich.console import Group
    from rich.live import Live
    from rich.text import Text

    from meshems.adapters.secret import init_secret, read_secret
    from meshems.cli.output import out_console, status_table
    from meshems.ops.supervisor import LocalCluster

    console = out_console()
    if not cfg.secret_path.exists():
        init_secret(cfg.secret_path)
        console.print(f"created the Raft secret {cfg.secret_path.resolve()}")
    secret = read_secret(cfg.secret_path, config_path)
    log_dir = cfg.path(cfg.raft.data_dir) / "logs"
    rollout = None
    if deploy is not None:
        from meshems.adapters.config_file import load_config
        from meshems.cli.demo_deploy import DemoDeploy, trusting_config

        config_path, key = trusting_config(cfg, config_path)
        cfg = load_config(config_path)
        console.print(f"--deploy: the nodes run from {config_path}, which also trusts the demo's key {key}")
    cluster = LocalCluster(cfg, config_path, secret, log_dir)
    if deploy is not None:
        rollout = DemoDeploy(cluster, key, deploy, deploy_cycles)
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
    leader_at: float | None = None
    next_write, last_print = started + 3.0, 0.0
    next_chaos = started + chaos_s + 5
    restart: tuple[float, str] | None = None
    chaos_note = ""
    # A terminal gets a live view; a pipe or a log file gets a table every few seconds.
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None
    try:
        with live or contextlib.nullcontext():
            while duration_s <= 0 or time.monotonic() < _deadline(started, leader_at, duration_s):
                rows = cluster.client.status_all(timeout_s=0.5)
                now = time.monotonic()
                if leader_at is None and any(r.get("role") == "leader" for r in rows):
                    leader_at = now
                if chaos_s > 0 and restart is not None and now >= restart[0]:
                    cluster.start(restart[1])
                    chaos_note = f"chaos: restarted {restart[1]}"
                    restart = None
                elif chaos_s > 0 and now >= next_chaos:
                    leader = next((r["id"] for r in rows if r.get("role") == "leader"), None)
                    if leader is not None:
                        cluster.kill(leader)
                        chaos_note = f"chaos: killed the leader {leader} (kill -9); restarting it in 3 s"
                        restart = (now + 3.0, leader)
                    next_chaos = now + chaos_s
                has_policy = cfg.policy is not None
                if writes and not has_policy and batteries and time.monotonic() >= next_write:
                    next_write = time.monotonic() + 2.0
                    dev = batteries[int(time.monotonic()) % len(batteries)]
                    last_write = _demo_write(cluster, dev, max(dev.min_kw, min(dev.max_kw, next(values))))
                dead = [n for n in cluster.procs if not cluster.running(n)]
                exited = f"exited: {', '.join(dead)} (see logs)\n" if dead else ""
                parts = [
                    Text(f"meshems demo: cluster {cfg.cluster}, zone {cfg.zone}", style="bold"),
                    status_table(rows),
                ]
                ctl = control_view(cluster, rows)
                if ctl is not None:
                    parts.append(ctl)
                if rollout is not None:
                    rollout.step(rows)
                    parts.append(rollout.view())
                note = last_write if not has_policy else chaos_note
                parts.append(Text(f"\n{note}\n{exited}Ctrl-C to stop\n"))
                view = Group(*parts)
                if live is not None:
                    live.update(view, refresh=True)
                elif time.monotonic() - last_print >= 3.0 or _last_round(started, leader_at, duration_s):
                    last_print = time.monotonic()
                    console.print(view)
                time.sleep(0.5)
    except KeyboardInterrupt:
        console.print("stopping...")
    finally:
        if rollout is not None:
            console.print(rollout.summary())
        cluster.stop_all()
    console.print("all nodes stopped")
    return 0
