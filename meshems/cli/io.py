"""`meshems io read | probe`: points by hand, for commissioning. `io read` asks the node that
polls a device for its points' live values over the API; `io probe` reads or writes raw
Modbus points with no config at all, like modpoll.
Owns these commands' arguments and output (node side: `node.field`, wire: `adapters.modbus`).
"""

from __future__ import annotations

import sys
from typing import Any

from meshems.cli.args import add_command, add_group, add_output
from meshems.cli.output import fail, print_json

EXAMPLES = {
    "io read": "meshems io read --config cluster-configs/local-3.yaml n1-meter power_kw voltage_v",
}
IO_COLUMNS = ("POINT", "VALUE", "UNIT", "ROLE", "ADDRESS")


def add_parsers(sub: Any) -> None:
    """Add `io read` (and `io probe`) to the top-level subparsers."""
    io = add_group(sub, "io", "read or write field points by hand (commissioning)")
    s = add_command(
        io, "read", "live values of a device's points, from the node that polls it", EXAMPLES["io read"]
    )
    s.add_argument("device", metavar="DEVICE", help="device id, as in the config")
    s.add_argument("points", metavar="POINT", nargs="*", help="point names of its profile (default: all)")
    s.add_argument("--node", "-n", help="ask this node first (default: every node in turn)")
    add_output(s)
    s.set_defaults(run=cmd_io_read)


def cmd_io_read(args: Any) -> int:
    from urllib.parse import urlencode

    from meshems.cli.api import connect
    from meshems.core.errors import MeshemsError

    _, client = connect(args)
    path = "/v1/io?" + urlencode({"device": args.device, "points": ",".join(args.points)})
    misses: list[str] = []
    for node in client.ordered_nodes(args.node):
        try:
            status, body = client.request(node, "GET", path, timeout_s=6.0)
        except MeshemsError as exc:
            misses.append(f"{node.id} unreachable")
            print(f"warning: {exc.message}", file=sys.stderr)
            continue
        if status == 200:
            _print_read(args, body)
            return 0
        if body.get("code") == "E_UNKNOWN_DEVICE":
            misses.append(f"{node.id}: {body.get('message')}")
            continue
        return fail(body.get("code"), f"{node.id}: {body.get('message')}")  # it polls it, but ...
    return fail("E_UNKNOWN_DEVICE", f"no node polls {args.device} now ({'; '.join(misses)})")


def _print_read(args: Any, body: dict[str, Any]) -> None:
    if args.output == "json":
        print_json(body)
        return
    from meshems.cli.output import out_console, table

    fresh = "live" if body["fresh"] else f"last good poll, {body['last_error'] or 'no poll since'}"
    title = f"{body['device']} ({body['profile']}) on {body['node']}: {fresh}, {body['age_s']:.1f}s old"
    t = table(*IO_COLUMNS, right=("VALUE", "ADDRESS"), title=title)
    for p in body["points"]:
        value = "-" if p["value"] is None else f"{p['value']:g}"
        t.add_row(p["name"], value, p["unit"], p["role"] or "-", str(p["address"]))
    out_console().print(t)
