"""The `meshems` argument tree: the top-level parser and one `add_parsers(subparsers)` per
command group. Owns which group adds which command, the order `--help` lists them in, and
building only the group and subtree of the command being run (argparse spends about 0.4 ms
per parser, mostly in gettext; the whole tree has 45). Must not import what commands use.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

#: every command, in the order `meshems --help` lists them, and its group (meshems.cli.GROUP)
COMMANDS = {
    "secret": "cluster",
    "node": "cluster",
    "status": "cluster",
    "setpoint": "cluster",
    "member": "cluster",
    "sim": "field",
    "policy": "control",
    "explain": "control",
    "relay": "relay",
    "overlay": "overlay",
    "firewall": "firewall",
    "forecast": "forecast",
    "plan": "plan",
    "payload": "payload",
    "deploy": "deploy",
    "devices": "field",
    "io": "io",
    "sunspec": "sunspec",
    "demo": "demo",
    "lab": "lab",
    "pki": "pki",
    "cloud": "cloud",
    "token": "token",
    "install": "install",
    "doctor": "doctor",
}
#: the groups in the order they add their commands
GROUPS = (
    "cluster", "field", "io", "sunspec", "control", "forecast", "plan", "relay", "overlay", "firewall", "pki",
    "token", "payload", "deploy", "cloud", "lab", "demo",
    "install", "doctor",
)  # fmt: skip
#: `build_parser(ALL)`: every command's real parser (tests, documentation)
ALL = "*"


class _Listed:
    """A command's parser when another command runs: it swallows the definitions (the
    command is listed by name and help only), as argparse would store them unused."""

    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: self


class _Commands:
    """Stands in for the top-level subparsers while the groups add their commands: `only`
    gets its real parser; without it (`meshems --help`, an unknown command) every command
    gets a help line, added in COMMANDS order at `finish`."""

    def __init__(self, sub: Any, only: str | None) -> None:
        self.sub, self.only = sub, only
        self.listed: dict[str, str | None] = {}

    def add_parser(self, name: str, **kwargs: Any) -> Any:
        if self.only in (ALL, name):
            return self.sub.add_parser(name, **kwargs)
        self.listed[name] = kwargs.get("help")
        return _Listed()

    def finish(self) -> None:
        if self.only in COMMANDS:
            return  # nothing lists the others: the command itself is a valid choice
        rank = {name: i for i, name in enumerate(COMMANDS)}
        for name in sorted(self.listed, key=lambda n: rank.get(n, len(COMMANDS))):
            self.sub.add_parser(name, help=self.listed[name], add_help=False)


def build_parser(only: str | None = ALL) -> argparse.ArgumentParser:
    """The `meshems` parser: with every command's real parser (`ALL`), with only command
    `only`'s (the one being run: only its group is imported), or with the list of commands
    (`None`, or an unknown command: enough for `meshems --help` and usage errors). Each leaf
    sets `run`, the function that runs it: `run(args) -> exit code`."""
    p = argparse.ArgumentParser(
        prog="meshems",
        description="An edge energy-management mesh: gateways that govern a microgrid over Raft.",
        epilog="Example: meshems status --config cluster-configs/local-3.yaml -o json",
    )
    commands = _Commands(p.add_subparsers(dest="cmd", required=True, metavar="COMMAND"), only)
    for group in [COMMANDS[only]] if only in COMMANDS else GROUPS:
        importlib.import_module(f"meshems.cli.{group}").add_parsers(commands)
    commands.finish()
    return p


def command_of(argv: list[str]) -> str | None:
    """The command named in `argv` (its first word; the top level has no other options than
    -h), or None."""
    return argv[0] if argv and not argv[0].startswith("-") else None
