"""What the command groups share to declare their commands: a command with its help, its
example and `--config`, a group of subcommands, the `-o table|json` option.

argparse only; must not import anything a command needs to run.
"""

from __future__ import annotations

import argparse
from typing import Any

CONFIG_HELP = "cluster config (YAML)"


def add_command(parent: Any, name: str, help_: str, example: str, config: bool = True) -> Any:
    """A leaf command under `parent` (a subparsers action): its help is also its
    description, its example the epilog; `--config/-c` unless `config=False`."""
    sp = parent.add_parser(
        name,
        help=help_,
        description=help_,
        epilog=f"Example: {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if config:
        sp.add_argument("--config", "-c", required=True, help=CONFIG_HELP)
        creds = sp.add_argument_group(
            "credentials for the node API (default: the config's operator certificate, else the "
            "cluster secret; env MESHEMS_TOKEN, MESHEMS_CERT, MESHEMS_KEY)"
        )
        creds.add_argument("--token", help="a scoped token (meshems token create)")
        creds.add_argument(
            "--cert", help="an operator certificate of the zone CA (meshems pki issue --operator)"
        )
        creds.add_argument("--key", help="its private key")
    return sp


def add_group(sub: Any, name: str, help_: str, **kwargs: Any) -> Any:
    """A command with subcommands (`meshems NAME SUBCOMMAND`); returns its subparsers, whose
    choice lands in `args.sub`."""
    return sub.add_parser(name, help=help_, **kwargs).add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND"
    )


def add_output(sp: Any) -> None:
    sp.add_argument("-o", "--output", choices=["table", "json"], default="table")
