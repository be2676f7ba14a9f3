"""The node as systemd runs it, with real node processes: the notify protocol against a test
socket (no READY without a leader, READY once joined, WATCHDOG at half the interval, silence
while the process is stopped), the root refusal, and a node run as an unprivileged user with
no capabilities and W^X memory (what the unit's User= and MemoryDenyWriteExecute= give it)."""

from __future__ import annotations

import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshems.ops.supervisor import LocalCluster
from tests.conftest import write_config
from tests.integration.conftest import ClusterFactory, meshems_cli

pytestmark = pytest.mark.integration

WATCHDOG_S = 1.0


class Manager:
    """The service manager's side: a datagram socket collecting (time, fields)."""

    def __init__(self, folder: Path) -> None:
        self.path = str(folder / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, dict[str, str]]] = []

    def collect(self, seconds: float) -> list[tuple[float, dict[str, str]]]:
        end = time.monotonic() + seconds
        got = []
        while (left := end - time.monotonic()) > 0:
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                break
            fields = dict(line.split("=", 1) for line in data.decode().splitlines())
            got.append((time.monotonic(), fields))
        self.messages += got
        return got

    def wait_for(self, key: str, timeout_s: float) -> dict[str, str]:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            for _, fields in self.collect(min(0.2, end - time.monotonic())):
                if key in fields:
                    return fields
        raise AssertionError(f"no {key} within {timeout_s} s; got {self.messages[-5:]}")


@pytest.fixture
def manager(tmp_path: Path) -> Iterator[Manager]:
    m = Manager(tmp_path)
    try:
        yield m
    finally:
        m.sock.close()


def pings(msgs: list[tuple[float, dict[str, str]]]) -> list[float]:
    return [t for t, f in msgs if "WATCHDOG" in f]


def test_ready_after_join_watchdog_and_silence_when_stalled(
    make_cluster: ClusterFactory, manager: Manager, monkeypatch: pytest.MonkeyPatch
) -> None:
    c = make_cluster(nodes=2, start=False)
    monkeypatch.setenv("NOTIFY_SOCKET", manager.path)  # the node process inherits it
    monkeypatch.setenv("WATCHDOG_USEC", str(int(WATCHDOG_S * 1e6)))
    c.start("n1")
    # alone, n1 has no quorum and no leader: it pings the watchdog but is not READY
    alone = manager.collect(4.0)
    assert len(pings(alone)) >= 4, alone
    assert not any("READY" in f for _, f in alone), alone
    assert any("joining the cluster" in f.get("STATUS", "") for _, f in alone), alone
    monkeypatch.delenv("NOTIFY_SOCKET")  # n2 is not the unit under test
    c.start("n2")
    ready = manager.wait_for("READY", 20.0)
    assert ready["READY"] == "1"
    leader = c.wait_leader()
    status = next(f["STATUS"] for _, f in reversed(manager.messages) if "STATUS" in f)
    assert status.startswith(("leader, term ", "follower, term ")) and status.endswith(f"leader {leader}")
    # WATCHDOG=1 every half interval, not every tick
    steady = pings(manager.collect(3.0))
    gaps = [b - a for a, b in itertools.pairwise(steady)]
    assert 4 <= len(steady) <= 8, steady
    assert all(0.35 <= g <= 0.8 for g in gaps), gaps
    # a stalled loop (the whole process stopped) sends nothing; it resumes after SIGCONT
    c.signal("n1", signal.SIGSTOP)
    try:
        assert manager.collect(2.5 * WATCHDOG_S) == []
    finally:
        c.signal("n1", signal.SIGCONT)
    assert pings(manager.collect(1.5))
    assert sum("READY" in f for _, f in manager.messages) == 1


def test_node_run_refuses_root_without_allow_root(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("the root refusal needs a root test run")
    out = meshems_cli("node", "run", "--config", str(write_config(tmp_path)), "--node", "n1", timeout=30)
    assert out.returncode == 2
    assert "E_ROOT" in out.stderr and "--allow-root" in out.stderr and "meshems install" in out.stderr


def _unprivileged_python(env: dict[str, str]) -> str | None:
    """An interpreter `nobody` can run that imports meshems (the venv's may live under /root)."""
    minor = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for cand in (os.path.realpath(sys.executable), f"/usr/bin/{minor}"):
        if not os.path.exists(cand):
            continue
        probe = subprocess.run([*SETPRIV, cand, "-c", PROBE], env=env, capture_output=True, timeout=60)
        if probe.returncode == 0:
            return cand
    return None


#: setpriv execs the interpreter before its capabilities go: the probe checks it can exec itself
PROBE = "import os, sys, meshems.node.daemon; sys.exit(0 if os.access(sys.executable, os.X_OK) else 1)"
SETPRIV = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--no-new-privs",
           "--bounding-set=-all", "--inh-caps=-all"]  # fmt: skip
#: PR_SET_MDWE(PR_MDWE_REFUSE_EXEC_GAIN), then exec the node: MemoryDenyWriteExecute= in effect
#: (Linux 6.3+; systemd 252 uses seccomp for it, newer ones this prctl)
MDWE = (
    "import ctypes,os,sys; assert ctypes.CDLL(None).prctl(65,1,0,0,0) == 0, 'PR_SET_MDWE'; "
    "os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"
)


def test_node_runs_as_an_unprivileged_user() -> None:
    if os.geteuid() != 0:
        pytest.skip("running a node as another user needs a root test run")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) missing")
    site = next(p for p in sys.path if p.endswith("site-packages") and ".venv" in p)
    repo = str(Path(__file__).resolve().parents[2])
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": f"{site}:{repo}", "PYTHONNOUSERSITE": "1", "HOME": "/"}
    python = _unprivileged_python(env)
    if python is None:
        pytest.skip("no Python interpreter reachable by user nobody imports meshems")
    folder = Path(tempfile.mkdtemp(prefix="meshems-unpriv-"))  # pytest's tmp is root's (0700)
    proc = None
    try:
        config = write_config(folder, nodes=1)
        out = meshems_cli("secret", "init", "--config", str(config))  # also the zone's certificates
        assert out.returncode == 0, out.stderr
        from meshems.adapters.config_file import load_config
        from meshems.adapters.secret import read_secret

        cfg = load_config(config)
        cluster = LocalCluster(cfg, str(config), read_secret(cfg.secret_path), folder / "logs")
        subprocess.run(["chown", "-R", "nobody:nogroup", str(folder)], check=True, timeout=30)
        log = folder / "node.log"
        with log.open("wb") as f:
            cmd = [
                python,
                "-c",
                MDWE,
                "-m",
                "meshems",
                "node",
                "run",
                "--config",
                str(config),
                "--node",
                "n1",
            ]
            proc = subprocess.Popen([*SETPRIV, *cmd], env=env, cwd=folder, stdout=f, stderr=subprocess.STDOUT)
        end = time.monotonic() + 30
        leader = None
        while time.monotonic() < end and leader is None:
            assert proc.poll() is None, log.read_text()[-2000:]
            leader = cluster.client.leader_with_quorum(frozenset())
            time.sleep(0.1)
        assert leader == "n1", log.read_text()[-2000:]
        status = Path(f"/proc/{proc.pid}/status").read_text()
        assert "Uid:\t65534" in status and "CapEff:\t0000000000000000" in status
        assert "W_ROOT" not in log.read_text() and "E_ROOT" not in log.read_text()
    finally:
        if proc is not None and proc.poll() is None:
            proc.terminate()
            proc.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)
