"""Physics of a simulated microgrid site: its devices (`sim.device_physics`) on one bus,
driven by the load and sun profiles of `sim.profiles`.

Pure: no I/O, clocks, threads or random state; `step(dt_s)` returns a new frozen site.
`grid_kw = switched-on load - pv_kw - battery_kw` (positive on import).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from meshems.sim.device_physics import PV, Battery, Load, Meter, RelayBank, check_dt
from meshems.sim.profiles import LOAD_SHAPES, load_fraction, pv_irradiance_fraction

DEMO_LOAD_NAMES = ("hvac", "process", "lighting", "ev")


def _load_seed(seed: int, index: int) -> int:
    """Each load gets its own noise, derived from the site seed."""
    return seed * 1009 + index + 1


@dataclass(frozen=True, slots=True)
class Site:
    """A whole simulated site: one relay channel per load (channel i + 1 switches loads[i]).

    `t_s` is simulated time since day 0 (a Monday) 00:00. `step` is deterministic: the same
    site and the same sequence of `dt_s` give the same result. Writes (relays, setpoints)
    take effect on the next `step`.
    """

    battery: Battery | None
    pv: PV | None
    loads: tuple[Load, ...]
    relays: RelayBank
    meter: Meter = field(default_factory=Meter)
    t_s: float = 0.0
    load_shape: str = "office"
    seed: int = 0
    pv_sunrise_h: float = 6.0
    pv_sunset_h: float = 20.0
    cloudiness: float = 0.0

    def __post_init__(self) -> None:
        if len(self.relays.states) != len(self.loads):
            raise ValueError(
                f"the relay bank has {len(self.relays.states)} channels for {len(self.loads)} loads: "
                "give one channel per load"
            )
        if self.load_shape not in LOAD_SHAPES:
            raise ValueError(f"unknown load shape {self.load_shape!r}: use one of {', '.join(LOAD_SHAPES)}")
        if not 0.0 <= self.pv_sunrise_h < self.pv_sunset_h <= 24.0:
            raise ValueError(
                f"need 0 <= pv_sunrise_h < pv_sunset_h <= 24, got {self.pv_sunrise_h}, {self.pv_sunset_h}"
            )
        if not 0.0 <= self.cloudiness <= 1.0:
            raise ValueError(f"cloudiness must be within [0, 1], got {self.cloudiness}")

    @classmethod
    def demo(
        cls,
        seed: int = 0,
        peak_load_kw: float = 60.0,
        pv_rated_kw: float = 40.0,
        battery_kwh: float = 100.0,
        battery_kw: float = 50.0,
        loads: int = 4,
        *,
        t_s: float = 0.0,
        soc_pct: float = 50.0,
        load_shape: str = "office",
        cloudiness: float = 0.0,
    ) -> Site:
        """A sensible default site, already stepped by 0 s so its meter and powers are consistent.

        Loads split `peak_load_kw` with weights proportional to n, n-1, ..., 1 (0.4/0.3/0.2/0.1
        for four), named hvac, process, lighting, ev, then load5, load6, ... No PV when
        `pv_rated_kw` <= 0; no battery when `battery_kwh` or `battery_kw` <= 0.
        """
        if loads < 0:
            raise ValueError(f"loads must be >= 0, got {loads}")
        total_weight = loads * (loads + 1) / 2
        site_loads = tuple(
            Load(
                name=DEMO_LOAD_NAMES[i] if i < len(DEMO_LOAD_NAMES) else f"load{i + 1}",
                nominal_kw=peak_load_kw * (loads - i) / total_weight,
            )
            for i in range(loads)
        )
        battery = None
        if battery_kwh > 0.0 and battery_kw > 0.0:
            battery = Battery(
                capacity_kwh=battery_kwh,
                soc_pct=soc_pct,
                max_charge_kw=battery_kw,
                max_discharge_kw=battery_kw,
            )
        site = cls(
            battery=battery,
            pv=PV(rated_kw=pv_rated_kw) if pv_rated_kw > 0.0 else None,
            loads=site_loads,
            relays=RelayBank.all_closed(loads),
            t_s=t_s,
            load_shape=load_shape,
            seed=seed,
            cloudiness=cloudiness,
        )
        return site.step(0.0)

    def step(self, dt_s: float) -> Site:
        """Advance `dt_s`: the profiles at the new time drive PV and loads, the battery follows
        its setpoint, and the meter measures and integrates the balance, all held over `dt_s`."""
        dt_s = check_dt(dt_s)
        t_s = self.t_s + dt_s
        pv = self.pv
        if pv is not None:
            irradiance = pv_irradiance_fraction(
                t_s, self.pv_sunrise_h, self.pv_sunset_h, self.cloudiness, self.seed
            )
            pv = pv.step(dt_s, irradiance)
        battery = self.battery.step(dt_s) if self.battery is not None else None
        loads = tuple(
            load.step(dt_s, load_fraction(t_s, self.load_shape, _load_seed(self.seed, i)), closed)
            for i, (load, closed) in enumerate(zip(self.loads, self.relays.states, strict=True))
        )
        site = replace(self, t_s=t_s, pv=pv, battery=battery, loads=loads)
        return replace(site, meter=self.meter.step(dt_s, site.load_kw - site.pv_kw - site.battery_kw))

    def write_relay(self, channel: int, closed: bool) -> Site:
        """Switch relay `channel` (1-based, loads[channel - 1]); the load follows on the next step."""
        return replace(self, relays=self.relays.write(channel, closed))

    @property
    def load_kw(self) -> float:
        """Total power of the loads that are switched on."""
        return sum(load.power_kw for load in self.loads)

    @property
    def pv_kw(self) -> float:
        return self.pv.power_kw if self.pv is not None else 0.0

    @property
    def battery_kw(self) -> float:
        return self.battery.power_kw if self.battery is not None else 0.0

    def summary(self) -> dict[str, float]:
        """The headline figures; `soc_pct` only when the site has a battery."""
        out = {
            "t_s": self.t_s,
            "grid_kw": self.meter.grid_kw,
            "pv_kw": self.pv_kw,
            "battery_kw": self.battery_kw,
            "load_kw": self.load_kw,
            "shed": float(self.relays.open_count),
        }
        if self.battery is not None:
            out["soc_pct"] = self.battery.soc_pct
        return out
