"""A lab of N simulated gateways on one Linux machine: each in its own network namespace,
joined by a WireGuard (wireguard-go) mesh, running a real `meshems node run` and, unless
asked not to, a simulated site with real Modbus servers.

Owns the lab folder (config, keys, secret, logs, traces, `lab-state.json`) and the
processes it starts; kills, pauses, resumes, restarts nodes and cuts/heals links through
netlab. Must not decide what a fault schedule is (schedule.py) or judge a run (checker.py).
The state file is written before anything is created, so `meshems lab down` can always undo
a lab, even after the process that built it crashed.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

from meshems.adapters.api_tls import ensure_zone_pki
from meshems.adapters.config_file import load_config
from meshems.adapters.secret import init_secret, read_secret
from meshems.adapters.wireguard import keygen
from meshems.core.config import ClusterConfig
from meshems.lab import netlab
from meshems.lab.diskfull import PREFIX as DISK_PREFIX
from meshems.lab.diskfull import SmallDisk, unmount_disks
from meshems.lab.labconfig import API_PORT as API_PORT
from meshems.lab.labconfig import MODBUS_PORT as MODBUS_PORT
from meshems.lab.labconfig import RAFT_PORT as RAFT_PORT
from meshems.lab.labconfig import write_lab_config
from meshems.lab.netlab import LabError, NetPlan
from meshems.lab.powerloss import LossyMount, lossy_ready, unmount_stale
from meshems.ops.client import NodeClient

STATE = "lab-state.json"
#: Debian's libfaketime: with it, the fault run's nodes read their clocks' offset from a file
#: the clock_jump fault rewrites
LIBFAKETIME = Path("/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1")


class Lab:
    """One lab: its plan, config, processes. Use `Lab.create(...)` or `Lab.open(folder)`."""

    def __init__(
        self,
        folder: Path,
        plan: NetPlan,
        cfg: ClusterConfig,
        pids: dict[str, int],
        clocks: bool = False,
        blackout: bool = False,
        disks: bool = False,
    ) -> None:
        self.folder = folder
        self.plan = plan
        self.cfg = cfg
        self.pids = pids
        self.clocks = clocks  # nodes run under libfaketime with a clock file each (set_clock)
        self.lossy_data = blackout  # every node's data folder is a lossyfs mount (blackout)
        self.disks = disks  # every node's data on its own small tmpfs (diskfull: the fault fills it)
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self._logs: dict[str, IO[bytes]] = {}
        ensure_zone_pki(cfg)  # the lab's zone CA and node certificates (HTTPS API)
        self.client = NodeClient(cfg, read_secret(cfg.secret_path, str(cfg.source)), timeout_s=1.0)

    # --- building and opening -----------------------------------------------------------

    @classmethod
    def create(
        cls,
        folder: Path,
        nodes: int = 3,
        sims: bool = True,
        progress: Any = print,
        clocks: bool = False,
        blackout: bool = False,
        fsync: bool = True,
        disks: bool = False,
    ) -> Lab:
        """Build a lab; `clocks`: nodes under libfaketime, so `set_clock` can move their clocks;
        `blackout`: every node's data folder on its own lossyfs mount, so `blackout` can cut power;
        `fsync`: the nodes' `raft.fsync`; `disks`: every node's data on its own tmpfs (`disk`)."""
        if os.geteuid() != 0:
            raise LabError("the lab needs root (network namespaces, wireguard-go, nft)")
        if not 1 <= nodes <= 9:
            raise LabError(f"--nodes {nodes}: a lab has 1 to 9 gateways")
        folder.mkdir(parents=True, exist_ok=True)
        if (folder / STATE).exists():
            raise LabError(f"{folder / STATE} exists: a lab lives there; `meshems lab down --dir {folder}`")
        plan = NetPlan.make(secrets.token_hex(2), netlab.free_octet(), [f"n{i + 1}" for i in range(nodes)])
        path = write_lab_config(folder, plan, sims, fsync)
        cfg = load_config(path)
        init_secret(cfg.secret_path)
        for n in plan.nodes:
            keygen(cfg, n)
        if clocks and not LIBFAKETIME.exists():
            raise LabError(f"clock faults need libfaketime ({LIBFAKETIME}; Debian faketime, scripts/setup)")
        if blackout and not lossy_ready():
            raise LabError("blackouts need /dev/fuse, fusermount3 (Debian fuse3) and mfusepy (scripts/setup)")
        lab = cls(folder, plan, cfg, {}, clocks, blackout, disks)
        for n in plan.nodes if clocks else ():
            lab.set_clock(n, 0)
        lab._save()  # before anything exists outside the folder, so `lab down` can undo it all
        subnet = f"10.98.{plan.octet}.0/24"
        progress(f"lab {plan.tag}: building {nodes} namespaces on bridge {plan.bridge} ({subnet})")
        try:
            netlab.build(plan)
            for n in plan.nodes:
                out = lab.exec_meshems(n, "overlay", "up", "--config", str(path), "--node", n)
                if out.returncode != 0:
                    raise LabError(f"overlay up on {n} failed: {out.stderr.strip()}")
            progress(f"lab {plan.tag}: wireguard-go mesh up (10.77.{plan.octet}.0/24)")
            for n in plan.nodes if disks else ():
                lab.disk(n).mount()  # under the lossyfs (its backing), so it fills the synced data
            for n in plan.nodes if blackout else ():
                lab.start_lossyfs(n)
            if blackout:
                progress(f"lab {plan.tag}: data folders on lossyfs mounts (unsynced writes can be dropped)")
            if sims:
                for n in plan.nodes:
                    lab.start_sim(n)
                progress(f"lab {plan.tag}: {nodes} simulated sites serving Modbus")
            for n in plan.nodes:
                lab.start_node(n)
        except BaseException:
            lab.down()
            raise
        return lab

    @classmethod
    def open(cls, folder: Path) -> Lab:
        state_path = folder / STATE
        if not state_path.exists():
            raise LabError(f"{state_path}: no lab there (start one with `meshems lab up --dir {folder}`)")
        state = json.loads(state_path.read_text())
        plan = NetPlan(**state["plan"])
        cfg = load_config(folder / "lab.yaml")
        pids = {k: int(v) for k, v in state.get("pids", {}).items()}
        flags = (bool(state.get(k)) for k in ("clocks", "blackout", "disks"))
        return cls(folder, plan, cfg, pids, *flags)

    def _save(self) -> None:
        state = {
            "plan": asdict(self.plan),
            "pids": self.pids,
            "clocks": self.clocks,
            "blackout": self.lossy_data,
            "disks": self.disks,
        }
        tmp = self.folder / (STATE + ".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        os.replace(tmp, self.folder / STATE)

    # --- processes ----------------------------------------------------------------------

    def ns_cmd(self, node: str, *cmd: str) -> list[str]:
        return ["ip", "netns", "exec", self.plan.namespaces[node], *cmd]

    def exec_meshems(self, node: str, *args: str) -> subprocess.CompletedProcess[str]:
        cmd = self.ns_cmd(node, sys.executable, "-m", "meshems", *args)
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60)

    def _spawn(
        self, key: str, node: str | None, *args: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """`meshems ARGS` in `node`'s namespace; with node None, the command `args` here."""
        (self.folder / "logs").mkdir(exist_ok=True)
        log = open(self.folder / "logs" / f"{key}.log", "ab")  # noqa: SIM115 - closed in _reap
        # `ip netns exec` execs the command: the pid is the meshems process itself
        proc = subprocess.Popen(
            self.ns_cmd(node, sys.executable, "-m", "meshems", *args) if node else list(args),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            env={**os.environ, **env} if env else None,
        )
        self.procs[key], self._logs[key], self.pids[key] = proc, log, proc.pid
        self._save()
        return proc

    def start_sim(self, node: str, timeout_s: float = 20.0) -> None:
        ready = self.folder / "logs" / f"sim-{node}.ready"
        ready.parent.mkdir(exist_ok=True)
        ready.unlink(missing_ok=True)
        site = self.cfg.node(node).sim_site
        assert site is not None
        proc = self._spawn(
            f"sim-{node}", node, "sim", "--site", str(self.cfg.path(site)), "--ready-file", str(ready)
        )
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if ready.exists() and ready.stat().st_size:
                return
            if proc.poll() is not None:
                raise LabError(f"sim for {node} exited: {self.log_tail(f'sim-{node}')}")
            time.sleep(0.05)
        raise LabError(f"sim for {node} not serving within {timeout_s} s")

    def start_node(self, node: str) -> None:
        if self.running(node):
            raise LabError(f"{node} is already running (pid {self.pids[node]})")
        self._reap(node)  # it may have stopped on its own (E_DISK_FULL)
        trace = self.folder / "traces" / f"{node}.jsonl"
        # the lab runs as root (namespaces, tunnels): the node is told it may
        self._spawn(node, node, "node", "run", "--config", str(self.cfg.source), "--node", node,
                    "--trace", str(trace), "--allow-root", env=self._clock_env(node))  # fmt: skip

    # --- power (lossyfs data folders) ---------------------------------------------------

    def mount(self, node: str) -> LossyMount:
        return LossyMount.of(self.folder, self.plan.tag, node, self.cfg.data_dir(node))

    def disk(self, node: str) -> SmallDisk:
        """`node`'s journal filesystem (`disks` labs): its lossyfs backing, or its data folder."""
        where = self.mount(node).backing if self.lossy_data else self.cfg.data_dir(node)
        return SmallDisk.of(self.plan.tag, node, where)

    def start_lossyfs(self, node: str) -> None:
        """Mount `node`'s data folder on its own lossyfs (in the root namespace: the node's
        `ip netns exec` mount namespace sees it), before the node starts."""
        m = self.mount(node)
        proc = self._spawn(f"fs-{node}", None, *m.command())
        m.wait_mounted(lambda: proc.poll() is None)

    def blackout(self, nodes: list[str], down_s: float = 0.0) -> dict[str, dict[str, int]]:
        """A power cut: SIGKILL every node given at once, then drop their unsynced data (no
        restart in between), `down_s` without power, then start them again; node -> what
        its lossyfs dropped."""
        if not self.lossy_data:
            raise LabError("this lab's data folders are not lossy: build it with `lab up --blackout`")
        for n in nodes:
            if self.running(n):
                os.kill(self.pids[n], signal.SIGKILL)
        end = time.monotonic() + 10
        for n in nodes:
            self._reap(n)
            while self.running(n) and time.monotonic() < end:  # not our child (`lab blackout`)
                time.sleep(0.01)
        dropped = {n: self.mount(n).drop() for n in nodes}
        time.sleep(down_s)
        for n in nodes:
            self.start_node(n)
        return dropped

    def _clock_file(self, node: str) -> Path:
        return self.folder / "clocks" / node

    def _clock_env(self, node: str) -> dict[str, str] | None:
        if not self.clocks:
            return None
        # The file is read at most once a second. libfaketime moves the monotonic clock too:
        # 0.9.10's DONT_FAKE_MONOTONIC=1 breaks timed waits (EINVAL from time.sleep, elections
        # every second at offset 0), so a jump here also moves the node's timers, as a VM
        # pause does; Raft safety must hold through that as well.
        return {"LD_PRELOAD": str(LIBFAKETIME), "FAKETIME_TIMESTAMP_FILE": str(self._clock_file(node)),
                "FAKETIME_CACHE_DURATION": "1"}  # fmt: skip

    def set_clock(self, node: str, offset_s: int) -> None:
        """Move `node`'s wall clock to real time + `offset_s` (within a second; clocks labs only)."""
        if not self.clocks:
            raise LabError("this lab's nodes do not run under libfaketime (Lab.create(clocks=True))")
        path = self._clock_file(node)
        path.parent.mkdir(exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(f"{offset_s:+d}s\n")
        os.replace(tmp, path)

    def running(self, key: str) -> bool:
        proc = self.procs.get(key)
        if proc is not None:
            return proc.poll() is None
        pid = self.pids.get(key)
        return pid is not None and _alive(pid)

    def _signal(self, key: str, sig: int) -> None:
        pid = self.pids.get(key)
        if pid is None or not self.running(key):
            raise LabError(f"{key} is not running")
        os.kill(pid, sig)

    def kill(self, node: str) -> None:
        """kill -9 the node daemon and reap it."""
        self._signal(node, signal.SIGKILL)
        self._reap(node)

    def pause(self, node: str) -> None:
        self._signal(node, signal.SIGSTOP)

    def resume(self, node: str) -> None:
        self._signal(node, signal.SIGCONT)

    def stop(self, key: str, grace_s: float = 5.0) -> None:
        if not self.running(key):
            self._reap(key)
            return
        pid = self.pids[key]
        os.kill(pid, signal.SIGCONT)
        os.kill(pid, signal.SIGTERM)
        end = time.monotonic() + grace_s
        while self.running(key) and time.monotonic() < end:
            time.sleep(0.05)
        if self.running(key):
            os.kill(pid, signal.SIGKILL)
        self._reap(key)

    def restart(self, node: str) -> None:
        self.stop(node)
        self.start_node(node)

    def _reap(self, key: str) -> None:
        proc = self.procs.pop(key, None)
        if proc is not None:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
        log = self._logs.pop(key, None)
        if log is not None:
            log.close()

    def log_tail(self, key: str, n: int = 2000) -> str:
        p = self.folder / "logs" / f"{key}.log"
        return p.read_text(errors="replace")[-n:] if p.exists() else ""

    # --- links ---------------------------------------------------------------------------

    def cut(self, a: str, b: str) -> None:
        netlab.cut(self.plan, a, b)

    def cut_oneway(self, src: str, dst: str) -> None:
        netlab.cut_oneway(self.plan, src, dst)

    def lossy(self, percent: int) -> None:
        netlab.lossy(self.plan, percent)

    def isolate(self, node: str) -> None:
        netlab.isolate(self.plan, node)

    def partition(self, groups: list[list[str]]) -> None:
        netlab.partition(self.plan, groups)

    def heal(self) -> None:
        netlab.heal_all(self.plan)

    # --- observing -----------------------------------------------------------------------

    def status(self, timeout_s: float = 0.5) -> list[dict[str, Any]]:
        return self.client.status_all(timeout_s=timeout_s)

    def wait_leader(self, timeout_s: float = 20.0, exclude: frozenset[str] = frozenset()) -> str:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            leader = self.client.leader_with_quorum(exclude)
            if leader is not None:
                return leader
            for n, proc in self.procs.items():  # a node we started died on its own
                if n in self.plan.nodes and proc.poll() is not None:
                    raise LabError(f"{n} exited: {self.log_tail(n)}")
            time.sleep(0.05)
        raise TimeoutError(f"no leader within {timeout_s} s (excluding {sorted(exclude) or 'none'})")

    # --- the end -------------------------------------------------------------------------

    def down(self) -> list[str]:
        """Stop every process, remove every namespace, link and route; forget the state."""
        # the filesystems last: a node must not lose its data folder while it runs
        for key in sorted(self.pids, key=lambda k: k.startswith("fs-")):
            try:
                self.stop(key, grace_s=3.0)
            except (LabError, ProcessLookupError):
                self._reap(key)
        tag = self.plan.tag
        removed = [*unmount_stale(f"lossyfs-{tag}-"), *unmount_disks(f"{DISK_PREFIX}{tag}-")]
        removed += netlab.teardown(self.plan)
        (self.folder / STATE).unlink(missing_ok=True)
        return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        # a recycled pid (after a crash and a reboot of the lab) must not be taken for ours
        if b"meshems" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            return False
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False
