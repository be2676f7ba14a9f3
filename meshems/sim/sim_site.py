"""One simulated site as Modbus devices: its physics (`sim.physics`) on the wall clock, each
device's four tables a view of it (a read encodes the values, a write commands the physics; a
value outside min/max is exception 0x03) and faults per device (silent, slow, garbage, CRC,
exception codes). Serving it is `sim.server`; profiles come in as objects, no files are read.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.exceptions import NoSuchIdException
from pymodbus.simulator import SimDevice

from meshems.core.register_map import Point, Profile
from meshems.core.registers import CodecError, decode, encode
from meshems.sim import sunspec_chain
from meshems.sim.meter_view import meter_points
from meshems.sim.physics import Site
from meshems.sim.sitefile import FaultSpec, SiteFile
from meshems.sim.tables import TABLE_OF_FC, points_by_table, put, sim_blocks, touched, written


@dataclass
class Fault:
    kind: str = "none"
    delay_s: float = 2.0
    code: int = 0x0B


@dataclass
class SimDeviceState:
    server: str
    unit_id: int
    model: str
    profile: Profile
    #: a static holding-register image served beneath the points (a SunSpec chain), or None
    image: dict[int, int] | None = None
    fault: Fault = field(default_factory=Fault)
    reads: int = 0
    writes: int = 0
    rejected_writes: int = 0


class SimSite:
    """One site's physics driven by the wall clock, and its devices' register views."""

    def __init__(
        self, spec: SiteFile, profiles: dict[str, Profile], clock: Callable[[], float] = time.monotonic
    ):
        p = spec.site
        self.spec = spec
        self.clock = clock
        self.speed = spec.site.speed
        self.site = Site.demo(
            seed=p.seed,
            peak_load_kw=p.peak_load_kw,
            pv_rated_kw=p.pv_rated_kw,
            battery_kwh=p.battery_kwh,
            battery_kw=p.battery_kw,
            loads=p.loads,
        )
        site_kw: dict[str, Any] = {
            "t_s": p.start_h * 3600.0,
            "load_shape": p.load_shape,
            "cloudiness": p.cloudiness,
        }
        if self.site.battery is not None:
            site_kw["battery"] = dataclasses.replace(self.site.battery, soc_pct=p.soc_pct)
        self.site = dataclasses.replace(self.site, **site_kw)
        self.site = self.site.step(1e-3)  # compute the first physics state
        self.devices: dict[tuple[str, int], SimDeviceState] = {}
        for d in spec.devices:
            profile = profiles[profile_key(d.profile, d.model)]
            for u in range(d.unit_id, d.unit_id + d.count):
                image = self._sunspec_image(d.model, u) if d.profile == "sunspec" else None
                self.devices[(d.server, u)] = SimDeviceState(d.server, u, d.model, profile, image)
        for f in spec.faults:
            self.set_fault(f)
        self._last_tick = clock()

    def _sunspec_image(self, model: str, unit: int) -> dict[int, int]:
        p = self.spec.site
        rated_kw = p.pv_rated_kw if model == "pv" else p.battery_kw
        values = sunspec_chain.nameplate(model, rated_kw, p.battery_kwh, f"SIM{unit:03d}")
        return sunspec_chain.chain_registers(model, values)

    # --- physics ------------------------------------------------------------------------

    def tick(self) -> None:
        now = self.clock()
        dt = (now - self._last_tick) * self.spec.site.speed
        self._last_tick = now
        if dt > 0:
            self.site = self.site.step(dt)

    def set_fault(self, f: FaultSpec | dict[str, Any]) -> None:
        f = f if isinstance(f, FaultSpec) else FaultSpec.model_validate(f)
        dev = self.devices[(f.server, f.unit_id)]
        dev.fault = Fault(f.kind, f.delay_s, f.code)

    def role_value(self, dev: SimDeviceState, role: str) -> float | None:
        s = self.site
        if dev.model == "meter":
            m = s.meter
            return {
                "power_kw": m.grid_kw,
                "voltage_v": m.voltage_v,
                "frequency_hz": m.frequency_hz,
                "energy_import_kwh": m.energy_import_kwh,
                "energy_export_kwh": m.energy_export_kwh,
            }.get(role)
        if dev.model == "battery" and s.battery is not None:
            b = s.battery
            return {
                "power_kw": b.power_kw,
                "setpoint_kw": b.setpoint_kw,
                "soc_pct": b.soc_pct,
                "revert_timeout_s": b.revert_timeout_s / self.speed,
                "max_charge_kw": b.max_charge_kw,
                "max_discharge_kw": b.max_discharge_kw,
                "capacity_kwh": b.capacity_kwh,
            }.get(role)
        if dev.model == "pv" and s.pv is not None:
            pv = s.pv
            return {
                "power_kw": pv.power_kw,
                "limit_pct": pv.limit_pct,
                "revert_timeout_s": pv.revert_timeout_s / self.speed,
                "rated_kw": pv.rated_kw,
            }.get(role)
        if dev.model == "relay" and role.startswith(("relay_", "load_", "input_")):
            ch = int(role.split("_")[1])
            if ch > len(s.loads):
                return 0.0
            if role.startswith(("relay_", "input_")):  # input N: relay N's auxiliary contact
                return 1.0 if s.relays.is_closed(ch) else 0.0
            return s.loads[ch - 1].power_kw
        return None

    def command(self, dev: SimDeviceState, role: str, value: float) -> None:
        s = self.site
        if dev.model == "battery" and s.battery is not None:
            if role == "setpoint_kw":
                self.site = dataclasses.replace(s, battery=s.battery.write_setpoint(value))
            elif role == "revert_timeout_s":  # device timers run on the wall clock, physics may not
                self.site = dataclasses.replace(s, battery=s.battery.write_revert_timeout(value * self.speed))
        elif dev.model == "pv" and s.pv is not None:
            if role == "limit_pct":
                self.site = dataclasses.replace(s, pv=s.pv.write_limit_pct(value))
            elif role == "revert_timeout_s":
                self.site = dataclasses.replace(s, pv=s.pv.write_revert_timeout(value * self.speed))
        elif dev.model == "relay" and role.startswith("relay_"):
            ch = int(role.split("_")[1])
            if ch <= len(s.loads):
                self.site = s.write_relay(ch, value >= 0.5)

    # --- the Modbus side ----------------------------------------------------------------

    def device_action(self, dev: SimDeviceState) -> Callable[..., Any]:
        roles_by_point = {pname: role for role, pname in dev.profile.roles.items()}
        tables = points_by_table(dev.profile)
        by_name = {p.name: p for p in dev.profile.points}

        def sf_of(p: Point, start: int, regs: list[int]) -> float | None:
            """The scale factor a point is scaled by, as the table holds it now."""
            if p.scale_point is None:
                return None
            s = by_name[p.scale_point]
            return float(decode(s, regs[s.address - start : s.end - start]))

        def enabled(role: str, start: int, regs: list[int]) -> bool:
            """A SunSpec control takes effect only while its enable points hold their values."""
            for name, want in dev.profile.enables.get(role, ()):
                e = by_name[name]
                if decode(e, regs[e.address - start : e.end - start]) != want:
                    return False
            return True

        async def action(
            fc: int,
            start: int,
            address: int,
            count: int,
            regs: list[int],
            set_values: list[int] | list[bool] | None,
        ) -> ExcCodes | None:
            fault = dev.fault
            if fault.kind == "silent":
                raise NoSuchIdException(f"simulated silent device {dev.unit_id}")
            if fault.kind == "exception":
                return ExcCodes(fault.code)
            if fault.kind == "slow":
                await asyncio.sleep(fault.delay_s)
            table = TABLE_OF_FC.get(fc, "holding")
            points = tables[table]
            if set_values is None:
                dev.reads += 1
                self.tick()
                view = meter_points(self.site.meter) if dev.model == "meter" else {}
                for p in touched(points, table in ("coil", "discrete"), address, count):
                    sf = sf_of(p, start, regs)
                    self._refresh(dev, p, roles_by_point.get(p.name), start, regs, view, sf)
                return None
            dev.writes += 1
            for p, words in written(points, address, set_values):
                if p.type == "bit":  # a view of one bit: its register's own point decides
                    continue
                try:
                    value = decode(p, words, sf_of(p, start, regs))
                except CodecError:
                    value = math.nan
                if isinstance(value, str):
                    continue
                if (
                    not p.writable
                    or (p.min is not None and value < p.min)
                    or (p.max is not None and value > p.max)
                ):
                    dev.rejected_writes += 1
                    return ExcCodes.ILLEGAL_VALUE
                role = roles_by_point.get(p.name)
                if role is not None and not math.isnan(value) and enabled(role, start, regs):
                    try:
                        self.command(dev, role, value)
                    except ValueError:  # the physics refuses it (e.g. a limit outside 0-100 %)
                        dev.rejected_writes += 1
                        return ExcCodes.ILLEGAL_VALUE
            return None

        return action

    def _refresh(
        self,
        dev: SimDeviceState,
        p: Point,
        role: str | None,
        start: int,
        regs: list[int],
        view: dict[str, float],
        sf: float | None = None,
    ) -> None:
        """Encode the point's current value into the table (its role's value, else what the
        device's view shows by the point's name); points it knows nothing of keep what was written."""
        value = self.role_value(dev, role) if role is not None else view.get(p.name)
        if value is None or (p.scale_point is not None and sf is None):
            return
        try:
            words = encode(p, value, check_access=False, sf=sf)
        except CodecError:
            lo, hi = (p.min, p.max)
            value = max(lo, value) if lo is not None else value
            value = min(hi, value) if hi is not None else value
            try:
                words = encode(p, value, check_access=False, sf=sf)
            except CodecError:
                return
        put(p, words, start, regs)

    def sim_devices(self, server: str) -> list[SimDevice]:
        """The pymodbus devices of one server, each with its four tables."""
        return [
            SimDevice(id=unit, simdata=sim_blocks(dev.profile, dev.image), action=self.device_action(dev))
            for (srv, unit), dev in sorted(self.devices.items())
            if srv == server
        ]

    def trace_for(self, server: str, rtu: bool) -> Callable[[bool, bytes], bytes]:
        """Corrupt outgoing frames of devices with a garbage/crc fault."""

        def trace(sending: bool, data: bytes) -> bytes:
            if not sending or len(data) < 4:
                return data
            unit = data[0] if rtu else (data[6] if len(data) > 7 else 0)
            dev = self.devices.get((server, unit))
            if dev is None or dev.fault.kind not in ("garbage", "crc"):
                return data
            if dev.fault.kind == "crc" or (rtu and dev.fault.kind == "garbage"):
                return data[:-1] + bytes([data[-1] ^ 0xFF])  # the CRC no longer matches
            # TCP: keep the MBAP header, answer with a PDU that is no valid response
            return data[:7] + b"\x00" + bytes(len(data) - 8)

        return trace

    def status(self) -> dict[str, Any]:
        b = self.site.battery
        battery = None if b is None else {
            "power_kw": b.power_kw, "soc_pct": b.soc_pct, "soc_min_pct": b.soc_min_pct,
            "max_discharge_kw": b.max_discharge_kw, "max_charge_kw": b.max_charge_kw,
            "reverted": b.reverted,
        }  # fmt: skip
        return {
            "site": self.site.summary(),
            "battery": battery,  # what the fault lab's import-limit check needs (lab.meters)
            "t_s": self.site.t_s,
            "devices": [
                {
                    "server": d.server,
                    "unit_id": d.unit_id,
                    "model": d.model,
                    "profile": d.profile.name,
                    "fault": d.fault.kind,
                    "reads": d.reads,
                    "writes": d.writes,
                    "rejected_writes": d.rejected_writes,
                }
                for d in self.devices.values()
            ],
        }


def profile_key(profile: str, model: str) -> str:
    """The key of a device's profile in a site's profiles: its name, or `sunspec:MODEL` for a
    device that serves a SunSpec chain (each model serves its own chain)."""
    return f"sunspec:{model}" if profile == "sunspec" else profile
