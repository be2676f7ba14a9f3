"""A `SimRunner` leaves no `meshems-sim-*` temp folder behind: none is made for TCP servers,
the one a pty pair needs goes with `stop()`, and a `meshems sim` process stopped with
SIGTERM removes its own. Each test points the temp folder at its own directory, so other
runs on the machine cannot disturb the count."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshems.adapters.profiles import builtin_profiles
from meshems.sim.server import SimRunner
from meshems.sim.sitefile import parse_site
from tests.conftest import free_ports

pytestmark = pytest.mark.integration
HAVE_SOCAT = shutil.which("socat") is not None
NEEDS_SOCAT = pytest.mark.skipif(not HAVE_SOCAT, reason="socat is installed by scripts/setup")


def site_doc(tmp_path: Path, pty: bool) -> dict[str, Any]:
    servers: list[dict[str, Any]] = [{"id": "tcp", "type": "tcp", "host": "127.0.0.1", "port": 0}]
    if pty:
        servers.append({"id": "pty", "type": "rtu-pty", "link": str(tmp_path / "ttySIM0")})
    devices = [{"server": s["id"], "unit_id": 1, "model": "meter", "profile": "meter"} for s in servers]
    return {"site": {"seed": 1}, "servers": servers, "devices": devices}


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("meshems-sim-*"))


@pytest.fixture
def temp_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This process's temp folder for the test (tempfile.mkdtemp's default directory)."""
    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


@pytest.mark.parametrize("pty", [False, pytest.param(True, marks=NEEDS_SOCAT)], ids=["tcp", "tcp-and-pty"])
def test_start_and_stop_leave_no_temp_folder(tmp_path: Path, temp_folder: Path, pty: bool) -> None:
    spec = parse_site(site_doc(tmp_path, pty), "test-site")

    async def body() -> list[str]:
        runner = SimRunner(spec, builtin_profiles())
        try:
            await runner.start()
            during = leftovers(temp_folder)
        finally:
            await runner.stop()
        await runner.stop()  # a second stop is harmless
        return during

    during = asyncio.run(asyncio.wait_for(body(), timeout=30))
    assert len(during) == (1 if pty else 0)  # made only for the pty pair
    assert leftovers(temp_folder) == []


def test_a_sim_process_stopped_with_sigterm_leaves_no_temp_folder(tmp_path: Path) -> None:
    folder = tmp_path / "tmp"
    folder.mkdir()
    path = tmp_path / "site.yaml"
    (control,) = free_ports(1)
    doc = {**site_doc(tmp_path, pty=HAVE_SOCAT), "control": {"host": "127.0.0.1", "port": control}}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    ready = tmp_path / "ready.json"
    env = {**os.environ, "TMPDIR": str(folder)}
    cmd = [sys.executable, "-m", "meshems", "sim", "--site", str(path), "--ready-file", str(ready)]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        end = time.monotonic() + 20
        while (
            not (ready.exists() and ready.stat().st_size) and proc.poll() is None and time.monotonic() < end
        ):
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[0]
        assert json.loads(ready.read_text())["servers"]["tcp"] > 0
        assert len(leftovers(folder)) == (1 if HAVE_SOCAT else 0)
        # the control API takes a fault as a JSON body (a body cap of 0 made this a 413)
        fault = json.dumps({"server": "tcp", "unit_id": 1, "kind": "silent"}).encode()
        req = urllib.request.Request(f"http://127.0.0.1:{control}/v1/fault", data=fault, method="POST")
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert json.loads(resp.read()) == {"ok": True}
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert leftovers(folder) == []
