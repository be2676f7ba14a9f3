"""`meshems lab` arguments (no root, no namespaces): durations, and an example per subcommand."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from meshems.cli.lab import EXAMPLES, parse_duration


@pytest.mark.parametrize(("text", "seconds"), [("90", 90.0), ("90s", 90.0), ("15m", 900.0), ("2h", 7200.0)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "2d", "-5m", "m"])
def test_parse_duration_refuses_garbage(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="duration"):
        parse_duration(text)


def test_every_lab_subcommand_has_an_example_in_its_help() -> None:
    for sub, example in EXAMPLES.items():
        cmd = [sys.executable, "-m", "meshems", "lab", sub, "--help"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0 and f"Example: {example}" in out.stdout, sub
