"""`meshems install`: the files below --root with their modes, the config and secret copied
(a secret already there is kept), --dry-run writes nothing, an unknown node is exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshems.cli import main
from meshems.core.errors import ConfigError
from tests.cli.test_pki import run_cli
from tests.conftest import write_config

FILES = {
    "etc/systemd/system/meshems-node.service": 0o644,
    "etc/systemd/system/meshems-firewall.service": 0o644,
    "usr/lib/sysusers.d/meshems.conf": 0o644,
    "usr/lib/tmpfiles.d/meshems.conf": 0o644,
    "etc/meshems/cluster.yaml": 0o640,
}


def source(tmp_path: Path) -> Path:
    (tmp_path / "src").mkdir()
    return write_config(tmp_path / "src")


def modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mode & 0o777 for p in root.rglob("*") if p.is_file()}


def test_install_writes_units_config_and_secret(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = source(tmp_path)
    (tmp_path / "src" / "secret").mkdir()
    (tmp_path / "src" / "secret" / "raft.secret").write_text("the-secret\n")
    root = tmp_path / "root"
    assert run_cli("install", "--config", str(config), "--node", "n2", "--root", str(root)) == 0
    # the config names secret/raft.secret: installed it resolves next to /etc/meshems
    assert modes(root) == {**FILES, "etc/meshems/secret/raft.secret": 0o600}
    assert (root / "etc/meshems/cluster.yaml").read_bytes() == config.read_bytes()
    unit = (root / "etc/systemd/system/meshems-node.service").read_text()
    assert "--config /etc/meshems/cluster.yaml --node n2\n" in unit
    out = capsys.readouterr()
    assert "systemctl enable --now --no-block meshems-node.service" in out.out
    assert "systemd-sysusers" in out.out and "copy the cluster's Raft secret" not in out.out
    assert "raft.data_dir resolves to /etc/meshems/data" in out.err  # not the StateDirectory
    # again, with another secret at the source: the installed one is kept
    (tmp_path / "src" / "secret" / "raft.secret").write_text("another\n")
    assert run_cli("install", "--config", str(config), "--node", "n2", "--root", str(root)) == 0
    assert (root / "etc/meshems/secret/raft.secret").read_text() == "the-secret\n"


def test_missing_secret_is_a_next_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = source(tmp_path)
    assert run_cli("install", "--config", str(config), "--node", "n1", "--root", str(tmp_path / "r")) == 0
    assert "copy the cluster's Raft secret to /etc/meshems/secret/raft.secret" in capsys.readouterr().out


def test_dry_run_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = source(tmp_path)
    root = tmp_path / "root"
    assert run_cli("install", "--config", str(config), "--node", "n1", "--root", str(root), "--dry-run") == 0
    assert not root.exists()
    out = capsys.readouterr().out
    assert f"--- {root}/etc/systemd/system/meshems-node.service (mode 0644)" in out
    assert "Type=notify" in out and "would remain" in out


def test_unknown_node_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = source(tmp_path)
    root = tmp_path / "root"
    with pytest.raises(ConfigError, match=r"no node 'n9' in nodes \(known: n1, n2, n3\)"):
        run_cli("install", "--config", str(config), "--node", "n9", "--root", str(root))
    assert main(["install", "--config", str(config), "--node", "n9", "--root", str(root)]) == 2
    assert "E_CONFIG" in capsys.readouterr().err
    assert not root.exists()
