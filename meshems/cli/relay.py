"""`meshems relay set | clear`: an operator's override of one relay-switched load, committed
through Raft and fenced like a setpoint; dispatch, shedding and restore leave the load alone
until the override expires or is cleared (protection still trips it: safety comes first).

Owns these commands' arguments and output; the rule lives in the replicated state.
"""

from __future__ import annotations

import re
import sys
import time
from typing import Any

from meshems.cli.args import add_command, add_group, add_output
from meshems.cli.output import fail, print_json

EXAMPLES = {
    "relay set": "meshems relay set --config cluster-configs/local-3.yaml n1-relays:4 off --for 30m",
    "relay clear": "meshems relay clear --config cluster-configs/local-3.yaml n1-relays:4",
}
UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_s(text: str) -> float:
    """`90s`, `30m`, `2h`, `1d` (or plain seconds) -> seconds; ValueError otherwise."""
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([smhd]?)", text.strip())
    if m is None or float(m.group(1)) <= 0:
        raise ValueError(f"{text!r} is not a duration like 90s, 30m, 2h or 1d")
    return float(m.group(1)) * UNITS_S[m.group(2) or "s"]


def add_parsers(sub: Any) -> None:
    """Add `relay set` and `relay clear` to the top-level subparsers."""
    relay = add_group(sub, "relay", "hold a relay-switched load on or off (an operator override)")
    s = add_command(
        relay, "set", "hold a load on or off through Raft until cleared or for --for", EXAMPLES["relay set"]
    )
    s.add_argument("load", metavar="RELAY:CHANNEL", help="the load, e.g. n1-relays:4")
    s.add_argument("state", choices=["on", "off"])
    s.add_argument(
        "--for", dest="for_", metavar="DURATION", help="e.g. 90s, 30m, 2h, 1d (default: until cleared)"
    )
    s.add_argument("--node", "-n", help="node to send it through (default: any)")
    add_output(s)
    s.set_defaults(run=cmd_relay_set)
    s = add_command(
        relay, "clear", "end an override: dispatch and restore take the load back", EXAMPLES["relay clear"]
    )
    s.add_argument("load", metavar="RELAY:CHANNEL")
    s.add_argument("--node", "-n")
    add_output(s)
    s.set_defaults(run=cmd_relay_clear)


def _propose(args: Any, closed: bool | None, until_s: float | None) -> int:
    from meshems.cli.api import connect, new_rid
    from meshems.core import commands

    _, client = connect(args)
    rid = new_rid()
    data = commands.encode(
        "relay_override", rid, load=args.load, closed=closed, until_s=until_s, source="operator"
    )
    res = client.propose(data, prefer=args.node)
    if args.output == "json":
        print_json({**res, "rid": rid, "until_s": until_s})
    elif res.get("ok"):
        until = (
            "" if until_s is None else " until " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(until_s))
        )
        print(f"{res.get('message')}{until} (term {res['term']}, index {res['index']})  [rid {rid}]")
    else:
        fail(res.get("code"), res.get("message"))
    return 0 if res.get("ok") else 1


def cmd_relay_set(args: Any) -> int:
    until_s = None
    if args.for_ is not None:
        try:
            until_s = time.time() + duration_s(args.for_)
        except ValueError as exc:
            print(f"error E_USAGE: --for: {exc}", file=sys.stderr)
            return 2
    return _propose(args, args.state == "on", until_s)


def cmd_relay_clear(args: Any) -> int:
    return _propose(args, None, None)
