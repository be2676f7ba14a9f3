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
    "io probe": "meshems io probe --host 192.168.1.50 --unit 1 --table input --address 0 --count 10 "
    "--type float32 --order CDAB",
}
IO_COLUMNS = ("POINT", "VALUE", "UNIT", "ROLE", "ADDRESS")
PROBE_COLUMNS = ("ADDRESS", "RAW", "VALUE")
TYPES = ("int16", "uint16", "int32", "uint32", "int64", "uint64", "float32", "float64", "string", "bool")


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

    s = add_command(
        io,
        "probe",
        "read (or write) raw Modbus points with no config at all, like modpoll",
        EXAMPLES["io probe"],
        config=False,
    )
    add_link_args(s)
    s.add_argument("--table", choices=["holding", "input", "coil", "discrete"], default="holding")
    s.add_argument("--address", type=int, required=True, help="0-based address as sent on the wire")
    s.add_argument("--count", type=int, default=1, help="values to read (a string: its registers)")
    s.add_argument("--type", choices=TYPES, help="value type (default uint16; bool for coils and inputs)")
    s.add_argument(
        "--order", choices=["ABCD", "CDAB", "BADC", "DCBA"], default="ABCD", help="byte/word order"
    )
    s.add_argument("--scale", type=float, default=1.0, help="engineering value = raw * scale")
    s.add_argument(
        "--write", metavar="VALUE", help="write one value (register(s) or coil), then read it back"
    )
    s.add_argument("--yes", action="store_true", help="confirm --write: it moves a live device")
    add_output(s)
    s.set_defaults(run=cmd_io_probe)


def add_link_args(s: Any) -> None:
    """--host/--port/--unit, or --rtu/--baud/--parity/--stopbits, and --timeout."""
    s.add_argument("--host", help="Modbus TCP host (a device or a serial-to-Ethernet gateway)")
    s.add_argument("--port", type=int, default=502)
    s.add_argument("--unit", type=int, default=1, help="unit id (slave address), default 1")
    s.add_argument("--rtu", metavar="DEVICE", help="Modbus RTU on this serial port, e.g. /dev/ttyUSB0")
    s.add_argument("--rtu-over-tcp", action="store_true", help="RTU frames over TCP to --host (a converter)")
    s.add_argument("--baud", type=int, default=9600)
    s.add_argument("--parity", choices=["N", "E", "O"], default="N")
    s.add_argument("--stopbits", type=int, choices=[1, 2], default=1)
    s.add_argument("--timeout", type=float, default=1.0, help="answer timeout (s), default 1")


def link_from(args: Any) -> Any:
    """A `ModbusLink` for --host or --rtu (ConfigError naming the option when they are wrong)."""
    from pydantic import ValidationError

    from meshems.adapters.modbus import ModbusLink
    from meshems.core.config import BusConfig
    from meshems.core.errors import ConfigError

    if (args.host is None) == (args.rtu is None):
        raise ConfigError("give --host H (Modbus TCP) or --rtu DEVICE (Modbus RTU), one of them")
    kind = "rtu" if args.rtu else "rtu-over-tcp" if args.rtu_over_tcp else "tcp"
    fields: dict[str, Any] = {"id": "probe", "type": kind, "timeout_s": args.timeout}
    if args.rtu:
        fields.update(serial_port=args.rtu, baud=args.baud, parity=args.parity, stopbits=args.stopbits)
    else:
        fields.update(host=args.host, port=args.port)
    try:
        return ModbusLink(BusConfig(**fields))
    except ValidationError as exc:
        raise ConfigError(f"bad link options: {exc.errors()[0]['msg']}") from None


def _probe_point(args: Any, address: int, writable: bool = False) -> Any:
    from meshems.core.point import Point

    bits = args.table in ("coil", "discrete")
    kind = args.type or ("bool" if bits else "uint16")
    extra: dict[str, Any] = {"length": args.count} if kind == "string" else {}
    return Point(
        name=f"{args.table}:{address}",
        address=address,
        type=kind,
        word_order=args.order,
        scale=args.scale,
        table=args.table,
        access="rw" if writable else "r",
        **extra,
    )


def cmd_io_probe(args: Any) -> int:
    import asyncio

    from meshems.core.errors import ConfigError

    try:
        link = link_from(args)
        first = _probe_point(args, args.address, writable=args.write is not None)
    except (ConfigError, ValueError) as exc:
        print(f"error E_USAGE: {getattr(exc, 'message', exc)}", file=sys.stderr)
        return 2
    if args.write is not None and not args.yes:
        print(
            f"error E_USAGE: --write moves a live device ({first.name} on unit {args.unit}); add --yes",
            file=sys.stderr,
        )
        return 2
    if not 1 <= args.count <= 2000:
        print("error E_USAGE: --count must be 1..2000", file=sys.stderr)
        return 2
    return asyncio.run(_probe(args, link, first))


async def _probe(args: Any, link: Any, first: Any) -> int:
    from meshems.adapters.modbus import FieldError
    from meshems.core.registers import CodecError, decode, encode

    values = 1 if first.type == "string" else args.count
    try:
        if args.write is not None:
            value: Any = args.write if first.type == "string" else float(args.write)
            words = encode(first, value)
            if first.bits:
                await link.write_bits(args.unit, first.address, words)
            else:
                await link.write(args.unit, first.address, words, single=len(words) == 1)
            values = 1
        raw = await link.read(args.unit, first.address, first.count * values, args.table)
    except (CodecError, ValueError) as exc:
        print(f"error E_USAGE: {exc}", file=sys.stderr)
        return 2
    except FieldError as exc:
        return fail(exc.code, f"unit {args.unit}, {args.table} {first.address}: {exc.detail}")
    finally:
        await link.close()
    rows = []
    for i in range(values):
        p = _probe_point(args, first.address + i * first.count)
        chunk = raw[i * first.count : (i + 1) * first.count]
        v = decode(p, chunk)
        rows.append({"address": p.address, "raw": list(chunk), "value": v})
    if args.output == "json":
        print_json(
            {"unit": args.unit, "table": args.table, "type": first.type, "order": args.order, "values": rows}
        )
        return 0
    from meshems.cli.output import out_console, table

    t = table(
        *PROBE_COLUMNS,
        right=("ADDRESS", "VALUE"),
        title=f"unit {args.unit}, {args.table}, {first.type} {args.order}",
    )
    for r in rows:
        raw_text = " ".join(f"{w:04X}" for w in r["raw"]) if not first.bits else str(r["raw"][0])
        value = r["value"] if isinstance(r["value"], str) else f"{r['value']:g}"
        t.add_row(str(r["address"]), raw_text, value)
    out_console().print(t)
    return 0


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
