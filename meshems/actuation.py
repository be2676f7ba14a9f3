"""Actuation: this node writes the committed setpoints of its own devices to the field.

Owns when to write: a committed setpoint is written once its fencing token (term, index)
is newer than the last one applied to the device, and refreshed before the device's revert
timeout while it stays committed (a device whose commands stop falls back to its safe
default). Only committed state drives devices; nothing here proposes anything.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from meshems.adapters.poller import Poller
from meshems.core.cluster import ZoneState
from meshems.core.config import DeviceConfig, NodeConfig
from meshems.core.fencing import Token, newer, pv_limit_pct
from meshems.logs import log

#: refresh interval when the device has no revert timeout
IDLE_REFRESH_S = 30.0


class Actuator:
    def __init__(self, node: NodeConfig, poller: Poller) -> None:
        self.node = node
        self.poller = poller
        self.own: dict[str, DeviceConfig] = {
            d.id: d for d in node.devices if d.id in poller.devices and d.kind in ("battery", "pv")
        }
        self.applied: dict[str, Token] = {}
        self.last_write: dict[str, float] = {}
        self.refused_stale = 0
        self.writes: list[dict[str, Any]] = []  # the last few, for status
        self.state: ZoneState | None = None
        self.wake = asyncio.Event()
        self._revert_written: set[str] = set()

    def on_state(self, state: ZoneState) -> None:
        """Loop thread: the zone state changed (a new entry was applied)."""
        self.state = state
        self.wake.set()

    def refresh_s(self, dev: DeviceConfig) -> float:
        if dev.revert_timeout_s > 0:
            return max(0.5, dev.revert_timeout_s / 3)
        return IDLE_REFRESH_S

    async def run(self) -> None:
        while True:
            try:
                async with asyncio.timeout(0.25):
                    await self.wake.wait()
            except TimeoutError:
                pass
            self.wake.clear()
            await self.step()

    async def step(self) -> None:
        state = self.state
        if state is None:
            return
        now = time.monotonic()
        for dev_id, dev in self.own.items():
            await self._ensure_revert_timeout(dev)
            sp = state.setpoints.get(dev_id)
            if sp is None:
                continue
            token = (sp.term, sp.index)
            applied = self.applied.get(dev_id)
            if not newer(token, applied) and token != applied:
                self.refused_stale += 1
                log(
                    "warning",
                    "W_STALE_SETPOINT",
                    "refused a setpoint older than one already applied",
                    device=dev_id,
                    token=list(token),
                    applied=list(applied or ()),
                )
                continue
            due = token != applied or now - self.last_write.get(dev_id, 0.0) >= self.refresh_s(dev)
            if due:
                await self._write(dev, sp.kw, token)

    async def _write(self, dev: DeviceConfig, kw: float, token: Token) -> None:
        rt = self.poller.devices[dev.id]
        if dev.kind == "battery":
            point = rt.profile.role("setpoint_kw")
            value = kw
        else:
            point = rt.profile.role("limit_pct")
            rated = dev.rated_kw or rt.role_values().get("rated_kw") or 0.0
            value = pv_limit_pct(kw, rated)
        if point is None:
            return
        res = await self.poller.write(dev.id, point.name, value)
        self.last_write[dev.id] = time.monotonic()
        entry = {"device": dev.id, "kw": kw, "term": token[0], "index": token[1], **res}
        self.writes = [*self.writes[-19:], entry]
        if res.get("ok"):
            if self.applied.get(dev.id) != token:
                log(
                    "info",
                    "I_ACTUATED",
                    f"{dev.id} <- {value:g} ({point.name})",
                    device=dev.id,
                    term=token[0],
                    index=token[1],
                )
            self.applied[dev.id] = token
        else:
            log(
                "warning",
                res.get("code", "E_WRITE"),
                f"writing {dev.id} failed: {res.get('message')}",
                device=dev.id,
                term=token[0],
                index=token[1],
            )

    async def _ensure_revert_timeout(self, dev: DeviceConfig) -> None:
        if dev.id in self._revert_written or dev.revert_timeout_s <= 0:
            return
        rt = self.poller.devices[dev.id]
        point = rt.profile.role("revert_timeout_s")
        if point is None or rt.last_ok is None:
            return
        res = await self.poller.write(dev.id, point.name, dev.revert_timeout_s)
        if res.get("ok"):
            self._revert_written.add(dev.id)
