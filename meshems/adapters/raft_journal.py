"""The Raft journal on disk: pysyncobj's file format, written so a full disk is an error.

pysyncobj's FileJournal writes through a growing mmap: on a full filesystem the node dies of
SIGBUS (seen on tmpfs: exit 135), its meta file with tracebacks. This journal keeps the same
on-disk format (so `adapters.journal` checks it and an existing journal stays readable)
but writes with `pwrite` into space reserved ahead with `posix_fallocate`, so running out
of space is an ENOSPC at a known point: the entry is not added, nothing is acknowledged,
`on_disk_full` is told once and every later write is refused too. Log compaction writes
the kept entries to a new file and renames it over the old one (pysyncobj rewrites in
place). `install` makes pysyncobj build this journal instead of its own.

Durability (`raft.fsync`, on by default). Raft is safe only if a node persists before it
speaks: an appendEntries reply says the entries are on its disk, a vote says term and vote
are, and a leader counts its own log in the majority that commits. Here an append,
truncation or clear only marks the journal unsynced (`needs_sync`); `sync()` makes all of
them durable with one fdatasync (a directory fsync after a create). pysyncobj runs Raft on
one tick thread; `raft_transport.GroupCommitTransport` holds the replies and votes sent
while the journal is unsynced (and what follows them to the same peer) and calls `sync()`
before it sends them: before each tick's poll and after it, so one sync covers every entry
a tick took (group commit) and the journal is synced whenever a tick starts. A leader
sends its appendEntries at once (it writes in parallel with its followers, Raft 10.2.1)
and counts itself only when it computes the commit index at the start of a tick, after
its sync. Term and vote are written, fsync'd, renamed into place and the directory
fsync'd inside `setCurrentTerm`, before pysyncobj sends anything that reflects them; the
snapshot file (pysyncobj renames it into place unsynced) is fsync'd before a compaction
or a snapshot install drops the entries it replaces. A failed sync (ENOSPC, EDQUOT, EIO)
is a full disk: the held messages are dropped and the journal refuses everything after
it. With fsync off nothing is held or synced: a crash of the process loses nothing (the
page cache has it), a power loss of a majority can lose acknowledged writes and votes.
"""

from __future__ import annotations

import contextlib
import errno
import os
import struct
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pysyncobj.syncobj
from pysyncobj.journal import Journal
from pysyncobj.pickle import dumps, to_bytes
from pysyncobj.version import VERSION as PYSYNCOBJ_VERSION

from meshems.adapters.journal import (
    APP_NAME,
    FIRST_RECORD_OFFSET,
    LAST_RECORD_OFFSET_OFFSET,
    NAME_SIZE,
    VERSION_SIZE,
    safe_loads,
)
from meshems.core.errors import DiskFullError

FORMAT_VERSION = 1
#: reserve disk space in steps of at least this much (and at most doubling the file)
MIN_GROWTH_BYTES = 1 << 20
MAX_GROWTH_BYTES = 16 << 20
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
#: a failed fsync leaves the page cache in an unknown state: nothing after it may be trusted
SYNC_FAILURES = (*NO_SPACE, errno.EIO)

DiskFullCallback = Callable[[DiskFullError], None]


def free_bytes(path: Path) -> int:
    """Free bytes for an unprivileged writer on the filesystem holding `path`."""
    st = os.statvfs(path if path.is_dir() else path.parent)
    return st.f_bavail * st.f_frsize


def disk_full_error(path: Path, exc: OSError | None = None) -> DiskFullError:
    try:
        free = f"{free_bytes(path) // 1024} KiB free"
    except OSError:
        free = "free space unknown"
    why = f" ({exc.strerror})" if exc is not None else ""
    eio = exc is not None and exc.errno == errno.EIO
    what = "could not make the journal durable" if eio else "no space left on the device"
    return DiskFullError(
        f"{path}: {what}{why}, {free}; the node stopped without acknowledging the "
        "write it could not journal. Free some space and start it again.",
        path=str(path),
    )


def fsync_dir(path: Path) -> None:
    """Make a create, rename or unlink in the directory `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _header() -> bytes:
    name = APP_NAME + b"\0" * (NAME_SIZE - len(APP_NAME))
    version = PYSYNCOBJ_VERSION.encode()[: VERSION_SIZE - 1]
    version += b"\0" * (VERSION_SIZE - len(version))
    return name + version + struct.pack("<II", FORMAT_VERSION, FIRST_RECORD_OFFSET)


#: a record: size (4), index and term (8 + 8), the command, size again (4)
RECORD_OVERHEAD = 24


def _record(command: bytes, idx: int, term: int) -> bytes:
    body = struct.pack("<QQ", idx, term) + command
    size = struct.pack("<I", len(body))
    return size + body + size


class MeshemsJournal(Journal):
    """pysyncobj's Journal interface over a plain file (see the module docstring)."""

    def __init__(
        self,
        path: str,
        on_disk_full: DiskFullCallback | None = None,
        fsync: bool = True,
        dump_path: str | None = None,
    ) -> None:
        self.path = Path(path)
        self._meta_path = Path(path + ".meta")
        self._dump_path = Path(dump_path) if dump_path else None
        self._on_disk_full = on_disk_full
        self.fsync = fsync
        self.failed: DiskFullError | None = None
        #: changes not yet made durable: file data, and a create or rename in the directory
        self._unsynced = self._dir_unsynced = False
        #: fdatasync calls made by `sync` (the benchmark and tests read it)
        self.syncs = 0
        self._entries: list[tuple[bytes, int, int]] = []
        self._starts: list[int] = []
        #: entries pysyncobj deleted from the end that the file still holds (`deleteEntriesFrom`)
        self._tail: list[tuple[tuple[bytes, int, int], int]] = []
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        size = os.fstat(self._fd).st_size
        if size == 0:
            self._guard(lambda: self._pwrite(_header(), 0))
            size = len(_header())
            self._unsynced = self._dir_unsynced = fsync
        self._allocated = size
        self._offset = self._load()
        self._meta: dict[str, Any] = self._read_meta()
        self._meta_dirty = False

    def _load(self) -> int:
        """Read every record (the file was checked by `adapters.journal` before)."""
        data = os.pread(self._fd, self._allocated, 0)
        end = (
            struct.unpack_from("<I", data, LAST_RECORD_OFFSET_OFFSET)[0]
            if len(data) >= FIRST_RECORD_OFFSET
            else 0
        )
        off = FIRST_RECORD_OFFSET
        while off < end:
            size = struct.unpack_from("<I", data, off)[0]
            idx, term = struct.unpack_from("<QQ", data, off + 4)
            self._entries.append((data[off + 20 : off + 4 + size], idx, term))
            self._starts.append(off)
            off += size + 8
        return max(off, FIRST_RECORD_OFFSET)

    def _read_meta(self) -> dict[str, Any]:
        try:
            meta = safe_loads(self._meta_path.read_bytes())
        except FileNotFoundError:
            return {}
        return dict(meta) if isinstance(meta, dict) else {}

    # --- writing, with ENOSPC as an error ----------------------------------------------------

    def _pwrite(self, data: bytes, offset: int) -> None:
        view = memoryview(data)
        while view:
            n = os.pwrite(self._fd, view, offset)
            view, offset = view[n:], offset + n

    def _reserve(self, end: int) -> None:
        if end <= self._allocated:
            return
        grow = min(max(end - self._allocated, self._allocated, MIN_GROWTH_BYTES), MAX_GROWTH_BYTES)
        new_size = max(end, self._allocated + grow)
        os.posix_fallocate(self._fd, self._allocated, new_size - self._allocated)
        self._allocated = new_size

    def _guard(self, write: Callable[[], None], failures: tuple[int, ...] = NO_SPACE) -> None:
        """Run a write; on ENOSPC mark the journal failed, tell once, raise DiskFullError."""
        if self.failed is not None:
            raise self.failed
        try:
            write()
        except OSError as exc:
            if exc.errno not in failures:
                raise
            self.failed = disk_full_error(self.path, exc)
            if self._on_disk_full is not None:
                self._on_disk_full(self.failed)
            raise self.failed from None

    def add(self, command: bytes, idx: int, term: int) -> None:
        entry = (to_bytes(command), idx, term)
        if self._tail and self._tail[0][0] == entry:  # the same entry again: already on disk
            _, start = self._tail.pop(0)
            self._entries.append(entry)
            self._starts.append(start)
            self._offset = start + len(entry[0]) + RECORD_OVERHEAD
            return
        self._tail = []  # a different entry: what followed in the file goes (a real conflict)
        record = _record(entry[0], idx, term)
        start = self._offset

        def write() -> None:
            self._reserve(start + len(record))
            self._pwrite(record, start)
            self._pwrite(struct.pack("<I", start + len(record)), LAST_RECORD_OFFSET_OFFSET)

        self._guard(write)  # on disk first: memory only holds what the file holds
        self._unsynced = self.fsync
        self._entries.append(entry)
        self._starts.append(start)
        self._offset = start + len(record)

    def clear(self) -> None:
        """Before a snapshot's entries: the snapshot pysyncobj just installed replaces the log."""
        self._sync_dump()
        self._guard(lambda: self._pwrite(struct.pack("<I", FIRST_RECORD_OFFSET), LAST_RECORD_OFFSET_OFFSET))
        self._unsynced = self.fsync
        self._entries, self._starts, self._offset, self._tail = [], [], FIRST_RECORD_OFFSET, []

    def deleteEntriesFrom(self, entryFrom: int) -> None:
        """pysyncobj deletes matching entries too (not only from a conflict): they leave memory,
        the file keeps them (`_tail`) until `add` puts a different entry in their place; after
        a restart they are back, as if the node stopped before that message (a Raft log)."""
        if entryFrom >= len(self._entries):
            return
        self._tail = list(zip(self._entries[entryFrom:], self._starts[entryFrom:], strict=True)) + self._tail
        self._offset = self._starts[entryFrom]
        del self._entries[entryFrom:], self._starts[entryFrom:]

    def deleteEntriesTo(self, entryTo: int) -> None:
        """Compaction: write the kept entries to a new file and rename it over this one."""
        kept = self._entries[entryTo:]
        tmp = self.path.with_name(self.path.name + ".tmp")
        self._sync_dump()  # the snapshot holds what the dropped entries did: durable first

        def rewrite() -> None:
            blob = _header()[:LAST_RECORD_OFFSET_OFFSET]
            records = b"".join(_record(c, i, t) for c, i, t in kept)
            blob += struct.pack("<I", FIRST_RECORD_OFFSET + len(records)) + records
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                os.posix_fallocate(fd, 0, max(len(blob), MIN_GROWTH_BYTES))
                os.pwrite(fd, blob, 0)
                os.fsync(fd)
                os.replace(tmp, self.path)
                if self.fsync:
                    fsync_dir(self.path.parent)
            except BaseException:
                os.close(fd)
                tmp.unlink(missing_ok=True)
                raise
            os.close(self._fd)
            self._fd, self._allocated = fd, max(len(blob), MIN_GROWTH_BYTES)

        self._guard(rewrite)
        self._entries, self._starts, self._offset, self._tail = [], [], FIRST_RECORD_OFFSET, []
        for command, idx, term in kept:
            self._starts.append(self._offset)
            self._entries.append((command, idx, term))
            self._offset += len(command) + RECORD_OVERHEAD

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[tuple[bytes, int, int]]:
        return iter(self._entries)

    def _destroy(self) -> None:
        if self._meta_dirty and self.failed is None:
            self._store_meta()
        os.close(self._fd)

    def flush(self) -> None:
        os.fdatasync(self._fd)

    # --- durability -----------------------------------------------------------------------

    @property
    def needs_sync(self) -> bool:
        """Changes a message must not get ahead of (always false with fsync off)."""
        return self._unsynced or self._dir_unsynced

    def sync(self) -> None:
        """Make every change so far durable: one fdatasync however many appends came since
        the last sync. A failure is a full disk (DiskFullError, and every later write refused)."""

        def write() -> None:
            if self._unsynced:
                os.fdatasync(self._fd)
                self.syncs += 1
                self._unsynced = False
            if self._dir_unsynced:
                fsync_dir(self.path.parent)
                self._dir_unsynced = False

        if self.needs_sync or self.failed is not None:
            self._guard(write, SYNC_FAILURES)

    def _sync_dump(self) -> None:
        """fsync pysyncobj's snapshot file (pysyncobj renames it into place unsynced)."""
        if not self.fsync or self._dump_path is None or not self._dump_path.exists():
            return

        def write() -> None:
            fd = os.open(self._dump_path, os.O_RDONLY)  # type: ignore[arg-type]
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            fsync_dir(self._dump_path.parent)  # type: ignore[union-attr]

        self._guard(write, SYNC_FAILURES)

    # --- meta: term and vote (durable before any message that reflects them) ----------------

    def _store_meta(self) -> None:
        tmp = self._meta_path.with_name(self._meta_path.name + ".tmp")

        def write() -> None:
            try:
                with open(tmp, "wb") as f:
                    f.write(dumps(self._meta))
                    f.flush()
                    if self.fsync:
                        os.fsync(f.fileno())
            except OSError:
                tmp.unlink(missing_ok=True)
                raise
            os.replace(tmp, self._meta_path)
            if self.fsync:
                fsync_dir(self._meta_path.parent)

        self._guard(write, SYNC_FAILURES)
        self._meta_dirty = False

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:
        self._meta["raftCommitIndex"] = raftCommitIndex
        self._meta_dirty = True

    def getRaftCommitIndex(self) -> int:
        return int(self._meta.get("raftCommitIndex", 1))

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:
        self._meta["currentTerm"] = term
        self._meta["votedForNodeId"] = votedForNodeId
        self._store_meta()

    def getCurrentTerm(self) -> int:
        return int(self._meta.get("currentTerm", 0))

    def getVotedForNodeId(self) -> Any:
        return self._meta.get("votedForNodeId")

    def onOneSecondTimer(self) -> None:
        if self._meta_dirty and self.failed is None:
            with contextlib.suppress(DiskFullError):  # told already; the node is stopping
                self._store_meta()


_INSTALL_LOCK = threading.Lock()


@contextmanager
def install(
    on_disk_full: DiskFullCallback | None, fsync: bool = True, dump_path: str | None = None
) -> Iterator[None]:
    """While a SyncObj is being built, make it create a MeshemsJournal (pysyncobj builds
    its journal inside its constructor, through a module-level factory)."""
    with _INSTALL_LOCK:
        original = pysyncobj.syncobj.createJournal

        def create(journal_file: str | None = None) -> Any:
            if journal_file is None:
                return original(None)
            return MeshemsJournal(journal_file, on_disk_full, fsync=fsync, dump_path=dump_path)

        pysyncobj.syncobj.createJournal = create
        try:
            yield
        finally:
            pysyncobj.syncobj.createJournal = original
