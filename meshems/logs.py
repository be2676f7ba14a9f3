"""Structured logs: one JSON object per line on stderr, each with a stable `code`.

Owns the log format only. The core never logs; adapters and the runtime do.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections import Counter
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from meshems.core.outages import OutageEvent

_node_id = "-"
_stream: TextIO = sys.stderr


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "node": _node_id,
            "code": getattr(record, "code", None) or f"L_{record.name.upper().replace('.', '_')}",
            "msg": record.getMessage(),
        }
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(node_id: str = "-", level: str = "info", stream: TextIO | None = None) -> None:
    """Route all logging (ours and pysyncobj's) to JSON lines."""
    global _node_id, _stream
    _node_id = node_id
    _stream = stream or sys.stderr
    handler = logging.StreamHandler(_stream)
    handler.setFormatter(_JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


def log(level: str, code: str, msg: str, **fields: Any) -> None:
    """Log one event with a stable code, e.g. log("warning", "E_QUORUM", "lost quorum")."""
    logging.getLogger("meshems").log(
        logging.getLevelName(level.upper()), msg, extra={"code": code, "fields": fields}
    )


class Throttled:
    """One log line per `interval_s` for a repeated event (an attack can repeat it 2,000
    times a second), counting what happened in between and from which peers."""

    def __init__(self, level: str, code: str, what: str, interval_s: float = 10.0) -> None:
        self.level, self.code, self.what, self.interval_s = level, code, what, interval_s
        self.total = 0
        self._since_log: Counter[str] = Counter()
        self._logged_at = -1e18

    def note(self, peer: str, now_s: float, **fields: Any) -> None:
        """Count one event from `peer` at monotonic time `now_s`; log if it is time."""
        self.total += 1
        self._since_log[peer] += 1
        if now_s - self._logged_at < self.interval_s:
            return
        self._logged_at = now_s
        count = sum(self._since_log.values())
        peers = dict(self._since_log.most_common(8))
        self._since_log.clear()
        log(self.level, self.code, f"{self.what} ({count} since the last report, {self.total} in all)",
            peers=peers, **fields)  # fmt: skip


def log_outage(event: OutageEvent | None, **fields: Any) -> None:
    """One log line per outage of a link: W_OUTAGE when it began, I_OUTAGE_END when it ended."""
    if event is None:
        return
    code, level = ("W_OUTAGE", "warning") if event.kind == "down" else ("I_OUTAGE_END", "info")
    log(level, code, event.message(), link=event.link, duration_s=round(event.duration_s, 1), **fields)
