"""The newest fencing token this gateway has written to each device, kept across restarts.

A restarted node applies the log again only up to the commit index its current leader tells
it, which can lag what it had applied before it stopped (a new leader knows its commit index
only once it has committed in its own term). Without this file it could write an older
committed setpoint after a newer one: the fault lab's checker caught exactly that across a
restart (`n1: actuated n1-bat with (9, 16) after (27, 50)`). `allows` refuses a token older
than the newest one written; `record` stores a newer one durably (write, fsync, rename)
*before* the device write, so a crash between the two can only make the fence stricter.
A damaged file is moved aside and the fence starts empty, said once in `problem`. So does
a fence without a Raft journal beside it: a node with no journal (new, `--reset-journal`, or
a zone built again from scratch, whose tokens start over) cannot know what came before.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from meshems.adapters.atomic_write import write_atomic

Token = tuple[int, int]


class ActuationFence:
    def __init__(self, path: Path, journal: Path) -> None:
        self.path = path
        self.newest: dict[str, Token] = {}
        self.problem: str | None = None
        self.refused = 0
        #: each device is written from its own thread: one writer of the file at a time (two
        #: shared its temporary name, and one failed: E_FENCE_FILE in the 30-minute fault run)
        self._lock = threading.Lock()
        if path.exists() and not journal.exists():
            os.replace(path, path.with_name(path.name + ".old"))
        try:
            doc = json.loads(path.read_text()) if path.exists() else {}
            self.newest = {str(k): (int(v[0]), int(v[1])) for k, v in doc.items()}
        except (OSError, ValueError, TypeError, IndexError, AttributeError) as exc:
            aside = path.with_name(path.name + ".damaged")
            os.replace(path, aside)
            self.problem = f"{path}: unreadable ({exc}); moved to {aside}, the fence starts empty"

    @classmethod
    def in_folder(cls, data_dir: Path) -> ActuationFence:
        """The fence of a node's data folder (`actuated.json` beside `raft.journal`)."""
        return cls(data_dir / "actuated.json", data_dir / "raft.journal")

    def allows(self, device: str, token: Token) -> bool:
        """False when `token` is older than the newest one written to `device` (counted)."""
        newest = self.newest.get(device)
        if newest is not None and token < newest:
            self.refused += 1
            return False
        return True

    def record(self, device: str, token: Token) -> None:
        """Remember `token` as the newest for `device` (durably) when it is newer."""
        with self._lock:
            if self.newest.get(device, (-1, -1)) >= token:
                return
            self.newest[device] = token
            self.path.parent.mkdir(parents=True, exist_ok=True)
            data = json.dumps({k: list(v) for k, v in sorted(self.newest.items())}).encode()
            write_atomic(self.path, data)
