"""`meshems lab ...`: build a lab of gateways in network namespaces, break it, check it.

Owns the lab subcommands' arguments and output. Must not hold lab logic (meshems/lab/
gateways.py, faults.py do, imported inside the commands); every subcommand names the lab by
its folder (`--dir`, default .meshems/lab).
"""

from __future__ import annotations

import argparse
import re
import time
from pathlib import Path
from typing import Any

DEFAULT_DIR = ".meshems/lab"
EXAMPLES = {
    "up": "sudo meshems lab up --nodes 3  (then: meshems status --config .meshems/lab/lab.yaml)",
    "status": "sudo meshems lab status",
    "kill": "sudo meshems lab kill n1",
    "pause": "sudo meshems lab pause n2",
    "resume": "sudo meshems lab resume n2",
    "restart": "sudo meshems lab restart n1",
    "isolate": "sudo meshems lab isolate n1",
    "cut": "sudo meshems lab cut n1 n2",
    "oneway": "sudo meshems lab oneway n1 n2  (n1's packets to n2 dropped, n2's to n1 pass)",
    "clock": "sudo meshems lab clock n2 -30  (30 s behind; 0 puts it back; a lab `up --clocks`)",
    "lossy": "sudo meshems lab lossy 20  (every link drops 20 % at random; `lab heal` ends it)",
    "blackout": "sudo meshems lab blackout  (every node; or: lab blackout n2; a lab `up --blackout`)",
    "partition": "sudo meshems lab partition n1 n2,n3",
    "heal": "sudo meshems lab heal",
    "down": "sudo meshems lab down  (or --all after a crash)",
    "faults": "sudo meshems lab faults --seconds 120 --seed 7 --json  (or --long 2h)",
}


def parse_duration(text: str) -> float:
    """'90', '90s', '15m', '2h' -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not m:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration like 90s, 15m or 2h")
    return float(m.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[m.group(2)]


def add_parsers(sub: Any) -> None:
    """Add `lab` and its subcommands to the top-level subparsers."""
    lab = sub.add_parser(
        "lab",
        help="a lab of gateways in network namespaces over wireguard-go: faults and checks (root)",
        description="Build N simulated gateways, each in its own network namespace with a "
        "wireguard-go tunnel mesh, a node daemon and a simulated site; kill, pause, restart "
        "nodes; cut and heal links; run a seeded Jepsen-style fault test. Root only.",
        epilog="Example: meshems lab up --nodes 3 && meshems status --config .meshems/lab/lab.yaml"
        " && meshems lab isolate n1 && meshems lab heal && meshems lab down",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    lab.set_defaults(run=run_lab)
    lab = lab.add_subparsers(dest="sub", required=True, metavar="SUBCOMMAND")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        p = lab.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=f"Example: {EXAMPLES[name]}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.add_argument("--dir", default=DEFAULT_DIR, help=f"the lab's folder (default {DEFAULT_DIR})")
        return p

    p = add("up", "build a lab and start its nodes (they keep running until `lab down`)")
    p.add_argument("--nodes", type=int, default=3, help="gateways (1-9, default 3)")
    p.add_argument("--no-sim", action="store_true", help="no simulated sites (Raft only)")
    p.add_argument("--clocks", action="store_true", help="nodes under libfaketime, for `lab clock`")
    p.add_argument("--blackout", action="store_true", help="data folders on lossyfs, for `lab blackout`")
    add("status", "the lab's nodes: Raft status as `meshems status` shows it, plus pids")
    for verb, text in (
        ("kill", "kill -9 a node daemon"),
        ("pause", "SIGSTOP a node daemon"),
        ("resume", "SIGCONT a paused node daemon"),
        ("restart", "stop a node gracefully (or start a killed one) and start it again"),
        ("isolate", "cut every WireGuard link of a node"),
    ):
        add(verb, text).add_argument("node", metavar="NODE")
    p = add("cut", "cut the WireGuard link between two nodes (nft drops UDP 51820 both ways)")
    p.add_argument("a", metavar="NODE_A")
    p.add_argument("b", metavar="NODE_B")
    p = add("oneway", "drop the WireGuard packets from one node to another, one direction only")
    p.add_argument("a", metavar="FROM")
    p.add_argument("b", metavar="TO")
    p = add("clock", "offset a node's clocks from real time (libfaketime; its timers move too)")
    p.add_argument("node", metavar="NODE")
    p.add_argument("offset_s", type=int, metavar="SECONDS", help="offset from real time, e.g. -30 or 45")
    p = add("lossy", "every link drops a share of its WireGuard packets at random (nft numgen)")
    p.add_argument("percent", type=int, metavar="PERCENT", help="1 to 99")
    p = add("blackout", "power cut: kill -9 nodes, drop their unsynced writes at once, restart them")
    p.add_argument("nodes", nargs="*", metavar="NODE", help="the nodes (default: every node)")
    p = add("partition", "cut every link between groups, e.g. `lab partition n1 n2,n3`")
    p.add_argument("groups", nargs="+", metavar="GROUP", help="comma-separated nodes")
    add("heal", "remove every cut")
    p = add("down", "stop every process and remove the lab's namespaces, links and routes")
    p.add_argument("--all", action="store_true", help="remove every lab on this machine (after a crash)")
    p = add("faults", "Jepsen-style test: writes under a seeded fault schedule, then a checker")
    p.add_argument("--seed", type=int, default=1, help="seeds the fault schedule and the client (default 1)")
    p.add_argument("--seconds", type=parse_duration, default=120.0, help="schedule length (default 120)")
    p.add_argument("--long", type=parse_duration, metavar="DURATION", help="a long run, e.g. 2h")
    p.add_argument("--nodes", type=int, default=3, help="gateways (default 3)")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def run_lab(args: Any) -> int:
    from meshems.lab.gateways import Lab
    from meshems.lab.netlab import LabError

    folder = Path(args.dir)
    sub = args.sub
    if sub == "up":
        lab = Lab.create(
            folder, nodes=args.nodes, sims=not args.no_sim, clocks=args.clocks, blackout=args.blackout
        )
        leader = lab.wait_leader(30)
        print(f"lab {lab.plan.tag} is up: {len(lab.plan.nodes)} nodes, leader {leader}")
        print(f"  status:   meshems status --config {lab.cfg.source}")
        print(f"  faults:   meshems lab kill|pause|resume|restart|isolate NODE --dir {folder}")
        print(f"  links:    meshems lab cut n1 n2 | partition n1 n2,n3 | heal --dir {folder}")
        print(f"  teardown: meshems lab down --dir {folder}")
        return 0
    if sub == "down":
        if args.all:
            from meshems.lab.diskfull import unmount_disks
            from meshems.lab.netlab import teardown_all
            from meshems.lab.powerloss import unmount_stale

            removed = teardown_all() + unmount_stale() + unmount_disks()
            if (folder / "lab-state.json").exists():
                (folder / "lab-state.json").unlink()
        else:
            removed = Lab.open(folder).down()
        print(f"removed {', '.join(removed) if removed else 'nothing (already gone)'}")
        return 0
    if sub == "faults":
        return _faults(args, folder)
    lab = Lab.open(folder)
    if sub == "status":
        from meshems.cli.output import out_console, status_table

        rows = lab.status(timeout_s=1.0)
        out_console().print(status_table(rows))
        for key, pid in sorted(lab.pids.items()):
            print(f"  {key:<8} pid {pid:<8} {'running' if lab.running(key) else 'stopped'}")
        return 0
    nodes = set(lab.plan.nodes)
    for n in [getattr(args, "node", None), getattr(args, "a", None), getattr(args, "b", None),
              *getattr(args, "nodes", [])]:  # fmt: skip
        if n is not None and n not in nodes:
            raise LabError(f"{n}: no such node in the lab (nodes: {', '.join(sorted(nodes))})")
    if sub == "kill":
        lab.kill(args.node)
    elif sub == "pause":
        lab.pause(args.node)
    elif sub == "resume":
        lab.resume(args.node)
    elif sub == "restart":
        lab.restart(args.node)
    elif sub == "isolate":
        lab.isolate(args.node)
    elif sub == "cut":
        lab.cut(args.a, args.b)
    elif sub == "clock":
        lab.set_clock(args.node, args.offset_s)
    elif sub == "oneway":
        lab.cut_oneway(args.a, args.b)
    elif sub == "lossy":
        if not 1 <= args.percent <= 99:
            raise LabError(f"lab lossy {args.percent}: the share is a percent from 1 to 99")
        lab.lossy(args.percent)
    elif sub == "partition":
        groups = [g.split(",") for g in args.groups]
        unknown = sorted({n for g in groups for n in g} - nodes)
        if unknown:
            raise LabError(f"unknown nodes {unknown} (nodes: {', '.join(sorted(nodes))})")
        lab.partition(groups)
    elif sub == "blackout":
        dropped = lab.blackout(args.nodes or list(lab.plan.nodes))
        for n, d in dropped.items():
            print(f"  {n}: power cut, {d['bytes']} unsynced bytes in {d['files']} files dropped, restarted")
    elif sub == "heal":
        lab.heal()
    print(f"{sub} done at {time.strftime('%H:%M:%S')}")
    return 0


def _faults(args: Any, folder: Path) -> int:
    import json
    import sys

    from meshems.lab.faults import limit_failures, run_faults, summary_table

    duration = args.long or args.seconds
    folder = folder / f"faults-{int(time.time())}"
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    res = run_faults(folder, seed=args.seed, duration_s=duration, nodes=args.nodes, say=say)
    if args.json:
        print(json.dumps(res.to_dict()))
    else:
        print(summary_table(res))
        print(f"traces and logs kept in {folder}")
    for line in limit_failures(res.to_dict()):
        print(f"FAIL: {line}", file=sys.stderr)
    return 0 if res.to_dict()["ok"] else 1
