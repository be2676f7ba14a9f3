"""`meshems install`: put one gateway's node under systemd: its units, the sysusers.d and
tmpfiles.d entries and the config (0640) below `--root`, then print the steps that remain.
Owns the command's arguments, the writing and its output; the unit texts are `ops.units`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from meshems.cli.args import add_command

EXAMPLES = {"install": "meshems install --config cluster.yaml --node n1 --dry-run"}


def add_parsers(sub: Any) -> None:
    """Add `install` to the top-level subparsers."""
    s = add_command(
        sub,
        "install",
        "write this gateway's systemd units (node, overlay, firewall), sysusers.d/tmpfiles.d "
        "entries and the config below ROOT",
        EXAMPLES["install"],
    )
    s.add_argument("--node", "-n", required=True, help="node id of this gateway")
    s.add_argument("--root", default="/", help="install below this folder (default /; e.g. an image)")
    s.add_argument("--dry-run", action="store_true", help="print the files instead of writing them")
    s.add_argument("--watchdog", type=int, default=30, metavar="S", help="WatchdogSec of the node unit")
    s.set_defaults(run=cmd_install)


def cmd_install(args: Any) -> int:
    import os

    from meshems.adapters.atomic_write import write_atomic
    from meshems.adapters.config_file import load_config
    from meshems.ops import units

    cfg = load_config(args.config)
    cfg.node(args.node)  # E_CONFIG (exit 2) naming the known nodes
    if args.watchdog < 2:
        print("error E_USAGE: --watchdog must be at least 2 s (the node pings every half)", file=sys.stderr)
        return 2
    inst = units.Install(python=sys.executable, watchdog_s=args.watchdog)
    installed = cfg.model_copy(update={"source": inst.config_path})
    files = {
        rel: (text.encode(), 0o644) for rel, text in units.render_all(installed, args.node, inst).items()
    }
    files[inst.config_path.lstrip("/")] = (Path(args.config).read_bytes(), 0o640)
    secret_to = units.secret_file(installed)
    secret_there = _target(args.root, secret_to).exists()
    if not secret_there and cfg.secret_path.is_file():
        files[secret_to.lstrip("/")] = (cfg.secret_path.read_bytes(), 0o600)
        secret_there = True
    real = units.Install(python=os.path.realpath(inst.python))  # a venv's python is a symlink
    for text in units.warnings(installed, args.node, real):
        print(f"warning: {text}", file=sys.stderr)
    for rel, (data, mode) in files.items():
        target = _target(args.root, "/" + rel)
        if args.dry_run:
            shown = "(the Raft secret)" if mode == 0o600 else data.decode()
            print(f"--- {target} (mode {mode:04o})\n{shown}")
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(target, data, mode)
        print(f"wrote {target} (mode {mode:04o})")
    _next_steps(args, installed, secret_to, secret_there)
    return 0


def _target(root: str, path: str) -> Path:
    return Path(root) / path.lstrip("/")


def _next_steps(args: Any, cfg: Any, secret_to: str, secret_there: bool) -> None:
    from meshems.ops.units import FIREWALL_UNIT, NODE_UNIT, OVERLAY_UNIT

    oneshots = f"{FIREWALL_UNIT}{' ' + OVERLAY_UNIT if cfg.overlay is not None else ''}"
    where = "" if Path(args.root).resolve() == Path("/") else f" (on the gateway booted from {args.root})"
    steps = [
        "systemd-sysusers meshems.conf                 # the meshems user",
        "systemd-tmpfiles --create meshems.conf        # state folder; config and secret ownership",
        "systemctl daemon-reload",
        f"systemctl enable --now {oneshots}",
        f"systemctl enable --now --no-block {NODE_UNIT}  # ready once it has joined the zone",
        "systemctl status meshems-node; journalctl -u meshems-node -f",
    ]
    if not secret_there:
        steps.insert(0, f"copy the cluster's Raft secret to {secret_to} (the same file on every gateway)")
    verb = "would remain" if args.dry_run else "next"
    print(f"\n{verb}{where}:\n" + "\n".join(f"  {s}" for s in steps))
