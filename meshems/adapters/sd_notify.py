"""systemd's notify protocol: `READY=1`, `WATCHDOG=1`, `STATUS=...` datagrams to the
AF_UNIX socket in `$NOTIFY_SOCKET` (a leading '@' is the abstract namespace), and the
watchdog interval from `$WATCHDOG_USEC` (for this process only if `$WATCHDOG_PID` says so).
Without `$NOTIFY_SOCKET` (not run by systemd) every call is a no-op. Decides nothing.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping


def watchdog_interval_s(env: Mapping[str, str], pid: int) -> float | None:
    """The service's watchdog timeout in seconds, or None when there is none for `pid`
    (unset, not a positive number, or `WATCHDOG_PID` names another process)."""
    usec = env.get("WATCHDOG_USEC", "")
    wpid = env.get("WATCHDOG_PID", "")
    if wpid:
        try:
            if int(wpid) != pid:
                return None
        except ValueError:
            return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1e6 if value > 0 else None


def socket_address(value: str) -> str | bytes | None:
    """`$NOTIFY_SOCKET` as an address to send to: a path, the abstract name (as bytes with
    a leading NUL) for '@name', None for an empty or unusable value."""
    if value.startswith("@") and len(value) > 1:
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    return None  # vsock and relative paths are not for a node daemon


def encode(fields: Mapping[str, object]) -> bytes:
    """`KEY=value` lines; keys upper-cased (`ready=1` -> `READY=1`), newlines in a value
    flattened (the protocol is line based)."""
    lines = []
    for key, value in fields.items():
        text = str(value).replace("\n", " ")
        lines.append(f"{key.upper()}={text}")
    return "\n".join(lines).encode()


class Notifier:
    """Talks to the service manager named by the environment, or does nothing."""

    def __init__(self, address: str | bytes | None, watchdog_s: float | None) -> None:
        self.address = address
        self.watchdog_s = watchdog_s if address is not None else None
        self._sock: socket.socket | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, pid: int | None = None) -> Notifier:
        env = os.environ if env is None else env
        pid = os.getpid() if pid is None else pid
        return cls(socket_address(env.get("NOTIFY_SOCKET", "")), watchdog_interval_s(env, pid))

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, **fields: object) -> bool:
        """Send one datagram, e.g. `notify(READY=1, STATUS="leader, term 3")`. True when it
        was sent; False when disabled or the manager's socket is gone (never raises: the
        node keeps running without a manager listening)."""
        if self.address is None or not fields:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto(encode(fields), self.address)
        except OSError:
            return False
        return True

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
