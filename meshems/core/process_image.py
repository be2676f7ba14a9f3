"""The process image: a frozen, per-cycle view of the zone built from replicated state.

Pure: built from the ZoneState (device inventory + each node's latest measurement summary)
with no I/O. Controllers read only this; a device whose reading is missing or not `ok`
is marked so and left alone by dispatch.
"""

from __future__ import annotations

from dataclasses import dataclass

from meshems.core.cluster import ZoneState


@dataclass(frozen=True, slots=True)
class BatteryImage:
    id: str
    node: str
    ok: bool
    power_kw: float
    soc_pct: float
    capacity_kwh: float
    max_charge_kw: float  # positive number
    max_discharge_kw: float


@dataclass(frozen=True, slots=True)
class PVImage:
    id: str
    node: str
    ok: bool
    power_kw: float
    rated_kw: float


@dataclass(frozen=True, slots=True)
class LoadImage:
    """One relay-switched load, id 'RELAY_DEVICE:CHANNEL'."""

    id: str
    device_id: str
    channel: int
    node: str
    ok: bool
    closed: bool
    power_kw: float


@dataclass(frozen=True, slots=True)
class NodeImage:
    node_id: str
    meter_ok: bool
    grid_kw: float  # + import at the node's point of connection
    battery_kw: float  # sum of its batteries (+ discharge)


@dataclass(frozen=True, slots=True)
class ProcessImage:
    nodes: tuple[NodeImage, ...]
    batteries: tuple[BatteryImage, ...]
    pvs: tuple[PVImage, ...]
    loads: tuple[LoadImage, ...]

    @property
    def grid_kw(self) -> float:
        return sum(n.grid_kw for n in self.nodes if n.meter_ok)

    @property
    def base_kw(self) -> float:
        """The zone import with every battery at 0: each node's meter, by its last reading even
        when that is not fresh, plus the power of every battery whose reading is ok (one that
        is not keeps its setpoint, which its node's meter shows). A node that resumes after a
        pause reports its old readings as stale: leaving its meter out as well would aim the
        rest of the zone at the whole limit while that node still imports."""
        return sum(n.grid_kw for n in self.nodes) + sum(b.power_kw for b in self.batteries if b.ok)

    @property
    def complete(self) -> bool:
        """Every node's meter is readable (otherwise the zone import is not known)."""
        return all(n.meter_ok for n in self.nodes)


def build_image(
    state: ZoneState, nodes: tuple[str, ...] | None = None, stale_nodes: frozenset[str] = frozenset()
) -> ProcessImage:
    """The image of the zone (or of `nodes` only) from the replicated reports. A node in
    `stale_nodes` has stopped reporting: its batteries count as reverted to 0 (they will
    be, after their revert timeout) and its meter as its last import plus that battery
    power, the conservative guess."""
    readings = {
        r.device_id: (r.state, dict(r.values))
        for rep in state.reports.values()
        if nodes is None or rep.node_id in nodes
        for r in rep.readings
    }
    for rep in state.reports.values():
        if rep.node_id not in stale_nodes:
            continue
        lost_kw = 0.0
        for r in rep.readings:
            dev = state.devices.get(r.device_id)
            values = dict(r.values)
            if dev is not None and dev.kind == "battery":
                lost_kw += values.get("power_kw", 0.0)
                readings[r.device_id] = ("stale", values)
        for r in rep.readings:
            dev = state.devices.get(r.device_id)
            if dev is not None and dev.kind == "meter":
                values = dict(r.values)
                values["power_kw"] = values.get("power_kw", 0.0) + lost_kw
                readings[r.device_id] = ("ok", values)
                lost_kw = 0.0
    devices = [
        DeviceInfo(d.id, d.kind, d.owner, d.min_kw, d.max_kw)
        for d in state.devices.values()
        if nodes is None or d.owner in nodes
    ]
    return image_from_readings(devices, readings)


@dataclass(frozen=True, slots=True)
class DeviceInfo:
    id: str
    kind: str
    owner: str
    min_kw: float
    max_kw: float


def image_from_readings(
    devices: list[DeviceInfo], readings: dict[str, tuple[str, dict[str, float]]]
) -> ProcessImage:
    """The image from device declarations and (state, values by role) per device; a node
    without quorum builds its own from its local readings this way."""
    batteries, pvs, loads = [], [], []
    meters: dict[str, list[tuple[bool, float]]] = {}
    for dev in sorted(devices, key=lambda d: d.id):
        st, v = readings.get(dev.id, ("unknown", {}))
        ok = st == "ok"
        if dev.kind == "battery":
            batteries.append(BatteryImage(
                dev.id, dev.owner, ok and "soc_pct" in v, v.get("power_kw", 0.0), v.get("soc_pct", 0.0),
                v.get("capacity_kwh", 0.0),
                min(-dev.min_kw, v.get("max_charge_kw", -dev.min_kw)),
                min(dev.max_kw, v.get("max_discharge_kw", dev.max_kw)),
            ))  # fmt: skip
        elif dev.kind == "pv":
            # a PV declared without max_kw is not dispatchable: the zone knows no range for it
            rated = min(v.get("rated_kw", dev.max_kw), dev.max_kw)
            pvs.append(PVImage(dev.id, dev.owner, ok and dev.max_kw > 0, v.get("power_kw", 0.0), rated))
        elif dev.kind == "meter":
            meters.setdefault(dev.owner, []).append((ok and "power_kw" in v, v.get("power_kw", 0.0)))
        elif dev.kind == "relay":
            ch = 1
            while f"relay_{ch}" in v:
                loads.append(LoadImage(
                    f"{dev.id}:{ch}", dev.id, ch, dev.owner, ok, v[f"relay_{ch}"] >= 0.5,
                    v.get(f"load_{ch}_kw", 0.0),
                ))  # fmt: skip
                ch += 1
    node_images = []
    for node in sorted({d.owner for d in devices}):
        ms = meters.get(node, [])
        meter_ok = bool(ms) and all(ok for ok, _ in ms)
        bat = sum(b.power_kw for b in batteries if b.node == node and b.ok)
        node_images.append(NodeImage(node, meter_ok, sum(p for _, p in ms), bat))
    return ProcessImage(tuple(node_images), tuple(batteries), tuple(pvs), tuple(loads))
