"""The README's command reference, written from the argument tree itself: every leaf command
with its help line and its example, in `meshems --help` order. `scripts/docs` rewrites the
README section between the markers; a test fails when the README and the parser disagree.

Documentation only: nothing imports it at run time.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterator

START = "<!-- commands:start (scripts/docs writes this section) -->"
END = "<!-- commands:end -->"


def leaves(
    p: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    """(`group sub`, parser) for every command that runs something, depth first (a command
    that runs something and has subcommands too, as `deploy`, comes before them)."""
    for action in p._actions:
        if isinstance(action, argparse._SubParsersAction):
            if not action.required and p.get_default("run") is not None:
                yield " ".join(prefix), p
            for name, sp in action.choices.items():
                yield from leaves(sp, (*prefix, name))
            return
    yield " ".join(prefix), p


def section() -> str:
    """The markdown between START and END: one row per command."""
    from meshems.cli.parser import ALL, build_parser

    rows = ["| command | what it does | example |", "|---|---|---|"]
    for name, p in leaves(build_parser(ALL)):
        example = (p.epilog or "").removeprefix("Example: ").strip()
        help_ = (p.description or "").replace("|", "\\|").strip()
        rows.append(f"| `meshems {name}` | {help_} | `{example}` |")
    return "\n".join([START, "", *rows, "", END])


def rewrite(readme: str) -> str:
    """`readme` with its command reference replaced by `section()` (ValueError without markers)."""
    head, start, rest = readme.partition(START)
    _, end, tail = rest.partition(END)
    if not start or not end:
        raise ValueError(f"README has no {START!r} ... {END!r} section")
    return head + section() + tail
