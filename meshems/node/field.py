"""The node's field devices as the loop sees them: readings in, writes out, by role.

Wraps the polling engine (`adapters.poller.Poller`): each finished poll becomes a
`DeviceReading` (values by role) handed to `on_reading` at once (protection reacts to it);
a `Write` action names a point by its role (setpoint_kw, limit_pct, relay_N,
revert_timeout_s), which this service maps onto the device's profile and writes, read back
and verified. Decides nothing.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

from meshems.adapters.actuation_fence import ActuationFence
from meshems.adapters.poller import DeviceRuntime, Poller
from meshems.core.config import NodeConfig
from meshems.core.node_events import DeviceReading, Write, Written
from meshems.core.register_map import Profile
from meshems.logs import log
from meshems.node.histogram import POLL_BUCKETS_S, Histogram

#: how long `read_points` waits for the device's next poll before it answers with the last
READ_WAIT_S = 3.0


class FieldService:
    def __init__(
        self,
        node: NodeConfig,
        profiles: dict[str, Profile],
        on_reading: Callable[[DeviceReading], None],
        clock: Callable[[], float] = time.monotonic,
        fence: ActuationFence | None = None,
    ) -> None:
        self.clock = clock
        #: no committed value older than one written before, also across restarts
        self.fence = fence
        if fence is not None and fence.problem:
            log("warning", "E_FENCE_FILE", fence.problem)
        self._on_reading = on_reading
        self.poller = Poller(node, profiles, clock=clock, on_poll=self._polled)
        # a shared device is polled only once the zone says this node owns it
        self.poller.paused = {d.id for d in node.devices if d.shared}
        self._tasks: set[asyncio.Task[Written]] = set()
        #: device -> futures waiting for its next finished poll (`read_points`)
        self._waiting: dict[str, list[asyncio.Future[None]]] = {}
        #: bus -> seconds each finished poll took, all its blocks (for /metrics)
        self.poll_latency = {b: Histogram(POLL_BUCKETS_S) for b in {d.bus for d in node.devices if d.bus}}

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
        hist = self.poll_latency.get(dev.cfg.bus or "")
        if hist is not None and dev.poll_starts:
            hist.observe(self.clock() - dev.poll_starts[-1])
        for fut in self._waiting.pop(dev.cfg.id, ()):
            if not fut.done():
                fut.set_result(None)
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

    async def _fence(self, action: Write) -> Written | None:
        """A committed value older than one written before is refused (E_STALE_TOKEN); a
        newer one is stored as the newest before it is written (E_FENCE_FILE if it cannot be)."""
        if action.token is None or self.fence is None:
            return None
        if not self.fence.allows(action.key, action.token):
            newest = self.fence.newest[action.key]
            msg = (f"{action.key}: {action.token} is older than {newest}, which this gateway wrote before; "
                   "waiting for the zone's log to catch up")  # fmt: skip
            return Written(action.key, action.token, False, "E_STALE_TOKEN", msg, self.clock())
        try:
            await asyncio.to_thread(self.fence.record, action.key, action.token)
        except OSError as exc:
            msg = f"{action.key}: cannot store its fencing token in {self.fence.path}: {exc}"
            return Written(action.key, action.token, False, "E_FENCE_FILE", msg, self.clock())
        return None

    async def write_now(self, action: Write) -> Written:
        """Write one value by role, read it back and verify it."""
        rt = self.poller.devices.get(action.device_id)
        point = rt.profile.role(action.role) if rt is not None else None
        if point is None:
            msg = f"{action.device_id} has no {action.role} point"
            return Written(action.key, action.token, False, "E_PROFILE", msg, self.clock())
        assert rt is not None
        refused = await self._fence(action)
        if refused is not None:
            return refused
        for name, value in rt.profile.enables.get(action.role, ()):  # SunSpec: enable the control first
            if rt.values.get(name) == value:
                continue
            res = await self.poller.write(action.device_id, name, value)
            if not res.get("ok"):
                msg = f"enabling {name} for {action.role}: {res.get('message', '')}"
                return Written(action.key, action.token, False, str(res.get("code", "")), msg, self.clock())
        res = await self.poller.write(action.device_id, point.name, action.value)
        return Written(
            action.key,
            action.token,
            bool(res.get("ok")),
            str(res.get("code", "")),
            str(res.get("message", "")),
            self.clock(),
        )

    async def read_points(
        self, device_id: str, names: Sequence[str], wait_s: float = READ_WAIT_S
    ) -> dict[str, Any]:
        """Live values of a device's points by name (all of them without `names`): those of
        its next poll if one finishes within `wait_s`, else its last, with their age.
        Returns {ok, code, message, ...}: E_UNKNOWN_DEVICE when this node does not poll it,
        E_UNKNOWN_POINT naming the profile's points, E_NO_DATA before a first good poll."""
        rt = self.poller.devices.get(device_id)
        if rt is None or device_id in self.poller.paused:
            why = "does not own it now" if rt is not None else "does not wire it"
            return {"ok": False, "code": "E_UNKNOWN_DEVICE", "message": f"this node {why}: {device_id}"}
        known = [p.name for p in rt.profile.points]
        wrong = [n for n in names if n not in known]
        if wrong:
            points = ", ".join(known)
            msg = f"{device_id} ({rt.profile.name}) has no point {', '.join(wrong)} (points: {points})"
            return {"ok": False, "code": "E_UNKNOWN_POINT", "message": msg}
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(device_id, []).append(fut)
        try:
            await asyncio.wait_for(asyncio.shield(fut), wait_s)
        except TimeoutError:
            waiting = self._waiting.get(device_id, [])
            if fut in waiting:
                waiting.remove(fut)
        if rt.last_ok is None:
            msg = f"{device_id} has not answered a poll yet ({rt.last_error or 'no poll finished'})"
            return {"ok": False, "code": "E_NO_DATA", "message": msg}
        roles = {point: role for role, point in rt.profile.roles.items()}
        points = []
        for name in names or known:
            p = rt.profile.point(name)
            v = rt.values.get(name)
            value = None if v is None or math.isnan(v) else v
            points.append(
                {
                    "name": name,
                    "value": value,
                    "unit": p.unit,
                    "role": roles.get(name, ""),
                    "address": p.address,
                }
            )
        return {
            "ok": True,
            "code": "OK",
            "message": "",
            "device": device_id,
            "profile": rt.profile.name,
            "fresh": fut.done() and rt.failures == 0,
            "age_s": round(self.clock() - rt.last_ok, 3),
            "failures_in_a_row": rt.failures,
            "last_error": rt.last_error,
            "points": points,
        }

    def snapshot(self) -> list[dict[str, Any]]:
        return self.poller.snapshot()

    @property
    def buses(self) -> int:
        return len(self.poller.buses)
