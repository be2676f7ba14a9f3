"""The `meshems` argument tree: the command being run gets exactly the parser the whole tree
has, `meshems --help` lists every command in its order, and every command runs something."""

from __future__ import annotations

import argparse
import contextlib
import io

import pytest

from meshems.cli import cluster
from meshems.cli.parser import ALL, COMMANDS, GROUPS, build_parser, command_of


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def leaves(parser: argparse.ArgumentParser, path: tuple[str, ...] = (), run: object = None) -> list:
    """(path, parser, run) of every leaf command, `run` inherited from a group's parser."""
    run = parser.get_default("run") or run
    subs = subparsers(parser)
    if not subs:
        return [(path, parser, run)]
    return [leaf for name, sp in subs.items() for leaf in leaves(sp, (*path, name), run)]


def help_text(argv: list[str], only: str | None) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        build_parser(only).parse_args(argv)
    return out.getvalue()


ALL_LEAVES = leaves(build_parser(ALL))


def test_every_command_is_added_by_the_group_the_table_names() -> None:
    assert set(subparsers(build_parser(ALL))) == set(COMMANDS)
    assert set(COMMANDS.values()) == set(GROUPS)
    for command, group in COMMANDS.items():
        assert command in subparsers(build_parser(command)), (command, group)


@pytest.mark.parametrize("path", [p for p, _, _ in ALL_LEAVES], ids=" ".join)
def test_the_command_being_run_gets_the_whole_trees_parser(
    path: tuple[str, ...], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    argv = [*path, "--help"]
    lazy = help_text(argv, command_of(argv))
    assert lazy == help_text(argv, ALL)
    assert "\nExample: " in lazy and "meshems " in lazy.rpartition("Example: ")[2]


def test_every_leaf_runs_a_function() -> None:
    assert len(ALL_LEAVES) >= 30
    for path, _, run in ALL_LEAVES:
        assert callable(run), path


def test_the_command_list_is_in_table_order_with_the_status_example(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    text = help_text(["--help"], None)
    positions = [text.index(f"\n    {name} ") for name in COMMANDS]
    assert positions == sorted(positions)
    assert text.rstrip().endswith(f"Example: {cluster.EXAMPLES['status']}")
    assert help_text(["--help"], None) == help_text(["--help"], "no-such-command")


def test_command_of_reads_the_first_word() -> None:
    assert command_of(["setpoint", "set"]) == "setpoint"
    assert command_of(["--help"]) is None and command_of([]) is None


def test_an_unknown_command_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        build_parser(command_of(["bogus"])).parse_args(["bogus"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'bogus'" in err and all(repr(name) in err for name in COMMANDS)
