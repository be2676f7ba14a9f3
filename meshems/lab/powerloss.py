"""The lab's lossy data folders: where each gateway's lossyfs lives, its control, its cleanup.

Owns the layout (backing in LAB/backing/NODE, the node's data folder LAB/data/NODE as the
mount, a short control socket in /tmp, the mount named lossyfs-TAG-NODE in /proc/mounts),
waiting for a mount, `drop`/`stats` over the control socket and unmounting stale mounts by
name after a crash. Must not start or kill nodes (gateways.py) nor serve the filesystem
(lossyfs.py).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from meshems.lab.netlab import LabError

#: every lab's lossyfs mount names start with this (`lab down --all` unmounts them all)
PREFIX = "lossyfs-"


@dataclass(frozen=True)
class LossyMount:
    node: str
    backing: Path  # what was synced: what survives a blackout
    mount: Path  # the node's data folder
    control: Path  # unix socket (its path must stay under 108 bytes: not in the lab folder)
    name: str

    @classmethod
    def of(cls, folder: Path, tag: str, node: str, data_dir: Path) -> LossyMount:
        ctl = Path("/tmp") / f"mlab-{tag}-{node}.lossyfs.sock"
        return cls(node, folder / "backing" / node, data_dir, ctl, f"{PREFIX}{tag}-{node}")

    def command(self) -> list[str]:
        return [sys.executable, "-m", "meshems.lab.lossyfs", "--backing", str(self.backing),
                "--mount", str(self.mount), "--control", str(self.control), "--name", self.name]  # fmt: skip

    def mounted(self) -> bool:
        return str(self.mount.resolve()) in lossy_mounts(self.name)

    def wait_mounted(self, alive: Any, timeout_s: float = 15.0) -> None:
        """Until the mount and its control socket are there; `alive()` False: it died."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if self.mounted() and self.control.exists():
                return
            if not alive():
                raise LabError(f"lossyfs for {self.node} exited before mounting {self.mount}")
            time.sleep(0.05)
        raise LabError(f"lossyfs for {self.node} not mounted on {self.mount} within {timeout_s} s")

    def drop(self) -> dict[str, int]:
        """Throw away the node's unsynced data; {"files": n, "bytes": n} held until then."""
        return control(self.control, "drop")

    def stats(self) -> dict[str, int]:
        return control(self.control, "stats")


def lossy_ready() -> bool:
    """Can this machine run lossyfs (root, /dev/fuse, fusermount3, mfusepy)?"""
    try:
        import mfusepy  # noqa: F401
    except (ImportError, OSError):  # OSError: mfusepy found no libfuse
        return False
    return os.geteuid() == 0 and Path("/dev/fuse").exists() and shutil.which("fusermount3") is not None


def control(sock_path: Path, cmd: str, timeout_s: float = 5.0) -> dict[str, Any]:
    """Send `drop` or `stats` to a running lossyfs; its JSON answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(str(sock_path))
            s.sendall(cmd.encode() + b"\n")
            buf = b""
            while not buf.endswith(b"\n"):
                chunk = s.recv(4096)
                if not chunk:
                    break
                buf += chunk
    except OSError as exc:
        raise LabError(f"lossyfs control {sock_path}: {exc} (is its lossyfs running?)") from exc
    reply = json.loads(buf)
    if "error" in reply:
        raise LabError(f"lossyfs {sock_path}: unknown command {cmd!r} (drop, stats)")
    return reply


def lossy_mounts(prefix: str = PREFIX) -> list[str]:
    """Mount points of lossyfs mounts whose source name starts with `prefix` (/proc/mounts)."""
    out = []
    for line in Path("/proc/mounts").read_text().splitlines():
        src, mnt, kind = line.split()[:3]
        if kind.startswith("fuse") and src.startswith(prefix):
            out.append(mnt.replace("\\040", " "))
    return out


def unmount(mount: Path | str) -> bool:
    """Lazily unmount (also when busy or its lossyfs died); True if it was mounted."""
    out = subprocess.run(["fusermount3", "-u", "-z", str(mount)], capture_output=True, timeout=10)
    return out.returncode == 0


def unmount_stale(prefix: str = PREFIX) -> list[str]:
    """Unmount every lossyfs mount named `prefix`… (their lossyfs processes then exit)."""
    gone = [m for m in lossy_mounts(prefix) if unmount(m)]
    for sock in Path("/tmp").glob("mlab-*.lossyfs.sock"):
        if not _listening(sock):  # its lossyfs is gone
            sock.unlink(missing_ok=True)
    return gone


def _listening(sock: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(0.5)
            s.connect(str(sock))
        return True
    except OSError:
        return False
