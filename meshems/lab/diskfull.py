"""The lab's small journal filesystems and its disk_full fault: each gateway's data (its
lossyfs backing, or its data folder itself without lossyfs) on its own tmpfs, which the
fault fills with one preallocated file for a few seconds, as the disk-full lab test does.

Owns the mounts (source mlabdisk-TAG-NODE in /proc/mounts, so `lab down --all` finds them
after a crash), filling and freeing them, and the fault's procedure: fill, watch the node
stop with E_DISK_FULL, check that its durable journal holds every entry it acknowledged
and is not corrupt, free, restart it. Must not build a lab (gateways.py) nor judge the
run's history (checker.py).
"""

from __future__ import annotations

import errno
import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshems.adapters.journal import check_journal
from meshems.core.errors import MeshemsError, UnreachableError

if TYPE_CHECKING:
    from meshems.lab.gateways import Lab

#: every lab's journal filesystems are named with this (`lab down --all` unmounts them all)
PREFIX = "mlabdisk-"
#: room for a long run's journals and snapshots and the 16 MiB raft.min_free_mib a node
#: needs to start; memory is taken only for what is written (and while the fault fills it)
SIZE_MIB = 128
FILLER = "disk-full.filler"
PAGE = 4096


@dataclass(frozen=True)
class SmallDisk:
    node: str
    path: Path  # the tmpfs's mount point: the node's backing or data folder
    name: str

    @classmethod
    def of(cls, tag: str, node: str, path: Path) -> SmallDisk:
        return cls(node, path, f"{PREFIX}{tag}-{node}")

    def mount(self, size_mib: int = SIZE_MIB) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        options = f"size={size_mib}m,mode=0700"
        cmd = ["mount", "-t", "tmpfs", "-o", options, self.name, str(self.path)]
        subprocess.run(cmd, check=True, capture_output=True, timeout=10)

    def free_bytes(self) -> int:
        st = os.statvfs(self.path)
        return st.f_bavail * st.f_frsize

    def fill(self) -> int:
        """Take every free byte with one preallocated file; the bytes it took."""
        taken, chunk = 0, max(self.free_bytes(), PAGE)
        with open(self.path / FILLER, "ab") as f:
            while chunk >= PAGE:
                try:
                    os.posix_fallocate(f.fileno(), taken, chunk)
                    taken += chunk
                except OSError as exc:
                    if exc.errno != errno.ENOSPC:
                        raise
                    chunk //= 2
        return taken

    def free(self) -> None:
        (self.path / FILLER).unlink(missing_ok=True)


def disk_mounts(prefix: str = PREFIX) -> list[str]:
    """Mount points of the tmpfs mounts whose source name starts with `prefix`."""
    rows = (line.split()[:3] for line in Path("/proc/mounts").read_text().splitlines())
    return [m.replace("\\040", " ") for src, m, kind in rows if kind == "tmpfs" and src.startswith(prefix)]


def unmount_disks(prefix: str = PREFIX) -> list[str]:
    """Lazily unmount every journal filesystem named `prefix`…; the mount points."""
    gone = []
    for m in disk_mounts(prefix):
        if subprocess.run(["umount", "-l", m], capture_output=True, timeout=10).returncode == 0:
            gone.append(m)
    return gone


def _acked(lab: Lab, leader: str, node: str, term: int | None) -> tuple[int, int | None]:
    """(the index `leader` saw `node` acknowledge, its term); 0 once it no longer leads in `term`."""
    try:
        _, row = lab.client.request(lab.cfg.node(leader), "GET", "/v1/status", timeout_s=0.5)
    except UnreachableError:
        return 0, term
    if not isinstance(row, dict) or row.get("role") != "leader" or term not in (None, row.get("term")):
        return 0, term
    return int(row.get("match_index", {}).get(node, 0)), int(row["term"])


def disk_full(lab: Lab, node: str, leader: str, hold_s: float) -> dict[str, Any]:
    """The fault: `node`'s journal filesystem full for `hold_s`, then room again. The node
    must stop with E_DISK_FULL instead of acknowledging what it cannot journal: a follower's
    acknowledgements (the leader's match index for it, while that leader leads in the same
    term) must all be in its durable journal (the lossyfs backing: what a power cut keeps).
    It is restarted once there is room. Returns the fault's record (`problems` when not)."""
    disk, log = lab.disk(node), lab.folder / "logs" / f"{node}.log"
    seen = log.stat().st_size if log.exists() else 0
    began = time.monotonic()
    taken = disk.fill()
    acked, term = 0, None
    while time.monotonic() - began < hold_s:
        if node != leader and lab.running(node):
            got, term = _acked(lab, leader, node, term)
            acked = max(acked, got)
        time.sleep(0.1)
    disk.free()
    text = log.read_bytes()[seen:].decode(errors="replace") if log.exists() else ""
    end = time.monotonic() + 15
    while "E_DISK_FULL" in text and lab.running(node) and time.monotonic() < end:
        time.sleep(0.05)  # stopping on its own: let it finish before it starts again
    stopped = not lab.running(node)
    rec: dict[str, Any] = {"node": node, "filled_bytes": taken, "stopped": stopped, "restarted": stopped,
                           "e_disk_full": "E_DISK_FULL" in text,
                           "tracebacks": text.count("Traceback")}  # fmt: skip
    problems = []
    if stopped:
        try:
            journal = check_journal(disk.path / "raft.journal")
            rec["journal_last_index"] = durable = journal.last_index if journal else 0
            if node != leader:
                rec["acked_index"] = acked
                if acked > durable:
                    problems.append(f"disk_full: {node} acknowledged {acked}, its journal holds {durable}")
        except MeshemsError as exc:
            problems.append(f"disk_full: {node}'s journal is corrupt after the full disk: {exc}")
        if not rec["e_disk_full"]:
            problems.append(f"disk_full: {node} stopped without reporting E_DISK_FULL")
        lab.start_node(node)
        what = f"stopped with E_DISK_FULL, journal to {rec.get('journal_last_index')}"
        what += f"{'' if node == leader else f' (acked {acked})'}, restarted"
    elif lab.cfg.raft.fsync:
        what = "kept running: no write of it failed"
    else:
        what = "kept running: raft.fsync false syncs nothing, so nothing failed (nor was durable)"
    rec["target"] = f"{node} journal fs full ({taken >> 20} MiB filled): {what}"
    rec["problems"] = problems
    return rec
