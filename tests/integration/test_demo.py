"""The README's main command in miniature: `meshems demo` starts a mesh, shows it, writes
setpoints, and stops every node when it ends."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import write_config
from tests.integration.conftest import meshems_cli

pytestmark = pytest.mark.integration


def node_processes(config: Path) -> list[str]:
    out = subprocess.run(["pgrep", "-af", f"node run --config {config}"], capture_output=True, text=True)
    return [line for line in out.stdout.splitlines() if "pgrep" not in line]


def test_demo_runs_a_mesh_and_stops_it(tmp_path: Path) -> None:
    cfg = write_config(tmp_path)
    out = meshems_cli("demo", "--config", str(cfg), "--duration", "6", timeout=120)
    assert out.returncode == 0, out.stderr
    assert "created the Raft secret" in out.stdout
    assert "leader" in out.stdout and "committed at term" in out.stdout
    assert "all nodes stopped" in out.stdout
    assert node_processes(cfg) == []
    logs = {p.stem: p.read_text() for p in (tmp_path / "data" / "logs").glob("*.log")}
    assert sorted(logs) == ["n1", "n2", "n3"]
    for text in logs.values():
        codes = [json.loads(line)["code"] for line in text.splitlines() if line.startswith("{")]
        assert "I_RAFT_START" in codes and "I_STOP" in codes


def test_demo_deploy_rolls_the_example_payload_out_to_every_node(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, wired=True, policy={"import_limit_kw": 30.0, "cycle_s": 0.5})
    out = meshems_cli("demo", "--config", str(cfg), "--deploy", "--deploy-cycles", "1", "--duration", "15",
                      timeout=120)  # fmt: skip
    assert out.returncode == 0, out.stderr
    copy = tmp_path / ".cluster.demo-deploy.yaml"
    assert f"the nodes run from {copy}" in out.stdout
    public = (tmp_path / "data" / "demo-payload" / "release.pub").read_text().strip()
    assert public in copy.read_text() and public not in cfg.read_text()  # the user's config unchanged
    [summary] = [line for line in out.stdout.splitlines() if line.startswith("--deploy: peak-guard 1.0.0 (")]
    assert summary.endswith(" done; n1 active, n2 active, n3 active"), out.stdout[-3000:]
    assert "payload:peak-guard" in out.stdout  # the leader dispatched the batteries by it
    assert node_processes(copy) == []
