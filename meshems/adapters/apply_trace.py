"""An append-only trace of what a node applied and actuated, for the lab's fault checker.

Owns one JSON-lines file: `start` when the process starts, `apply` per committed entry
(index, term, result code, CRC-32 of the entry bytes), `restore` when a snapshot replaces
the state, `act` per setpoint written to a device with its (term, index). Writes are
line-buffered and flushed per line so a kill -9 loses at most the line being written.
Must not decide anything; off unless a node is started with `--trace FILE`.
"""

from __future__ import annotations

import json
import os
import threading
import time
import zlib
from pathlib import Path
from typing import Any


class ApplyTrace:
    def __init__(self, path: Path, node_id: str) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._f = open(path, "a", buffering=1)  # noqa: SIM115 - closed in close()
        self._lock = threading.Lock()
        self.write("start", node=node_id, pid=os.getpid())

    def write(self, kind: str, **fields: Any) -> None:
        line = json.dumps({"k": kind, "ts": round(time.time(), 4), **fields}, separators=(",", ":"))
        with self._lock:
            if not self._f.closed:
                self._f.write(line + "\n")

    def applied(self, term: int, index: int, code: str, entry: bytes) -> None:
        self.write("apply", t=term, i=index, c=code, d=zlib.crc32(entry))

    def close(self) -> None:
        with self._lock:
            self._f.close()


def read_trace(path: Path) -> list[dict[str, Any]]:
    """Every complete line of a trace (a torn last line from a kill -9 is skipped)."""
    rows = []
    if not path.exists():
        return rows
    for line in path.read_text(errors="replace").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
