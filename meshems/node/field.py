"""The node's field devices as the loop sees them: readings in, writes out, by role.

Wraps the polling engine (`adapters.poller.Poller`): each finished poll becomes a
`DeviceReading` (values by role) handed to `on_reading` at once (protection reacts to it);
a `Write` action names a point by its role (setpoint_kw, limit_pct, relay_N,
revert_timeout_s), which this service maps onto the device's profile and writes, read back
and verified. Decides nothing.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from meshems.adapters.poller import DeviceRuntime, Poller
from meshems.core.config import NodeConfig
from meshems.core.node_events import DeviceReading, Write, Written
from meshems.core.register_map import Profile


class FieldService:
    def __init__(
        self,
        node: NodeConfig,
        profiles: dict[str, Profile],
        on_reading: Callable[[DeviceReading], None],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self._on_reading = on_reading
        self.poller = Poller(node, profiles, clock=clock, on_poll=self._polled)
        # a shared device is polled only once the zone says this node owns it
        self.poller.paused = {d.id for d in node.devices if d.shared}
        self._tasks: set[asyncio.Task[Written]] = set()

    def roles(self) -> dict[str, frozenset[str]]:
        """The point roles each wired device's profile offers (for the node's spec)."""
        return {k: frozenset(rt.profile.roles) for k, rt in self.poller.devices.items()}

    async def start(self) -> None:
        await self.poller.start()
        now = self.clock()
        for dev_id in self.poller.devices:  # every wired device is known (unknown) at once
            self._on_reading(DeviceReading(dev_id, False, 0, {}, now))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.poller.stop()

    def pause(self, devices: frozenset[str]) -> None:
        self.poller.paused = set(devices)

    def _polled(self, dev: DeviceRuntime) -> None:
        answered = dev.failures == 0 and dev.last_ok is not None
        self._on_reading(DeviceReading(dev.cfg.id, answered, dev.failures, dev.role_values(), self.clock()))

    def write(self, action: Write, done: Callable[[Written], None]) -> None:
        """`ports.FieldBus`: write in the background; `done(written)` on the loop after."""

        def finished(task: asyncio.Task[Written]) -> None:
            self._tasks.discard(task)
            if not task.cancelled():
                done(task.result())

        task = asyncio.get_running_loop().create_task(self.write_now(action))
        self._tasks.add(task)
        task.add_done_callback(finished)

    async def write_now(self, action: Write) -> Written:
        """Write one value by role, read it back and verify it."""
        rt = self.poller.devices.get(action.device_id)
        point = rt.profile.role(action.role) if rt is not None else None
        if point is None:
            msg = f"{action.device_id} has no {action.role} point"
            return Written(action.key, action.token, False, "E_PROFILE", msg, self.clock())
        res = await self.poller.write(action.device_id, point.name, action.value)
        return Written(
            action.key,
            action.token,
            bool(res.get("ok")),
            str(res.get("code", "")),
            str(res.get("message", "")),
            self.clock(),
        )

    def snapshot(self) -> list[dict[str, Any]]:
        return self.poller.snapshot()

    @property
    def buses(self) -> int:
        return len(self.poller.buses)
