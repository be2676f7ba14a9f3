"""A lossy FUSE filesystem for the fault lab's power-loss fault, like Jepsen's LazyFS.

A passthrough over a backing folder that keeps every written byte not yet fsync'd or
fdatasync'd in memory (per file, 4 KiB dirty pages; reads see them) and writes it to the
backing file on fsync/fdatasync (every write of a file opened O_SYNC/O_DSYNC at once). The
control command `drop` throws every unsynced byte away: files read as their backing content
again, as after a power cut. Metadata is not lossy: create, mkdir, rename, unlink, link,
truncate and fallocate are applied to the backing at once (so a renamed file keeps only
what was synced, ext4 data=ordered without auto_da_alloc; atomic writes fsync before they
rename, so they survive). The backing is written, not fsync'd: the simulated power loss is
the drop, not the host's. Dirty memory is capped: a write past the cap is ENOSPC.
Lab-only: `python -m meshems.lab.lossyfs --backing DIR --mount MNT --control SOCK`; SIGTERM
unmounts. Needs root, /dev/fuse, fuse3 (Debian) and mfusepy (the test extra).
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAGE = 4096
DEFAULT_CAP_MIB = 256
SYNC_FLAGS = os.O_SYNC | os.O_DSYNC


@dataclass
class Dirty:
    """One file's unsynced state: its size as written and the pages that differ from the backing."""

    size: int
    pages: dict[int, bytearray] = field(default_factory=dict)

    def trim(self, length: int) -> int:
        """Forget pages at or past `length` and zero the tail of the page holding it; frees bytes."""
        gone = [p for p in self.pages if p * PAGE >= length]
        for p in gone:
            del self.pages[p]
        last = self.pages.get(length // PAGE)
        if last is not None:
            last[length % PAGE :] = bytes(PAGE - length % PAGE)
        self.size = length
        return len(gone) * PAGE


def _err(code: int) -> OSError:
    from mfusepy import FuseOSError

    return FuseOSError(code)


class LossyFS:
    """The filesystem's operations (mfusepy calls them, one at a time) and its control."""

    use_ns = True  # utimens gets nanoseconds

    def __init__(self, backing: Path, cap_bytes: int = DEFAULT_CAP_MIB << 20) -> None:
        self.backing = backing.resolve()
        self.cap_bytes = cap_bytes
        self._mutex = threading.Lock()
        self.files: dict[int, Dirty] = {}  # backing inode -> unsynced state
        self.sync_fhs: set[int] = set()  # handles opened O_SYNC / O_DSYNC
        self.held = 0  # bytes of dirty pages
        self.counters = {"syncs": 0, "synced_bytes": 0, "drops": 0, "dropped_bytes": 0, "enospc": 0}

    def _path(self, path: str) -> str:
        return str(self.backing / path.lstrip("/"))

    # --- the control commands ------------------------------------------------------------

    def drop(self) -> dict[str, int]:
        """Throw away every unsynced byte (a power cut); what was held."""
        with self._mutex:
            out = {"files": len(self.files), "bytes": self.held}
            self.files.clear()
            self.counters["drops"] += 1
            self.counters["dropped_bytes"] += self.held
            self.held = 0
            return out

    def stats(self) -> dict[str, int]:
        with self._mutex:
            return {"dirty_files": len(self.files), "dirty_bytes": self.held, "cap_bytes": self.cap_bytes,
                    **self.counters}  # fmt: skip

    # --- data ----------------------------------------------------------------------------

    def _sync(self, ino: int, fd: int) -> None:
        f = self.files.pop(ino, None)
        if f is None:
            return
        self.held -= len(f.pages) * PAGE  # a failed sync (ENOSPC) loses them, as Linux's may
        for p in sorted(f.pages):
            start = p * PAGE
            chunk = f.pages[p][: max(0, min(PAGE, f.size - start))]
            os.pwrite(fd, bytes(chunk), start)
            self.counters["synced_bytes"] += len(chunk)
        if os.fstat(fd).st_size != f.size:
            os.ftruncate(fd, f.size)
        self.counters["syncs"] += 1

    def _page(self, fd: int, p: int) -> bytearray:
        base = os.pread(fd, PAGE, p * PAGE)
        return bytearray(base + bytes(PAGE - len(base)))

    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        with self._mutex:
            st = os.fstat(fh)
            f = self.files.get(st.st_ino) or Dirty(st.st_size)
            end = offset + len(data)
            first, last = offset // PAGE, (end - 1) // PAGE if data else offset // PAGE - 1
            new = sum(1 for p in range(first, last + 1) if p not in f.pages)
            if self.held + new * PAGE > self.cap_bytes:
                self.counters["enospc"] += 1
                raise _err(errno.ENOSPC)
            for p in range(first, last + 1):
                page = f.pages.get(p)
                if page is None:
                    page = f.pages[p] = self._page(fh, p)
                    self.held += PAGE
                lo, hi = max(offset, p * PAGE), min(end, (p + 1) * PAGE)
                page[lo - p * PAGE : hi - p * PAGE] = data[lo - offset : hi - offset]
            f.size = max(f.size, end)
            self.files[st.st_ino] = f
            if fh in self.sync_fhs:
                self._sync(st.st_ino, fh)
            return len(data)

    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        with self._mutex:
            f = self.files.get(os.fstat(fh).st_ino)
            if f is None:
                return os.pread(fh, size, offset)
            n = max(0, min(size, f.size - offset))
            out = bytearray()
            pos = offset
            while pos < offset + n:
                p = pos // PAGE
                hi = min(offset + n, (p + 1) * PAGE)
                page = f.pages.get(p)
                if page is not None:
                    out += page[pos - p * PAGE : hi - p * PAGE]
                else:
                    base = os.pread(fh, hi - pos, pos)
                    out += base + bytes(hi - pos - len(base))
                pos = hi
            return bytes(out)

    def fsync(self, path: str, datasync: int, fh: int) -> int:
        with self._mutex:
            self._sync(os.fstat(fh).st_ino, fh)
        return 0

    def fsyncdir(self, path: str, datasync: int, fh: int) -> int:
        return 0  # metadata is applied at once

    def flush(self, path: str, fh: int) -> int:
        return 0

    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        with self._mutex:
            real = self._path(path)
            os.truncate(real, length)
            f = self.files.get(os.lstat(real).st_ino)
            if f is not None:
                self.held -= f.trim(length)
        return 0

    def fallocate(self, path: str, mode: int, offset: int, size: int, fh: int) -> int:
        if mode != 0:
            raise _err(errno.EOPNOTSUPP)
        with self._mutex:
            os.posix_fallocate(fh, offset, size)
            f = self.files.get(os.fstat(fh).st_ino)
            if f is not None:
                f.size = max(f.size, offset + size)
        return 0

    # --- files and folders ---------------------------------------------------------------

    def _open(self, path: str, flags: int, mode: int = 0o644) -> int:
        # the backing fd reads the pages it patches and writes at the offsets given (no append)
        want = (flags & ~(os.O_ACCMODE | os.O_APPEND | SYNC_FLAGS)) | os.O_RDWR
        fd = os.open(self._path(path), want, mode)
        if flags & SYNC_FLAGS:
            self.sync_fhs.add(fd)
        if flags & os.O_TRUNC:
            f = self.files.get(os.fstat(fd).st_ino)
            if f is not None:
                self.held -= f.trim(0)
        return fd

    def open(self, path: str, flags: int) -> int:
        with self._mutex:
            return self._open(path, flags)

    def create(self, path: str, mode: int, flags: int = os.O_WRONLY) -> int:
        with self._mutex:
            return self._open(path, flags | os.O_CREAT, mode)

    def release(self, path: str, fh: int) -> int:
        with self._mutex:
            self.sync_fhs.discard(fh)
            os.close(fh)  # the page cache outlives the handle: unsynced data stays
        return 0

    def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
        with self._mutex:
            st = os.fstat(fh) if fh is not None else os.lstat(self._path(path))
            attrs = {k: getattr(st, k) for k in ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size",
                     "st_atime_ns", "st_mtime_ns", "st_ctime_ns", "st_ino", "st_blocks")}  # fmt: skip
            for k in ("atime", "mtime", "ctime"):
                attrs[f"st_{k}"] = attrs.pop(f"st_{k}_ns")
            f = self.files.get(st.st_ino)
            if f is not None:
                attrs["st_size"] = f.size
            return attrs

    def _forget(self, real: str) -> None:
        try:
            st = os.lstat(real)
        except FileNotFoundError:
            return
        if st.st_nlink <= 1:
            f = self.files.pop(st.st_ino, None)
            self.held -= len(f.pages) * PAGE if f else 0

    def unlink(self, path: str) -> int:
        with self._mutex:
            real = self._path(path)
            self._forget(real)
            os.unlink(real)
        return 0

    def rename(self, old: str, new: str) -> int:
        with self._mutex:
            target = self._path(new)
            if os.path.isfile(target):
                self._forget(target)  # the file renamed over is gone
            os.rename(self._path(old), target)
        return 0

    def link(self, target: str, source: str) -> int:
        os.link(self._path(source), self._path(target))
        return 0

    def symlink(self, target: str, source: str) -> int:
        os.symlink(source, self._path(target))
        return 0

    def readlink(self, path: str) -> str:
        return os.readlink(self._path(path))

    def mkdir(self, path: str, mode: int) -> int:
        os.mkdir(self._path(path), mode)
        return 0

    def rmdir(self, path: str) -> int:
        os.rmdir(self._path(path))
        return 0

    def readdir(self, path: str, fh: int) -> list[str]:
        return [".", "..", *os.listdir(self._path(path))]

    def chmod(self, path: str, mode: int) -> int:
        os.chmod(self._path(path), mode)
        return 0

    def chown(self, path: str, uid: int, gid: int) -> int:
        os.chown(self._path(path), uid, gid)
        return 0

    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        if times is None:
            os.utime(self._path(path))
        else:
            os.utime(self._path(path), ns=times)
        return 0

    def access(self, path: str, amode: int) -> int:
        if not os.access(self._path(path), amode):
            raise _err(errno.EACCES)
        return 0

    def statfs(self, path: str) -> dict[str, int]:
        sv = os.statvfs(self._path(path))
        keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree", "f_files",
                "f_flag", "f_frsize", "f_namemax")  # fmt: skip
        return {k: getattr(sv, k) for k in keys}


# --- the control socket ------------------------------------------------------------------


def serve_control(fs: LossyFS, sock_path: Path) -> socket.socket:
    """Answer `drop` and `stats` (one line each, a JSON line back) on a unix socket."""
    sock_path.unlink(missing_ok=True)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(sock_path))
    os.chmod(sock_path, 0o600)
    srv.listen(8)

    def loop() -> None:
        while True:
            try:
                conn, _ = srv.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5.0)
                try:
                    cmd = conn.recv(64).decode().strip()
                    reply = fs.drop() if cmd == "drop" else fs.stats() if cmd == "stats" else {"error": cmd}
                    conn.sendall(json.dumps(reply).encode() + b"\n")
                except OSError:
                    continue

    threading.Thread(target=loop, daemon=True, name="lossyfs-control").start()
    return srv


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m meshems.lab.lossyfs", description=__doc__.split("\n")[0],
                                epilog="Example: python -m meshems.lab.lossyfs --backing /tmp/b --mount "
                                "/tmp/m --control /tmp/m.sock")  # fmt: skip
    p.add_argument("--backing", type=Path, required=True, help="folder that holds what was synced")
    p.add_argument("--mount", type=Path, required=True, help="where the lossy view is mounted")
    p.add_argument(
        "--control", type=Path, required=True, help="unix socket for drop, stats (outside the mount)"
    )
    p.add_argument("--cap-mib", type=int, default=DEFAULT_CAP_MIB, help="unsynced bytes held, at most")
    p.add_argument("--name", default="lossyfs", help="the mount's source name in /proc/mounts")
    args = p.parse_args(argv)
    from mfusepy import FUSE

    args.backing.mkdir(parents=True, exist_ok=True)
    args.mount.mkdir(parents=True, exist_ok=True)
    fs = LossyFS(args.backing, args.cap_mib << 20)
    srv = serve_control(fs, args.control)
    try:
        # direct_io: every read comes here (no page cache to outlive a drop); no attribute caching
        FUSE(fs, str(args.mount), foreground=True, nothreads=True, fsname=args.name, direct_io=True,
             attr_timeout=0, entry_timeout=0, negative_timeout=0)  # fmt: skip
    except RuntimeError as exc:
        if exc.args != (8,):  # libfuse3's fuse_main: 8 after its loop ended on SIGTERM/SIGINT
            raise
    finally:
        srv.close()
        args.control.unlink(missing_ok=True)
        if os.path.ismount(args.mount):
            subprocess.run(["fusermount3", "-u", "-z", str(args.mount)], capture_output=True, timeout=10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
