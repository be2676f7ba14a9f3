"""Actuation: this node writes the committed setpoints and relay states of its own devices.

Owns when to write: a committed value is written once its fencing token (term, index) is
newer than the last one applied to the device, and refreshed before the device's revert
timeout while it stays committed (a device whose commands stop falls back to its safe
default). In survival mode (no quorum) the node's own dispatch inside its envelope takes
over; protection trips lock loads out for a hold time. Nothing here proposes anything.
The node's own config is the final word on its devices' limits: whatever the replicated
state says, no setpoint outside the configured [min_kw, max_kw] is ever written.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from meshems.adapters.poller import Poller
from meshems.core.cluster import ZoneState
from meshems.core.config import DeviceConfig, NodeConfig
from meshems.core.dispatch import DispatchResult
from meshems.core.fencing import Token, newer, pv_limit_pct
from meshems.core.protection import Trip
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
        self.relay_devices = {d.id for d in node.devices if d.id in poller.devices and d.kind == "relay"}
        self.applied: dict[str, Token] = {}
        self.last_write: dict[str, float] = {}
        self.refused_stale = 0
        #: setpoints refused because they lie outside the limits in this node's config
        self.refused_limit = 0
        self._limit_refused: dict[str, Token | None] = {}
        #: called with (device, kW, token) after a committed setpoint reached the device
        self.on_actuated: Callable[[str, float, Token], None] | None = None
        self.writes: list[dict[str, Any]] = []  # the last few, for status
        self.state: ZoneState | None = None
        self.wake = asyncio.Event()
        self._revert_written: set[str] = set()
        self._lockout_until: dict[str, float] = {}
        self.survival: DispatchResult | None = None
        self._survival_shed: dict[str, float] = {}

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
        if self.survival is not None:
            return  # survival writes come from apply_survival
        state = self.state
        if state is None:
            return
        now = time.monotonic()
        for dev_id, dev in self.own.items():
            if dev_id in self.poller.paused:
                continue  # a shared device another gateway owns now
            await self._ensure_revert_timeout(dev)
            sp = state.setpoints.get(dev_id)
            if sp is None:
                continue
            if self._fenced(dev_id, (sp.term, sp.index), now, self.refresh_s(dev)):
                await self._write_setpoint(dev, sp.kw, (sp.term, sp.index))
        for load, rs in state.relays.items():
            device_id, _, ch = load.rpartition(":")
            if device_id not in self.relay_devices or self.locked_out(load):
                continue
            if self._fenced(load, (rs.term, rs.index), now, IDLE_REFRESH_S):
                await self._write_relay(
                    load, device_id, int(ch), rs.closed, (rs.term, rs.index), rs.controller
                )

    def _fenced(self, key: str, token: Token, now: float, refresh_s: float) -> bool:
        """Whether to write now: a newer token, or the same one due for a refresh. An older
        token than the one applied is refused (and counted)."""
        applied = self.applied.get(key)
        if applied is not None and token != applied and not newer(token, applied):
            self.refused_stale += 1
            log("warning", "W_STALE_SETPOINT", "refused a value older than one already applied",
                target=key, token=list(token), applied=list(applied))  # fmt: skip
            return False
        return token != applied or now - self.last_write.get(key, 0.0) >= refresh_s

    async def _write_setpoint(
        self, dev: DeviceConfig, kw: float, token: Token | None, source: str = ""
    ) -> None:
        if not dev.min_kw <= kw <= dev.max_kw:
            self._refuse_outside_limits(dev, kw, token, source)
            return
        self._limit_refused.pop(dev.id, None)
        rt = self.poller.devices[dev.id]
        if dev.kind == "battery":
            point, value = rt.profile.role("setpoint_kw"), kw
        else:
            point = rt.profile.role("limit_pct")
            rated = dev.rated_kw or rt.role_values().get("rated_kw") or 0.0
            value = pv_limit_pct(kw, rated)
        if point is None:
            return
        res = await self.poller.write(dev.id, point.name, value)
        self._record(dev.id, token, res, {"kw": kw, "source": source or "committed"})
        if res.get("ok") and token is not None and self.on_actuated is not None:
            self.on_actuated(dev.id, kw, token)
        if res.get("ok") and token is not None and self.applied.get(dev.id) != token:
            log("info", "I_ACTUATED", f"{dev.id} <- {value:g} ({point.name})", device=dev.id,
                term=token[0], index=token[1])  # fmt: skip

    def _refuse_outside_limits(self, dev: DeviceConfig, kw: float, token: Token | None, source: str) -> None:
        """Defence in depth: the replicated limits may only narrow the configured ones."""
        self.refused_limit += 1
        if dev.id in self._limit_refused and self._limit_refused[dev.id] == token:
            return  # logged once per committed value, not at every refresh
        self._limit_refused[dev.id] = token
        log("error", "E_LIMIT",
            f"refused to write {kw:g} kW to {dev.id}: outside [{dev.min_kw:g}, {dev.max_kw:g}] kW in this "
            "node's config, whatever the zone state says", device=dev.id, kw=kw,
            token=None if token is None else list(token), source=source or "committed")  # fmt: skip

    async def _write_relay(
        self, load: str, device_id: str, channel: int, closed: bool, token: Token | None, why: str
    ) -> dict[str, Any]:
        point = self.poller.devices[device_id].profile.role(f"relay_{channel}")
        if point is None:
            return {"ok": False, "code": "E_PROFILE", "message": f"{device_id} has no relay_{channel}"}
        res = await self.poller.write(device_id, point.name, 1.0 if closed else 0.0)
        self._record(load, token, res, {"closed": closed, "source": why})
        return res

    def _record(self, key: str, token: Token | None, res: dict[str, Any], extra: dict[str, Any]) -> None:
        self.last_write[key] = time.monotonic()
        entry = {"device": key, **extra, **res}
        if token is not None:
            entry.update(term=token[0], index=token[1])
            if res.get("ok"):
                self.applied[key] = token
        self.writes = [*self.writes[-19:], entry]
        if not res.get("ok"):
            log(
                "warning",
                res.get("code", "E_WRITE"),
                f"writing {key} failed: {res.get('message')}",
                target=key,
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

    # --- protection -----------------------------------------------------------------------

    def lock_out(self, target: str, hold_s: float) -> None:
        self._lockout_until[target] = time.monotonic() + hold_s

    def locked_out(self, target: str) -> bool:
        return self._lockout_until.get(target, 0.0) > time.monotonic()

    async def protective_write(self, trip: Trip) -> dict[str, Any]:
        if trip.kind == "shed":
            device_id, _, ch = trip.target.rpartition(":")
            return await self._write_relay(trip.target, device_id, int(ch), False, None, "protection")
        rt = self.poller.devices[trip.target]
        point = rt.profile.role("limit_pct")
        if point is None:
            return {"ok": False, "code": "E_PROFILE", "message": f"{trip.target} has no limit_pct"}
        res = await self.poller.write(trip.target, point.name, trip.pv_limit_pct)
        self._record(trip.target, None, res, {"limit_pct": trip.pv_limit_pct, "source": "protection"})
        return res

    # --- survival -------------------------------------------------------------------------

    def survival_shed_kw(self) -> dict[str, float]:
        return dict(self._survival_shed)

    async def apply_survival(self, result: DispatchResult) -> None:
        """Write this node's own dispatch (inside its envelope) while it has no quorum."""
        self.survival = result
        for dev_id, kw, controller, _why in result.setpoints:
            dev = self.own.get(dev_id)
            if dev is not None:
                await self._write_setpoint(dev, kw, None, source=f"survival:{controller}")
        for load, closed, controller, _why, expected in result.relays:
            device_id, _, ch = load.rpartition(":")
            if device_id in self.relay_devices and not self.locked_out(load):
                await self._write_relay(load, device_id, int(ch), closed, None, f"survival:{controller}")
                if closed:
                    self._survival_shed.pop(load, None)
                else:
                    self._survival_shed[load] = expected

    def leave_survival(self) -> None:
        """Quorum is back: write the committed values again at once (fencing stays: tokens
        older than ones already applied are still refused)."""
        self.survival = None
        self._survival_shed.clear()
        self.last_write.clear()
        self.wake.set()
