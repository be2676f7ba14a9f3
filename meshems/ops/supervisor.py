"""Start, kill and stop local `meshems node run` processes (for the demo, tests, benches).

Owns child processes only: their command lines, log files and clean shutdown (SIGTERM,
then SIGKILL after a bound). Must not talk Raft; it reads status through NodeClient.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

from meshems.adapters.api_tls import ensure_zone_pki
from meshems.core.config import ClusterConfig
from meshems.ops.client import NodeClient


class LocalCluster:
    def __init__(self, cfg: ClusterConfig, config_path: str, secret: str, log_dir: Path) -> None:
        self.cfg = cfg
        self.config_path = config_path
        ensure_zone_pki(cfg)  # a zone on one machine: its CA and node certificates (HTTPS API)
        self.client = NodeClient(cfg, secret, timeout_s=1.0)
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}

    def start(self, node_id: str, *extra: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a node process (`env`: extra environment, e.g. faketime in a test)."""
        self.cfg.node(node_id)
        old = self.procs.get(node_id)
        if old is not None and old.poll() is None:
            raise RuntimeError(f"node {node_id} is already running (pid {old.pid})")
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_dir / f"{node_id}.log", "ab")  # noqa: SIM115 - closed in stop
        cmd = [
            sys.executable,
            "-m",
            "meshems",
            "node",
            "run",
            "--config",
            self.config_path,
            "--node",
            node_id,
            *(["--allow-root"] if os.geteuid() == 0 else []),  # a local cluster of a root shell
            *extra,
        ]
        proc = subprocess.Popen(
            cmd,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        self.procs[node_id], self._logs[node_id] = proc, log
        return proc

    def start_sim(self, node_id: str, site_file: str | None = None, timeout_s: float = 20.0) -> dict:
        """Start `meshems sim` for a node's simulated site; wait until it serves. Returns the
        sim's ready info (bound ports)."""
        return self._wait_sim(node_id, self._launch_sim(node_id, site_file), timeout_s)

    def _launch_sim(self, node_id: str, site_file: str | None = None) -> Path:
        node = self.cfg.node(node_id)
        site = site_file or node.sim_site
        if site is None:
            raise RuntimeError(f"node {node_id} has no sim_site")
        key = f"sim-{node_id}"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        ready = self.log_dir / f"{key}.ready"
        ready.unlink(missing_ok=True)
        log = open(self.log_dir / f"{key}.log", "ab")  # noqa: SIM115 - closed in stop
        cmd = [sys.executable, "-m", "meshems", "sim", "--site", str(self.cfg.path(site)),
               "--ready-file", str(ready)]  # fmt: skip
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs[key], self._logs[key] = proc, log
        return ready

    def _wait_sim(self, node_id: str, ready: Path, timeout_s: float) -> dict:
        key = f"sim-{node_id}"
        proc = self.procs[key]
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if ready.exists() and ready.stat().st_size:
                return json.loads(ready.read_text())
            if proc.poll() is not None:
                raise RuntimeError(f"sim for {node_id} exited:\n{self.log_text(key)[-2000:]}")
            time.sleep(0.05)
        raise TimeoutError(f"sim for {node_id} not serving within {timeout_s} s")

    def start_sims(self, timeout_s: float = 20.0) -> None:
        """Start every initial node's sim at once (they start in parallel), then wait for each."""
        ready = {n.id: self._launch_sim(n.id) for n in self.cfg.nodes if n.initial and n.sim_site}
        for node_id, path in ready.items():
            self._wait_sim(node_id, path, timeout_s)

    def start_all(self) -> None:
        for n in self.cfg.nodes:
            if n.initial:
                self.start(n.id)

    def signal(self, node_id: str, sig: int) -> None:
        proc = self.procs[node_id]
        if proc.poll() is None:
            os.kill(proc.pid, sig)

    def kill(self, node_id: str) -> None:
        """kill -9, and reap it."""
        proc = self.procs[node_id]
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)

    def stop(self, node_id: str, grace_s: float = 5.0) -> int | None:
        proc = self.procs.get(node_id)
        if proc is None:
            return None
        if proc.poll() is None:
            try:
                os.kill(proc.pid, signal.SIGCONT)
                proc.terminate()
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log = self._logs.pop(node_id, None)
        if log:
            log.close()
        return proc.returncode

    def stop_all(self) -> None:
        for node_id in list(self.procs):
            self.stop(node_id)

    def running(self, node_id: str) -> bool:
        proc = self.procs.get(node_id)
        return proc is not None and proc.poll() is None

    def log_text(self, node_id: str) -> str:
        p = self.log_dir / f"{node_id}.log"
        return p.read_text(errors="replace") if p.exists() else ""

    def wait_leader(self, timeout_s: float = 15.0, exclude: set[str] | frozenset = frozenset()) -> str:
        """Wait until one reachable node (not in `exclude`) says it leads with quorum."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            leader = self.client.leader_with_quorum(exclude)
            if leader is not None:
                return leader
            time.sleep(0.05)
        raise TimeoutError(f"no leader within {timeout_s} s")

    def wait_members(self, timeout_s: float = 20.0) -> str:
        """Wait until the leader lists every initial node as a member of the zone (a node is
        declared after the cluster has a leader; a `--zone` deploy targets the members when it
        commits). Returns the leader."""
        ids = {n.id for n in self.cfg.nodes if n.initial}
        end = time.monotonic() + timeout_s
        members: list[str] = []
        while time.monotonic() < end:
            leader = self.wait_leader(max(0.1, end - time.monotonic()))
            try:
                _, body = self.client.request(self.cfg.node(leader), "GET", "/v1/status", timeout_s=1.0)
                members = list(body.get("members") or ())
            except Exception:  # an election or a slow answer: ask again
                members = []
            if ids <= set(members):
                return leader
            time.sleep(0.05)
        raise TimeoutError(f"members {members} within {timeout_s} s, not all of {sorted(ids)}")

    def wait_api(self, node_id: str, timeout_s: float = 15.0) -> None:
        node = self.cfg.node(node_id)
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if not self.running(node_id):
                raise RuntimeError(f"node {node_id} exited:\n{self.log_text(node_id)[-2000:]}")
            try:
                self.client.request(node, "GET", "/v1/status", timeout_s=0.5)
                return
            except Exception:
                time.sleep(0.05)
        raise TimeoutError(f"node {node_id} API not up within {timeout_s} s")
