"""Cluster config: the YAML schema, validated once at load into frozen typed objects.

Owns the site and Raft sections, `ClusterConfig` and the error messages (file, key, what is
wrong); the shared base and the network sections live in `core.config_sections` and are
re-exported here. Pure: the file is read by `adapters.config_file.load_config`.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, model_validator

from meshems.core.config_sections import (
    NAME,
    ApiConfig,
    CloudConfig,
    Frozen,
    NameStr,
    OverlayConfig,
    PayloadsConfig,
    Port,
    config_relative,
    items,
)
from meshems.core.errors import ConfigError, key_path
from meshems.core.ids import parse_load
from meshems.core.policy import policy_problems

__all__ = [
    "MAX_CONFIG_BYTES",
    "NAME",
    "ApiConfig",
    "BusConfig",
    "CloudConfig",
    "ClusterConfig",
    "DeviceConfig",
    "NodeConfig",
    "OverlayConfig",
    "PolicyConfig",
    "ProtectionConfig",
    "RaftConfig",
    "parse_config",
]

#: the largest config file read (a config of 1000 gateways is well under 1 MiB)
MAX_CONFIG_BYTES = 1024 * 1024


class BusConfig(Frozen):
    """A field bus of a node: Modbus TCP, RTU on a serial port, or RTU framing over TCP
    (a serial-to-Ethernet converter). A serial bus carries one request at a time."""

    id: NameStr
    type: Literal["tcp", "rtu", "rtu-over-tcp"]
    host: str | None = Field(default=None, description="tcp, rtu-over-tcp: device or gateway host")
    port: Port | None = Field(default=None, description="tcp, rtu-over-tcp: TCP port (502 on devices)")
    serial_port: str | None = Field(default=None, description="rtu: e.g. /dev/ttyUSB0")
    baud: int = Field(default=9600, ge=300, le=1_000_000)
    parity: Literal["N", "E", "O"] = "N"
    stopbits: Literal[1, 2] = 1
    concurrency: int = Field(default=1, ge=1, le=64, description="requests in flight (tcp only)")
    timeout_s: float = Field(default=0.5, gt=0, le=30)
    model_line_time: bool = Field(
        default=True, description="rtu*: pace requests by the line time at `baud` (a pty ignores baud)"
    )

    @model_validator(mode="after")
    def _fields(self) -> BusConfig:
        if self.type in ("tcp", "rtu-over-tcp"):
            if self.host is None or self.port is None:
                raise ValueError(f"bus type {self.type} needs host and port")
            if self.serial_port is not None:
                raise ValueError(f"serial_port is for type rtu, not {self.type}")
        else:
            if self.serial_port is None:
                raise ValueError("bus type rtu needs serial_port")
            if self.host is not None or self.port is not None:
                raise ValueError("host/port are for tcp and rtu-over-tcp, not rtu")
        if self.type != "tcp" and self.concurrency != 1:
            raise ValueError(f"concurrency must be 1 on a serial line ({self.type})")
        return self

    @property
    def serial(self) -> bool:
        return self.type != "tcp"


class DeviceConfig(Frozen):
    """A field device declared on a node. Power sign: + delivers to the site, - consumes."""

    id: NameStr
    kind: Literal["battery", "pv", "meter", "relay", "load"]
    min_kw: float = Field(default=0.0, description="lowest setpoint (negative = charge/consume)")
    max_kw: float = Field(default=0.0, description="highest setpoint (positive = discharge)")
    capacity_kwh: float | None = Field(default=None, gt=0)
    rated_kw: float | None = Field(default=None, gt=0, description="pv: rated power for kW -> % limits")
    bus: NameStr | None = Field(default=None, description="bus id on this node; none = not wired yet")
    unit_id: int = Field(default=1, ge=1, le=247)
    profile: str | None = Field(
        default=None,
        description='built-in profile name, a YAML file path, or "sunspec" (read from the model chain)',
    )
    poll_interval_s: float = Field(default=1.0, gt=0, le=3600)
    timeout_s: float | None = Field(
        default=None, gt=0, le=30, description="answer timeout for this device (none = the bus's timeout_s)"
    )
    inter_frame_delay_s: float = Field(
        default=0.0, ge=0, le=5, description="quiet time on the line before each request to this device"
    )
    revert_timeout_s: float = Field(
        default=0.0, ge=0, description="written to the device: it reverts an unrefreshed setpoint (0 = off)"
    )
    shared: bool = Field(
        default=False,
        description="a single-master device several gateways reach: declared on each, one owner polls it",
    )

    @model_validator(mode="after")
    def _range(self) -> DeviceConfig:
        if self.min_kw > self.max_kw:
            raise ValueError(f"min_kw ({self.min_kw}) is above max_kw ({self.max_kw})")
        if self.bus is not None and self.profile is None:
            raise ValueError("a wired device (bus set) needs a profile")
        if self.profile == "sunspec" and self.kind not in ("pv", "battery", "meter"):
            raise ValueError(f"profile sunspec is for pv, battery and meter devices, not a {self.kind}")
        return self


class ProtectionConfig(Frozen):
    """Fast local protection at the node's point of connection (no leader, no cloud)."""

    max_import_kw: float = Field(gt=0, description="above this import, shed loads at once")
    max_export_kw: float = Field(default=1e9, gt=0, description="above this export, curtail PV at once")
    hold_s: float = Field(default=60.0, ge=0, description="keep tripped loads off at least this long")


class NodeConfig(Frozen):
    id: NameStr
    address: str = Field(
        min_length=1, description="underlay address; Raft and the API bind here unless overlay_address is set"
    )
    raft_port: Port
    api_port: Port = Field(default=8443, description="the HTTPS API (TLS 1.3) on bind_host")
    initial: bool = Field(
        default=True,
        description="member of the cluster from the start; false = joins later via member add",
    )
    buses: tuple[BusConfig, ...] = items()
    devices: tuple[DeviceConfig, ...] = items()
    protection: ProtectionConfig | None = None
    overlay_address: str | None = Field(default=None, description="this node's address inside the overlay")
    overlay_port: Port | None = Field(default=None, description="WireGuard listen port (default overlay's)")
    overlay_endpoint: str | None = Field(default=None, description="host:port peers reach it at")
    sim_site: str | None = Field(
        default=None, description="demo only: the simulated site file `meshems demo` starts for this node"
    )

    @model_validator(mode="after")
    def _wiring(self) -> NodeConfig:
        bus_ids = [b.id for b in self.buses]
        for i, b in enumerate(self.buses):
            if bus_ids.index(b.id) != i:
                raise ValueError(f"buses[{i}].id: bus {b.id!r} is declared twice")
        units: dict[tuple[str, int], str] = {}
        for j, d in enumerate(self.devices):
            if d.bus is None:
                continue
            if d.bus not in bus_ids:
                known = ", ".join(bus_ids) or "none"
                raise ValueError(f"devices[{j}].bus: no bus {d.bus!r} on this node (buses: {known})")
            if (d.bus, d.unit_id) in units:
                raise ValueError(
                    f"devices[{j}].unit_id: unit {d.unit_id} on bus {d.bus!r} is already "
                    f"device {units[(d.bus, d.unit_id)]!r}"
                )
            units[(d.bus, d.unit_id)] = d.id
        return self

    def bus(self, bus_id: str) -> BusConfig:
        return next(b for b in self.buses if b.id == bus_id)

    @property
    def bind_host(self) -> str:
        """Where Raft and the API listen: the overlay address when the node has one (the
        mesh then runs over WireGuard), else `address`."""
        return self.overlay_address or self.address

    @property
    def raft_endpoint(self) -> str:
        return f"{self.bind_host}:{self.raft_port}"

    @property
    def api_endpoint(self) -> str:
        return f"{self.bind_host}:{self.api_port}"


class RaftConfig(Frozen):
    secret_file: str = Field(description="path of the cluster secret (relative to the config)")
    data_dir: str = Field(default=".meshems", description="journals live in DATA_DIR/NODE_ID/")
    election_timeout_min_s: float = Field(default=0.15, gt=0)
    election_timeout_max_s: float = Field(default=0.3, gt=0)
    heartbeat_s: float = Field(default=0.04, gt=0)
    leader_fallback_s: float | None = Field(
        default=None, gt=0, description="an isolated leader steps down after this; default = max"
    )
    connection_timeout_s: float = Field(default=0.5, gt=0)
    max_in_flight: int = Field(default=128, ge=1, le=10000)
    commit_timeout_s: float = Field(default=5.0, gt=0)
    min_free_mib: int = Field(
        default=16, ge=0, le=1 << 20, description="a node refuses to start with less free space in data_dir"
    )
    #: false: a power loss of a majority can lose acknowledged writes and votes (README)
    fsync: bool = Field(default=True, description="sync the journal before a node answers")

    @model_validator(mode="after")
    def _timing(self) -> RaftConfig:
        if self.election_timeout_max_s <= self.election_timeout_min_s:
            raise ValueError("election_timeout_max_s must be above election_timeout_min_s")
        if self.election_timeout_min_s <= 3 * self.heartbeat_s:
            raise ValueError(
                "election_timeout_min_s must be above 3 x heartbeat_s "
                f"({self.election_timeout_min_s} <= 3 x {self.heartbeat_s})"
            )
        return self

    @property
    def effective_leader_fallback_s(self) -> float:
        return self.leader_fallback_s or self.election_timeout_max_s


class SocTargetConfig(Frozen):
    at: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$", description='UTC time of day, "HH:MM"')
    pct: float = Field(ge=0, le=100)


class PolicyConfig(Frozen):
    """The zone policy committed at start (change it at run time with `meshems policy set`)."""

    import_limit_kw: float = Field(gt=0)
    export_limit_kw: float = Field(default=1e9, gt=0)
    soc_floor_pct: float = Field(default=10.0, ge=0, le=100)
    soc_ceiling_pct: float = Field(default=95.0, ge=0, le=100)
    shed_order: tuple[str, ...] = items()
    cycle_s: float = Field(default=1.0, ge=0.1, le=60)
    margin_kw: float = Field(default=2.0, ge=0)
    restore_margin_kw: float = Field(default=5.0, ge=0)
    reserve_forecast: bool = True
    mode: Literal["peak", "tariff", "self_consumption", "reactive"] = "peak"
    import_price: tuple[float, ...] = items()
    export_price: tuple[float, ...] = items()
    soc_targets: tuple[SocTargetConfig, ...] = items()
    cycle_cost_per_kwh: float = Field(default=0.005, ge=0, le=100)
    plan_horizon_h: float = Field(default=24.0, ge=1, le=36)
    days_off: tuple[str, ...] = items()
    price_series_start_s: float = Field(default=0.0, ge=0)
    import_price_series: tuple[float, ...] = items()
    export_price_series: tuple[float, ...] = items()

    @model_validator(mode="after")
    def _bounds(self) -> PolicyConfig:
        # the same rules every replica applies to `meshems policy set` (core/policy.py)
        for i, load in enumerate(self.shed_order):
            if parse_load(load) is None:
                raise ValueError(f"shed_order[{i}]: {load!r} is not RELAY_DEVICE:CHANNEL (channel 1-256)")
        problems = policy_problems({**self.model_dump(), "shed_order": list(self.shed_order)})
        if problems:
            raise ValueError("; ".join(problems))
        return self


class ClusterConfig(Frozen):
    cluster: NameStr
    zone: NameStr
    raft: RaftConfig
    policy: PolicyConfig | None = None
    api: ApiConfig = ApiConfig()
    overlay: OverlayConfig | None = None
    cloud: CloudConfig | None = None
    payloads: PayloadsConfig = PayloadsConfig()
    nodes: tuple[NodeConfig, ...] = Field(min_length=1, strict=False)
    source: str = Field(default="<memory>", exclude=True, description="the file it came from")

    @model_validator(mode="after")
    def _unique(self) -> ClusterConfig:
        seen_nodes: set[str] = set()
        seen_devices: dict[str, str] = {}
        shared_decl: dict[str, DeviceConfig] = {}
        seen_endpoints: set[str] = set()
        for i, node in enumerate(self.nodes):
            if node.id in seen_nodes:
                raise ValueError(f"nodes[{i}].id: node id {node.id!r} is declared twice")
            seen_nodes.add(node.id)
            for label, endpoint in (
                ("raft_port", node.raft_endpoint),
                ("api_port", node.api_endpoint),
            ):
                if endpoint in seen_endpoints:
                    raise ValueError(f"nodes[{i}].{label}: {endpoint} is used twice")
                seen_endpoints.add(endpoint)
            for j, dev in enumerate(node.devices):
                if dev.id in seen_devices:
                    first = shared_decl.get(dev.id)
                    same = (
                        first is not None
                        and dev.shared
                        and (first.kind, first.min_kw, first.max_kw) == (dev.kind, dev.min_kw, dev.max_kw)
                    )
                    if not same:
                        raise ValueError(
                            f"nodes[{i}].devices[{j}].id: device {dev.id!r} is already declared "
                            f"on node {seen_devices[dev.id]!r} (a device several gateways reach needs "
                            "shared: true and the same kind and limits everywhere)"
                        )
                if dev.shared:
                    shared_decl.setdefault(dev.id, dev)
                seen_devices[dev.id] = node.id
        if not any(n.initial for n in self.nodes):
            raise ValueError("nodes: at least one node must have initial: true")
        if self.policy is not None:
            self._check_shed_order(self.policy.shed_order)
        return self

    def _check_shed_order(self, loads: tuple[str, ...]) -> None:
        """The configured policy is committed at start: its loads must be relays of nodes
        that are members from the start (every replica refuses unknown loads)."""
        relays = {d.id: n for n in self.nodes for d in n.devices if d.kind == "relay"}
        for i, load in enumerate(loads):
            device = load.rpartition(":")[0]
            node = relays.get(device)
            if node is None:
                known = ", ".join(sorted(relays)) or "none"
                raise ValueError(
                    f"policy.shed_order[{i}]: {load!r} names no relay device of the config (relays: {known})"
                )
            if not node.initial:
                raise ValueError(
                    f"policy.shed_order[{i}]: {load!r} is on node {node.id!r}, which joins later "
                    "(initial: false); add it with `meshems policy set` once the node has joined"
                )

    def node(self, node_id: str) -> NodeConfig:
        for n in self.nodes:
            if n.id == node_id:
                return n
        known = ", ".join(n.id for n in self.nodes)
        raise ConfigError(f"{self.source}: no node {node_id!r} in nodes (known: {known})", key="nodes")

    def path(self, relative: str) -> Path:
        """Resolve a path from the config relative to the config file's folder."""
        return config_relative(self.source, relative)

    @property
    def secret_path(self) -> Path:
        return self.path(self.raft.secret_file)

    def data_dir(self, node_id: str) -> Path:
        return self.path(self.raft.data_dir) / node_id

    @property
    def tls_dir(self) -> Path:
        """The API's certificates: the zone CA, each node's, operators' (`api.tls_dir`)."""
        return self.path(self.api.tls_dir)


def parse_config(data: object, source: str = "<memory>") -> ClusterConfig:
    """Validate a decoded YAML document; raise ConfigError naming the file and the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the config must be a YAML mapping", file=source)
    if "source" in data:  # an internal field, not a config key
        raise ConfigError(f"{source}: source: unknown key (misspelt?)", file=source, key="source")
    try:
        return ClusterConfig.model_validate({**data, "source": source})
    except ValidationError as exc:
        lines = []
        first_key = ""
        for err in exc.errors():
            key = key_path(err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            m = re.match(r"^([\w.\[\]]+): (.*)$", msg)
            if m:  # a validator that names the key inside its section
                key = m.group(1) if key == "(top level)" else f"{key}.{m.group(1)}"
                msg = m.group(2)
                for section in ("nodes", "raft", "policy", "cloud", "overlay"):
                    key = key.replace(f"{section}.{section}", section)
            if err["type"] == "extra_forbidden":
                msg = "unknown key (misspelt?)"
            elif err["type"] == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == NAME:
                msg = (
                    f"{err['input']!r} is not a valid name: 1-63 lower case letters, digits, '.', '_' "
                    "or '-', starting with a letter or digit"
                )
            elif err["type"].endswith("_type") or err["type"] in ("finite_number", "literal_error"):
                shown = repr(err.get("input"))
                msg += f", got {shown if len(shown) <= 40 else shown[:37] + '...'}"
            lines.append(f"{source}: {key}: {msg}")
            first_key = first_key or key
        raise ConfigError("\n".join(lines), file=source, key=first_key) from None
