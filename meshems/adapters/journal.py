"""Integrity check of a node's pysyncobj journal, meta and snapshot files before replay.

pysyncobj 0.3.17 replays whatever its journal holds: a truncated file is zero-padded and
read as garbage entries, and a damaged meta or snapshot is skipped silently. This module
walks the on-disk format (and the CRC meshems puts in every entry) and raises
JournalCorruptError naming the file, the record and the offset. It never modifies files
except `quarantine`, which moves them aside on the operator's request.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

from meshems.core.errors import JournalCorruptError

NAME_SIZE, VERSION_SIZE = 24, 8
FIRST_RECORD_OFFSET = NAME_SIZE + VERSION_SIZE + 4 + 4
LAST_RECORD_OFFSET_OFFSET = NAME_SIZE + VERSION_SIZE + 4
APP_NAME = b"PYSYNCOBJ"
REGULAR, NO_OP, MEMBERSHIP, VERSION = 0, 1, 2, 3
CRC = struct.Struct(">I")


def frame(data: bytes) -> bytes:
    """Prefix command bytes with their CRC-32 so damage on disk is detectable."""
    return CRC.pack(zlib.crc32(data)) + data


def unframe(framed: bytes) -> bytes | None:
    """The command bytes of a framed entry, or None if its CRC does not match."""
    if len(framed) < 4:
        return None
    data = framed[4:]
    return data if CRC.unpack_from(framed)[0] == zlib.crc32(data) else None


class _SafeUnpickler(pickle.Unpickler):
    """Allows plain data and pysyncobj's node class only: a journal cannot run code."""

    # _codecs.encode is how pickle protocol 2 (pysyncobj's) writes bytes.
    ALLOWED = frozenset(
        {
            ("pysyncobj.node", "TCPNode"),
            ("pysyncobj.node", "Node"),
            ("_codecs", "encode"),
            ("builtins", "set"),
            ("__builtin__", "set"),
            ("builtins", "frozenset"),
            ("__builtin__", "frozenset"),
        }
    )

    def find_class(self, module: str, name: str) -> type:
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"forbidden class {module}.{name}")


def safe_loads(data: bytes) -> object:
    return _SafeUnpickler(io.BytesIO(data)).load()


@dataclass(frozen=True)
class JournalReport:
    path: Path
    entries: int
    first_index: int
    last_index: int
    last_term: int


def _corrupt(path: Path, what: str, **ctx: object) -> JournalCorruptError:
    return JournalCorruptError(
        f"{path}: {what}. The node will not replay it. Move the node's data aside and let it "
        f"catch up from its peers: meshems node run ... --reset-journal",
        path=str(path),
        **ctx,
    )


def check_journal(path: Path) -> JournalReport | None:
    """Walk the journal; None if there is none yet. Raises JournalCorruptError."""
    if not path.exists():
        return None
    buf = path.read_bytes()
    if len(buf) < FIRST_RECORD_OFFSET:
        raise _corrupt(path, f"truncated header ({len(buf)} bytes)")
    if buf[:NAME_SIZE].rstrip(b"\0") != APP_NAME:
        raise _corrupt(path, "not a pysyncobj journal (bad header)")
    end = struct.unpack_from("<I", buf, LAST_RECORD_OFFSET_OFFSET)[0]
    if end < FIRST_RECORD_OFFSET or end > len(buf):
        raise _corrupt(path, f"records end at byte {end} but the file has {len(buf)} (truncated)")
    off, count, prev_idx, prev_term, first_idx = FIRST_RECORD_OFFSET, 0, None, 0, 0
    while off < end:
        if off + 4 > end:
            raise _corrupt(path, f"record {count} at byte {off}: size cut short", record=count)
        size = struct.unpack_from("<I", buf, off)[0]
        if size < 16 or off + 8 + size > end:
            raise _corrupt(path, f"record {count} at byte {off}: bad size {size}", record=count)
        if struct.unpack_from("<I", buf, off + 4 + size)[0] != size:
            raise _corrupt(path, f"record {count} at byte {off}: size trailer mismatch", record=count)
        idx, term = struct.unpack_from("<QQ", buf, off + 4)
        command = buf[off + 20 : off + 4 + size]
        if prev_idx is not None and idx != prev_idx + 1:
            raise _corrupt(path, f"record {count} at byte {off}: index {idx} after {prev_idx}")
        if term < prev_term:
            raise _corrupt(path, f"record {count} at byte {off}: term {term} after {prev_term}")
        _check_command(path, count, off, command)
        first_idx = idx if prev_idx is None else first_idx
        prev_idx, prev_term = idx, term
        off += size + 8
        count += 1
    return JournalReport(path, count, first_idx, prev_idx or 0, prev_term)


def _check_command(path: Path, count: int, off: int, command: bytes) -> None:
    if not command:
        raise _corrupt(path, f"record {count} at byte {off}: empty command")
    kind = command[0]
    if kind == NO_OP:
        return
    if kind not in (REGULAR, MEMBERSHIP, VERSION):
        raise _corrupt(path, f"record {count} at byte {off}: unknown command type {kind}")
    try:
        payload = safe_loads(command[1:])
    except Exception as exc:
        raise _corrupt(path, f"record {count} at byte {off}: unreadable ({exc})") from None
    if kind != REGULAR:
        return
    args = payload[1] if isinstance(payload, tuple) and len(payload) >= 2 else None
    if not (isinstance(args, tuple) and len(args) == 1 and isinstance(args[0], bytes)):
        raise _corrupt(path, f"record {count} at byte {off}: not a meshems entry")
    if unframe(args[0]) is None:
        raise _corrupt(path, f"record {count} at byte {off}: CRC mismatch (damaged entry)")


def check_meta(path: Path) -> None:
    if not path.exists():
        return
    try:
        meta = safe_loads(path.read_bytes())
    except Exception as exc:
        raise _corrupt(path, f"unreadable Raft meta (term/vote): {exc}") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("currentTerm", 0), int):
        raise _corrupt(path, "Raft meta is not a map with an integer term")


def check_dump(path: Path) -> None:
    if not path.exists():
        return
    try:
        with gzip.open(path, "rb") as g:
            safe_loads(g.read())
    except Exception as exc:
        raise _corrupt(path, f"damaged snapshot: {type(exc).__name__}: {exc}") from None


def check_node_files(journal: Path) -> JournalReport | None:
    """Check the journal, its meta and the snapshot dump that sit beside it. A journal with
    entries of term 1 or later (or a snapshot) without its meta lost the node's term and
    vote: replaying it could vote twice in one term, so it is refused like other damage."""
    meta = journal.with_name(journal.name + ".meta")
    dump = journal.with_name("raft.dump")
    check_meta(meta)
    check_dump(dump)
    report = check_journal(journal)
    if not meta.exists() and ((report is not None and report.last_term >= 1) or dump.exists()):
        last = f"entries up to term {report.last_term}" if report is not None else "a snapshot"
        raise _corrupt(meta, f"missing, while the journal holds {last}: the node's term and vote are lost")
    return report


def quarantine(folder: Path) -> list[Path]:
    """Move every Raft file of a node aside (suffix .corrupt-TIMESTAMP); return new paths."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    moved = []
    for p in sorted(folder.glob("raft.*")):
        if ".corrupt-" in p.name:
            continue
        target = p.with_name(f"{p.name}.corrupt-{stamp}")
        p.rename(target)
        moved.append(target)
    return moved
