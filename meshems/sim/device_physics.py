"""Physics of one simulated device each: battery inverter, PV inverter, load, relay bank, meter.

Pure: no I/O, clocks, threads or random state; `step(..., dt_s)` returns a new frozen object
and never mutates. Sources are positive into the site bus (battery discharge, PV), loads
positive consumption, the meter's `grid_kw` positive on import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

HOUR_S = 3600.0
NOMINAL_VOLTAGE_V = 230.0
VOLTAGE_DROOP_V_PER_KW = 0.01
VOLTAGE_MIN_V = 207.0  # 230 V - 10 %
VOLTAGE_MAX_V = 253.0  # 230 V + 10 %
NOMINAL_FREQUENCY_HZ = 50.0


def check_dt(dt_s: float) -> float:
    """`dt_s` as a float; ValueError unless a finite number >= 0."""
    if not (math.isfinite(dt_s) and dt_s >= 0.0):
        raise ValueError(f"dt_s must be a finite number >= 0, got {dt_s}")
    return float(dt_s)


def _check_finite(name: str, value: float) -> float:
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return float(value)


def _check_timeout(revert_timeout_s: float) -> float:
    if not (math.isfinite(revert_timeout_s) and revert_timeout_s >= 0.0):
        raise ValueError(f"revert_timeout_s must be >= 0 (0 = never revert), got {revert_timeout_s}")
    return float(revert_timeout_s)


@dataclass(frozen=True, slots=True)
class Battery:
    """A battery inverter with its store. `setpoint_kw` is the active command (+ discharge);
    `power_kw` the power actually delivered over the last step.

    Watchdog: a setpoint not rewritten for more than `revert_timeout_s` (0 = never) falls back
    to `default_setpoint_kw` and `reverted` reads True until the next write (as SunSpec's
    WMaxLimPct_RvrtTms). The efficiency is round trip, split as sqrt per direction.
    """

    capacity_kwh: float
    soc_pct: float
    max_charge_kw: float
    max_discharge_kw: float
    efficiency: float = 0.95
    soc_min_pct: float = 5.0
    soc_max_pct: float = 100.0
    setpoint_kw: float = 0.0
    power_kw: float = 0.0
    revert_timeout_s: float = 0.0
    setpoint_age_s: float = 0.0
    default_setpoint_kw: float = 0.0
    reverted: bool = False

    def __post_init__(self) -> None:
        if not self.capacity_kwh > 0.0:
            raise ValueError(f"capacity_kwh must be > 0, got {self.capacity_kwh}")
        if not 0.0 <= self.soc_pct <= 100.0:
            raise ValueError(f"soc_pct must be within [0, 100], got {self.soc_pct}")
        if not (self.max_charge_kw >= 0.0 and self.max_discharge_kw >= 0.0):
            raise ValueError(
                f"max_charge_kw and max_discharge_kw must be >= 0, got {self.max_charge_kw}, "
                f"{self.max_discharge_kw}"
            )
        if not 0.0 < self.efficiency <= 1.0:
            raise ValueError(f"efficiency must be within (0, 1], got {self.efficiency}")
        if not 0.0 <= self.soc_min_pct < self.soc_max_pct <= 100.0:
            raise ValueError(
                f"need 0 <= soc_min_pct < soc_max_pct <= 100, got {self.soc_min_pct}, {self.soc_max_pct}"
            )
        _check_finite("setpoint_kw", self.setpoint_kw)
        _check_finite("default_setpoint_kw", self.default_setpoint_kw)
        _check_timeout(self.revert_timeout_s)

    @property
    def energy_kwh(self) -> float:
        """Energy stored now (not what can be delivered: losses and soc_min_pct not deducted)."""
        return self.capacity_kwh * self.soc_pct / 100.0

    @property
    def one_way_efficiency(self) -> float:
        """Efficiency of one direction: sqrt of the round trip."""
        return math.sqrt(self.efficiency)

    def write_setpoint(self, kw: float) -> Battery:
        """Command `kw` (+ discharge, - charge); refreshes the watchdog. Limits apply in `step`."""
        return replace(self, setpoint_kw=_check_finite("setpoint_kw", kw), setpoint_age_s=0.0, reverted=False)

    def write_revert_timeout(self, s: float) -> Battery:
        """Set the watchdog timeout (0 = never revert); does not refresh the setpoint's age."""
        return replace(self, revert_timeout_s=_check_timeout(s))

    def step(self, dt_s: float) -> Battery:
        """Advance `dt_s`: age the setpoint (reverting it if stale), then deliver the setpoint
        clamped to the power ratings and to the energy the SoC window allows in `dt_s`, and
        integrate the SoC with that power held over `dt_s`."""
        dt_s = check_dt(dt_s)
        age_s = self.setpoint_age_s + dt_s
        setpoint_kw, reverted = self.setpoint_kw, self.reverted
        if self.revert_timeout_s > 0.0 and age_s > self.revert_timeout_s and not reverted:
            setpoint_kw, reverted = self.default_setpoint_kw, True
        power_kw = min(max(setpoint_kw, -self.max_charge_kw), self.max_discharge_kw)
        dt_h = dt_s / HOUR_S
        eff = self.one_way_efficiency
        soc_pct = self.soc_pct
        if power_kw > 0.0:
            available_kwh = max(0.0, self.capacity_kwh * (self.soc_pct - self.soc_min_pct) / 100.0)
            if available_kwh <= 0.0:
                power_kw = 0.0
            elif dt_h > 0.0 and power_kw * dt_h / eff >= available_kwh:
                power_kw, soc_pct = available_kwh * eff / dt_h, self.soc_min_pct
            else:
                soc_pct = max(
                    self.soc_pct - 100.0 * power_kw * dt_h / eff / self.capacity_kwh, self.soc_min_pct
                )
        elif power_kw < 0.0:
            room_kwh = max(0.0, self.capacity_kwh * (self.soc_max_pct - self.soc_pct) / 100.0)
            if room_kwh <= 0.0:
                power_kw = 0.0
            elif dt_h > 0.0 and -power_kw * dt_h * eff >= room_kwh:
                power_kw, soc_pct = -room_kwh / (eff * dt_h), self.soc_max_pct
            else:
                soc_pct = min(
                    self.soc_pct - 100.0 * power_kw * dt_h * eff / self.capacity_kwh, self.soc_max_pct
                )
        else:
            power_kw = 0.0  # normalise -0.0
        return replace(
            self,
            setpoint_kw=setpoint_kw,
            reverted=reverted,
            setpoint_age_s=age_s,
            power_kw=power_kw,
            soc_pct=min(max(soc_pct, 0.0), 100.0),
        )


@dataclass(frozen=True, slots=True)
class PV:
    """A PV inverter: `power_kw = rated_kw * irradiance`, capped at `rated_kw * limit_pct / 100`.

    Watchdog: a limit not rewritten for more than `revert_timeout_s` (0 = never) falls back to
    `default_limit_pct` (100 = no curtailment) and `reverted` reads True until the next write.
    """

    rated_kw: float
    limit_pct: float = 100.0
    revert_timeout_s: float = 0.0
    limit_age_s: float = 0.0
    default_limit_pct: float = 100.0
    irradiance: float = 0.0
    power_kw: float = 0.0
    reverted: bool = False

    def __post_init__(self) -> None:
        if not self.rated_kw >= 0.0:
            raise ValueError(f"rated_kw must be >= 0, got {self.rated_kw}")
        for name in ("limit_pct", "default_limit_pct"):
            value = getattr(self, name)
            if not 0.0 <= value <= 100.0:
                raise ValueError(f"{name} must be within [0, 100], got {value}")
        if not 0.0 <= self.irradiance <= 1.0:
            raise ValueError(f"irradiance must be within [0, 1], got {self.irradiance}")
        _check_timeout(self.revert_timeout_s)

    def write_limit_pct(self, pct: float) -> PV:
        """Curtail to `pct` % of rated power (the register range is [0, 100]); refreshes the watchdog."""
        if not 0.0 <= pct <= 100.0:
            raise ValueError(f"limit_pct must be within [0, 100], got {pct}")
        return replace(self, limit_pct=float(pct), limit_age_s=0.0, reverted=False)

    def write_revert_timeout(self, s: float) -> PV:
        """Set the watchdog timeout (0 = never revert); does not refresh the limit's age."""
        return replace(self, revert_timeout_s=_check_timeout(s))

    def step(self, dt_s: float, irradiance: float) -> PV:
        """Advance `dt_s` under `irradiance` (0..1, clipped): age and maybe revert the limit,
        then produce what the sun and the limit allow."""
        dt_s = check_dt(dt_s)
        irradiance = min(max(float(irradiance), 0.0), 1.0)
        age_s = self.limit_age_s + dt_s
        limit_pct, reverted = self.limit_pct, self.reverted
        if self.revert_timeout_s > 0.0 and age_s > self.revert_timeout_s and not reverted:
            limit_pct, reverted = self.default_limit_pct, True
        power_kw = min(self.rated_kw * irradiance, self.rated_kw * limit_pct / 100.0)
        return replace(
            self,
            limit_pct=limit_pct,
            reverted=reverted,
            limit_age_s=age_s,
            irradiance=irradiance,
            power_kw=power_kw,
        )


@dataclass(frozen=True, slots=True)
class Load:
    """A load behind a relay: `power_kw = nominal_kw * fraction` while `closed`, else 0."""

    name: str
    nominal_kw: float
    fraction: float = 0.0
    closed: bool = True
    power_kw: float = 0.0

    def __post_init__(self) -> None:
        if not self.nominal_kw >= 0.0:
            raise ValueError(f"load {self.name!r}: nominal_kw must be >= 0, got {self.nominal_kw}")

    def step(self, dt_s: float, fraction: float, closed: bool) -> Load:
        """Advance `dt_s` with demand `fraction` (0..1, clipped) and the relay state `closed`."""
        check_dt(dt_s)
        fraction = min(max(float(fraction), 0.0), 1.0)
        power_kw = self.nominal_kw * fraction if closed else 0.0
        return replace(self, fraction=fraction, closed=bool(closed), power_kw=power_kw)


@dataclass(frozen=True, slots=True)
class RelayBank:
    """Relay channels, 1-based; True = closed = the load is energised."""

    states: tuple[bool, ...]

    @classmethod
    def all_closed(cls, channels: int) -> RelayBank:
        return cls(states=(True,) * channels)

    def _index(self, channel: int) -> int:
        if not 1 <= channel <= len(self.states):
            raise IndexError(f"relay channel {channel} does not exist: channels are 1..{len(self.states)}")
        return channel - 1

    def is_closed(self, channel: int) -> bool:
        return self.states[self._index(channel)]

    def write(self, channel: int, closed: bool) -> RelayBank:
        """Close (True) or open (False) `channel`, 1-based; IndexError for a channel not in the bank."""
        i = self._index(channel)
        return RelayBank(states=(*self.states[:i], bool(closed), *self.states[i + 1 :]))

    @property
    def open_count(self) -> int:
        """How many channels are open (loads shed)."""
        return sum(1 for s in self.states if not s)


@dataclass(frozen=True, slots=True)
class Meter:
    """The site meter at the grid connection: `grid_kw` positive on import, negative on export.

    Voltage droops by 0.01 V per kW of import (rises on export) around 230 V, within 207-253 V.
    """

    grid_kw: float = 0.0
    voltage_v: float = NOMINAL_VOLTAGE_V
    frequency_hz: float = NOMINAL_FREQUENCY_HZ
    energy_import_kwh: float = 0.0
    energy_export_kwh: float = 0.0

    def step(self, dt_s: float, grid_kw: float) -> Meter:
        """Measure `grid_kw` and integrate it, held over `dt_s`, into the import or export register."""
        dt_h = check_dt(dt_s) / HOUR_S
        grid_kw = _check_finite("grid_kw", grid_kw)
        voltage_v = min(
            max(NOMINAL_VOLTAGE_V - VOLTAGE_DROOP_V_PER_KW * grid_kw, VOLTAGE_MIN_V), VOLTAGE_MAX_V
        )
        return Meter(
            grid_kw=grid_kw,
            voltage_v=voltage_v,
            frequency_hz=NOMINAL_FREQUENCY_HZ,
            energy_import_kwh=self.energy_import_kwh + max(grid_kw, 0.0) * dt_h,
            energy_export_kwh=self.energy_export_kwh + max(-grid_kw, 0.0) * dt_h,
        )
