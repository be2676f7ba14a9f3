"""Actuation rules of one node: which device writes are due, and what a write's outcome means.

Rules (pure; time comes in as `now_s`):
- A committed setpoint or relay state is written when its fencing token (term, index) is
  newer than the last one applied to the device, and written again every `refresh_s`
  while it stays committed (before the device's own revert timeout). An older token than
  the one applied, or than one whose write was asked for and failed, is refused and
  counted, never written.
- Nothing outside the limits in the node's own config is ever written, whatever the zone
  state says (the replicated limits may only narrow them).
- One write per device point at a time: a value is not sent again while one is in flight.
- The revert timeout is written once, when the device has answered a poll.
- In survival mode the node's own dispatch replaces the committed values; leaving it
  writes the committed values again at once. Protection trips lock a target out for its
  hold time: no committed or survival write touches it meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from meshems.core.cluster import ZoneState
from meshems.core.dispatch import DispatchResult
from meshems.core.fencing import Token, newer, pv_limit_pct
from meshems.core.node_events import Log, Write, Written
from meshems.core.node_spec import IDLE_REFRESH_S, DeviceSpec
from meshems.core.protection import Trip


@dataclass
class Actuation:
    devices: Mapping[str, DeviceSpec]
    applied: dict[str, Token] = field(default_factory=dict)
    #: the newest token a write was asked for: one that failed (a timeout may have landed)
    #: still fences older ones
    sent: dict[str, Token] = field(default_factory=dict)
    last_write_s: dict[str, float] = field(default_factory=dict)
    in_flight: set[str] = field(default_factory=set)
    revert_done: set[str] = field(default_factory=set)
    lockout_until_s: dict[str, float] = field(default_factory=dict)
    survival_shed_kw: dict[str, float] = field(default_factory=dict)
    refused_stale: int = 0
    refused_limit: int = 0
    _refused: dict[str, Token | None] = field(default_factory=dict)
    #: the last few write outcomes, for status
    writes: list[dict[str, object]] = field(default_factory=list)

    # --- what to write -----------------------------------------------------------------------

    def committed(self, state: ZoneState, now_s: float, paused: frozenset[str], answered: set[str]) -> list:
        """Writes due for the committed state (and logs of refused values)."""
        out: list[Write | Log] = []
        for dev in sorted(self.devices.values(), key=lambda d: d.id):
            if not dev.wired or dev.id in paused or dev.kind not in ("battery", "pv"):
                continue
            if dev.id in answered:
                out += self._revert_timeout(dev)
            sp = state.setpoints.get(dev.id)
            if sp is not None and self._due(dev.id, (sp.term, sp.index), now_s, dev.refresh_s, out):
                out += self.setpoint(dev, sp.kw, (sp.term, sp.index), "committed", now_s)
        for load, rs in sorted(state.relays.items()):
            device_id, _, ch = load.rpartition(":")
            dev = self.devices.get(device_id)
            role, token = f"relay_{ch}", (rs.term, rs.index)
            if dev is None or role not in dev.roles or dev.kind != "relay" or self.locked_out(load, now_s):
                continue
            if self._due(load, token, now_s, IDLE_REFRESH_S, out):
                self.in_flight.add(load)
                out.append(Write(load, device_id, role, 1.0 if rs.closed else 0.0, token, rs.controller))
        return out

    def _revert_timeout(self, dev: DeviceSpec) -> list[Write]:
        """Once a device answers: write its revert timeout (it then reverts to its safe
        default when this node stops refreshing it)."""
        key = revert_key(dev.id)
        if dev.revert_timeout_s <= 0 or "revert_timeout_s" not in dev.roles:
            return []
        if dev.id in self.revert_done or key in self.in_flight:
            return []
        self.in_flight.add(key)
        return [Write(key, dev.id, "revert_timeout_s", dev.revert_timeout_s, None, "revert")]

    def _due(self, key: str, token: Token, now_s: float, refresh_s: float, out: list) -> bool:
        """A newer token, or the same one due for its refresh. An older one is refused."""
        if key in self.in_flight:
            return False
        applied = self.applied.get(key)
        fence = self.sent.get(key, applied)  # never below `applied`: every applied token was sent
        if fence is not None and token != fence and not newer(token, fence):
            self.refused_stale += 1
            if self._refused.get(key) != token:
                self._refused[key] = token
                fields = {"target": key, "token": list(token), "applied": list(fence)}
                out.append(
                    Log(
                        "warning",
                        "W_STALE_SETPOINT",
                        "refused a value older than one already applied",
                        fields,
                    )
                )
            return False
        due = token != applied or now_s - self.last_write_s.get(key, -1e18) >= refresh_s
        if due:
            self.sent[key] = token
        return due

    def setpoint(self, dev: DeviceSpec, kw: float, token: Token | None, source: str, now_s: float) -> list:
        """The write of a kW setpoint (a battery's setpoint, a PV limit in %), or the log of
        its refusal when it lies outside the node's own config limits."""
        if not dev.min_kw <= kw <= dev.max_kw:
            self.refused_limit += 1
            if self._refused.get("limit" + dev.id, ()) == token:
                return []  # logged once per committed value, not at every refresh
            self._refused["limit" + dev.id] = token
            msg = (
                f"refused to write {kw:g} kW to {dev.id}: outside [{dev.min_kw:g}, {dev.max_kw:g}] kW in "
                "this node's config, whatever the zone state says"
            )
            fields = {
                "device": dev.id,
                "kw": kw,
                "token": None if token is None else list(token),
                "source": source,
            }
            return [Log("error", "E_LIMIT", msg, fields)]
        self._refused.pop("limit" + dev.id, None)
        if dev.kind == "battery":
            role, value = "setpoint_kw", kw
        else:
            role, value = "limit_pct", pv_limit_pct(kw, dev.rated_kw or 0.0)
        if role not in dev.roles:
            return []
        self.in_flight.add(dev.id)
        return [Write(dev.id, dev.id, role, value, token, source, kw)]

    def survival(self, result: DispatchResult, now_s: float) -> list:
        """The writes of this node's own dispatch inside its envelope (no quorum)."""
        out: list = []
        for dev_id, kw, controller, _why in result.setpoints:
            dev = self.devices.get(dev_id)
            if dev is not None and dev.wired and dev_id not in self.in_flight:
                out += self.setpoint(dev, kw, None, f"survival:{controller}", now_s)
        for load, closed, controller, _why, expected in result.relays:
            device_id, _, ch = load.rpartition(":")
            dev, role = self.devices.get(device_id), f"relay_{ch}"
            if dev is None or role not in dev.roles or self.locked_out(load, now_s) or load in self.in_flight:
                continue
            self.in_flight.add(load)
            out.append(Write(load, device_id, role, 1.0 if closed else 0.0, None, f"survival:{controller}"))
            if closed:
                self.survival_shed_kw.pop(load, None)
            else:
                self.survival_shed_kw[load] = expected
        return out

    def leave_survival(self) -> None:
        """Quorum is back: write the committed values again at once (fencing stays)."""
        self.survival_shed_kw.clear()
        self.last_write_s.clear()

    # --- protection --------------------------------------------------------------------------

    def lock_out(self, target: str, until_s: float) -> None:
        self.lockout_until_s[target] = until_s

    def locked_out(self, target: str, now_s: float) -> bool:
        return self.lockout_until_s.get(target, -1e18) > now_s

    def trip(self, trip: Trip) -> Write | None:
        """The protective write of a trip: never waits for anything in flight."""
        if trip.kind == "shed":
            device_id, _, ch = trip.target.rpartition(":")
            dev = self.devices.get(device_id)
            if dev is None or f"relay_{ch}" not in dev.roles:
                return None
            return Write(trip_key(trip.target), device_id, f"relay_{ch}", 0.0, None, "protection")
        dev = self.devices.get(trip.target)
        if dev is None or "limit_pct" not in dev.roles:
            return None
        return Write(trip_key(trip.target), trip.target, "limit_pct", trip.pv_limit_pct, None, "protection")

    # --- outcomes ----------------------------------------------------------------------------

    def written(self, ev: Written, write: Write | None) -> list[Log]:
        """Record a write's outcome; a committed value counts as applied once it succeeded."""
        self.in_flight.discard(ev.key)
        if write is not None and write.source == "revert":
            if ev.ok:
                self.revert_done.add(write.device_id)
            return []
        target = ev.key.removesuffix("#trip")
        self.last_write_s[target] = ev.now_s
        entry: dict[str, object] = {"device": target, "ok": ev.ok, "code": ev.code, "message": ev.message}
        if write is not None:
            entry["source"] = write.source
            entry["kw" if write.kw is not None else "value"] = write.value if write.kw is None else write.kw
        out: list[Log] = []
        if ev.token is not None:
            entry.update(term=ev.token[0], index=ev.token[1])
            if ev.ok and self.applied.get(ev.key) != ev.token and write is not None and write.kw is not None:
                fields = {"device": ev.key, "term": ev.token[0], "index": ev.token[1]}
                out.append(Log("info", "I_ACTUATED", f"{ev.key} <- {write.value:g} ({write.role})", fields))
            if ev.ok:
                self.applied[ev.key] = ev.token
        self.writes = [*self.writes[-19:], entry]
        if not ev.ok:
            msg = f"writing {target} failed: {ev.message}"
            out.append(Log("warning", ev.code or "E_WRITE", msg, {"target": target}))
        return out


def trip_key(target: str) -> str:
    """The write key of a protective write: its own, so it never waits for a committed one."""
    return f"{target}#trip"


def revert_key(device_id: str) -> str:
    """The write key of a device's revert timeout (its own, beside the setpoint's)."""
    return f"{device_id}#revert"
