"""Structured logs: one JSON object per line on stderr, each with a stable `code`.

Owns the log format only. The core never logs; adapters and the runtime do.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any, TextIO

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
