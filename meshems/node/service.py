"""The node as a systemd service: when it tells the manager it is ready (joined the cluster
and polled its devices once), the watchdog pings from the control loop (at most every half
interval: a stalled loop stops them), the `STATUS=` line, and the refusal to run as root.
Talks through `adapters.sd_notify`; decides nothing about the zone.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable

from meshems.adapters.sd_notify import Notifier
from meshems.core.errors import RootError
from meshems.core.node_events import RaftChanged
from meshems.node.field import FieldService

ROOT_MESSAGE = "refusing to run as root; use the meshems user (meshems install) or pass --allow-root"


def refuse_root(allow_root: bool, euid: int | None = None) -> None:
    """Raise E_ROOT when running as uid 0 without `--allow-root` (the node needs no
    privilege: the overlay and the firewall are set up by their own oneshot units)."""
    if (os.geteuid() if euid is None else euid) == 0 and not allow_root:
        raise RootError(ROOT_MESSAGE)


def polled_once(field: FieldService | None) -> bool:
    """Every device this node polls has answered or failed at least once (True without any)."""
    if field is None:
        return True
    poller = field.poller
    return all(
        d.last_ok is not None or d.failures > 0 for k, d in poller.devices.items() if k not in poller.paused
    )


def joined(view: RaftChanged | None) -> bool:
    """A member that knows its leader and has caught up with what it committed."""
    return view is not None and view.leader is not None and view.ready


def status_line(view: RaftChanged | None, is_joined: bool, polled: bool) -> str:
    if view is None:
        return "starting"
    text = f"{view.role}, term {view.term}, leader {view.leader or 'none'}"
    if not is_joined:
        return text + "; joining the cluster"
    return text if polled else text + "; waiting for the first poll of its devices"


class ServiceNotify:
    """What the daemon's tick tells the service manager (nothing without one)."""

    def __init__(self, notifier: Notifier, devices_polled: Callable[[], bool]) -> None:
        self.notifier = notifier
        self.devices_polled = devices_polled
        self.ready_sent = False
        self._polled = False
        self._last_ping = -math.inf
        self._status = ""

    def tick(self, now: float, view: RaftChanged | None) -> None:
        """Called from the control loop's every tick (monotonic `now`)."""
        if not self.notifier.enabled:
            return
        fields: dict[str, object] = {}
        wd = self.notifier.watchdog_s
        ping = wd is not None and now - self._last_ping >= wd / 2
        if ping:
            fields["WATCHDOG"] = 1
        is_joined = joined(view)
        if not self._polled:
            self._polled = self.devices_polled()
        ready = not self.ready_sent and is_joined and self._polled
        if ready:
            fields["READY"] = 1
        status = status_line(view, is_joined, self._polled)
        if status != self._status:
            fields["STATUS"] = status
        if fields and self.notifier.notify(**fields):
            self._status = status
            self.ready_sent = self.ready_sent or ready
            if ping:
                self._last_ping = now

    def stopping(self) -> None:
        self.notifier.notify(STOPPING=1, STATUS="stopping")
        self.notifier.close()
