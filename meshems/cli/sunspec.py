"""`meshems sunspec scan`: find a device's SunSpec base, walk its model chain and list each
model (id, name, length, address) with its points, scale factors applied; no config needed.
Owns the command's arguments and output; the chain is `adapters.sunspec`, the wire
`adapters.modbus` (the link options are `io probe`'s).
"""

from __future__ import annotations

import sys
from typing import Any

from meshems.cli.args import add_command, add_group, add_output
from meshems.cli.output import fail, print_json

EXAMPLES = {"sunspec scan": "meshems sunspec scan --host 192.168.1.60 --unit 1 -o json"}


def add_parsers(sub: Any) -> None:
    """Add `sunspec scan` to the top-level subparsers."""
    from meshems.cli.io import add_link_args

    group = add_group(sub, "sunspec", "SunSpec devices: discover their models and points")
    s = add_command(
        group,
        "scan",
        "find the SunSpec base (40000, 0, 50000 and the 1-based variants) and list the model chain",
        EXAMPLES["sunspec scan"],
        config=False,
    )
    add_link_args(s)
    s.add_argument("--base", type=int, help="skip the search: the marker is at this address")
    s.add_argument("--all", action="store_true", help="also list points the device does not implement")
    add_output(s)
    s.set_defaults(run=cmd_sunspec_scan)


def cmd_sunspec_scan(args: Any) -> int:
    import asyncio

    from meshems.cli.io import link_from
    from meshems.core.errors import ConfigError

    try:
        link = link_from(args)
    except ConfigError as exc:
        print(f"error E_USAGE: {exc.message}", file=sys.stderr)
        return 2
    return asyncio.run(_scan(args, link))


async def _scan(args: Any, link: Any) -> int:
    from meshems.adapters import sunspec
    from meshems.adapters.modbus import FieldError

    async def read(address: int, count: int) -> list[int]:
        return await link.read(args.unit, address, count)

    def progress(text: str) -> None:
        if args.output != "json":
            print(f"scan: {text}", file=sys.stderr)

    try:
        chain = await sunspec.scan(read, base=args.base, progress=progress)
    except sunspec.SunSpecError as exc:
        return fail(exc.code, f"unit {args.unit}: {exc.message}")
    except FieldError as exc:
        return fail(exc.code, f"unit {args.unit}: {exc.detail}")
    finally:
        await link.close()
    body = chain.as_dict()
    if not args.all:
        for m in body["models"]:
            m["points"] = [p for p in m["points"] if p["value"] is not None]
    if args.output == "json":
        print_json({"unit": args.unit, **body})
        return 0
    from meshems.cli.output import out_console, table

    console = out_console()
    console.print(
        f"SunSpec base {chain.base}, {len(chain.models)} models: {', '.join(map(str, chain.ids()))}"
    )
    for m in body["models"]:
        title = f"model {m['id']} {m['name']} at {m['address']}, {m['length']} registers"
        t = table("POINT", "VALUE", "UNITS", right=("VALUE",), title=title)
        for p in m["points"]:
            v = p["value"]
            t.add_row(
                p["name"], "-" if v is None else (f"{v:g}" if isinstance(v, float) else str(v)), p["units"]
            )
        console.print(t)
    return 0
