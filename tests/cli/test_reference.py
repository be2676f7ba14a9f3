"""The README documents every command the parser has, with its help line and example."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshems.cli.parser import ALL, build_parser
from meshems.cli.reference import END, START, leaves, rewrite, section

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_readme_command_reference_is_the_parsers() -> None:
    text = README.read_text()
    assert section() in text, "the README's command reference is out of date: run scripts/docs"


def test_every_command_has_an_example_and_a_help_line() -> None:
    for name, p in leaves(build_parser(ALL)):
        assert (p.epilog or "").startswith("Example: meshems ") or "meshems" in (p.epilog or ""), name
        assert p.description, name


def test_rewrite_replaces_only_the_section_and_needs_its_markers() -> None:
    doc = f"# t\nbefore\n{START}\nSTALE-TEXT\n{END}\nafter\n"
    out = rewrite(doc)
    assert out.startswith("# t\nbefore\n") and out.endswith("\nafter\n") and "STALE-TEXT" not in out
    with pytest.raises(ValueError, match="commands:start"):
        rewrite("# no markers\n")
