"""`meshems pki init | issue | show`: the CA on the command line, its defaults next to the
config, `--dir`, the output as JSON and table, and exit code 1 when a certificate expired."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from meshems.adapters import pki
from meshems.cli.parser import build_parser, command_of
from meshems.core.errors import ConfigError
from tests.conftest import write_config


def run_cli(*argv: str) -> int:
    """Run a command as `meshems` would, but let its MeshemsError through."""
    args = build_parser(command_of(list(argv))).parse_args(list(argv))
    return args.run(args)


def test_cli_init_issue_show(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(write_config(tmp_path, nodes=2))
    assert run_cli("pki", "init", "--config", config) == 0
    assert (tmp_path / ".meshems" / "pki" / "ca.key").exists()  # default: next to the config
    assert run_cli("pki", "issue", "--config", config, "--node", "n1") == 0
    assert run_cli("pki", "issue", "--config", config, "--server", "broker", "--days", "30") == 0
    with pytest.raises(ConfigError, match="no node 'n9'"):
        run_cli("pki", "issue", "--config", config, "--node", "n9")
    with pytest.raises(ConfigError, match="already exists"):
        run_cli("pki", "init", "--config", config)
    capsys.readouterr()
    assert run_cli("pki", "show", "--config", config, "-o", "json") == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["kind"], r["cn"]) for r in rows] == [
        ("ca", "ca", "meshems-test"),
        ("broker", "server", "broker"),
        ("n1", "node", "n1"),
    ]
    assert rows[1]["days_to_expiry"] in (29, 30)
    assert run_cli("pki", "show", "--config", config) == 0
    assert "broker" in capsys.readouterr().out


def test_cli_dir_override_and_show_exit_code_on_expiry(tmp_path: Path) -> None:
    config = str(write_config(tmp_path, nodes=1))
    folder = tmp_path / "elsewhere"
    assert run_cli("pki", "init", "--config", config, "--dir", str(folder)) == 0
    now = datetime.now(UTC)
    pki.issue(folder, "old", "client", not_before=now - timedelta(days=9), not_after=now - timedelta(days=1))
    assert run_cli("pki", "show", "--config", config, "--dir", str(folder), "-o", "json") == 1
