"""The simulated site file: which Modbus servers to start, which devices they carry, the
site's physics parameters and the faults to inject at start.

Pure: validates a decoded YAML mapping into frozen objects; errors name the file and key.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from meshems.core.errors import ConfigError, key_path

FaultKind = Literal["none", "silent", "slow", "garbage", "crc", "exception"]


class _Frozen(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SiteParams(_Frozen):
    seed: int = 0
    load_shape: Literal["office", "residential", "flat"] = "office"
    peak_load_kw: float = Field(default=60.0, gt=0)
    pv_rated_kw: float = Field(default=40.0, ge=0)
    battery_kwh: float = Field(default=100.0, ge=0)
    battery_kw: float = Field(default=50.0, ge=0)
    soc_pct: float = Field(default=60.0, ge=0, le=100)
    loads: int = Field(default=4, ge=1, le=8)
    start_h: float = Field(default=12.0, ge=0, lt=24 * 7, description="simulated time at start (hours)")
    speed: float = Field(default=1.0, gt=0, le=10000, description="simulated seconds per wall second")
    tick_s: float = Field(default=0.1, gt=0, le=10, description="physics step in wall seconds")
    cloudiness: float = Field(default=0.0, ge=0, le=1)


class ServerSpec(_Frozen):
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    type: Literal["tcp", "rtu-over-tcp", "rtu-pty"]
    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535)
    link: str | None = Field(default=None, description="rtu-pty: path of the gateway side of the pty pair")

    @model_validator(mode="after")
    def _fields(self) -> ServerSpec:
        if self.type == "rtu-pty" and not self.link:
            raise ValueError("type rtu-pty needs link (the pty path the gateway opens)")
        if self.type != "rtu-pty" and self.port is None:
            raise ValueError(f"type {self.type} needs port")
        return self


class DeviceSpec(_Frozen):
    server: str
    unit_id: int = Field(ge=1, le=247)
    model: Literal["meter", "battery", "pv", "relay"]
    profile: str
    count: int = Field(default=1, ge=1, le=247, description="clones on consecutive unit ids")


class FaultSpec(_Frozen):
    server: str
    unit_id: int = Field(ge=1, le=247)
    kind: FaultKind
    delay_s: float = Field(default=2.0, ge=0, le=60, description="slow: answer after this long")
    code: int = Field(default=0x0B, ge=1, le=255, description="exception: the Modbus exception code")


class ControlSpec(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535, description="0 = no control API")


class SiteFile(_Frozen):
    site: SiteParams = SiteParams()
    servers: tuple[ServerSpec, ...] = Field(min_length=1)
    devices: tuple[DeviceSpec, ...] = Field(min_length=1)
    faults: tuple[FaultSpec, ...] = ()
    control: ControlSpec = ControlSpec()

    @model_validator(mode="after")
    def _refs(self) -> SiteFile:
        ids = [s.id for s in self.servers]
        for i, s in enumerate(self.servers):
            if ids.index(s.id) != i:
                raise ValueError(f"servers[{i}].id: server {s.id!r} is declared twice")
        taken: dict[tuple[str, int], int] = {}
        for i, d in enumerate(self.devices):
            if d.server not in ids:
                raise ValueError(f"devices[{i}].server: no server {d.server!r} (servers: {', '.join(ids)})")
            for u in range(d.unit_id, d.unit_id + d.count):
                if u > 247:
                    raise ValueError(f"devices[{i}].count: unit ids run past 247")
                if (d.server, u) in taken:
                    raise ValueError(
                        f"devices[{i}].unit_id: unit {u} on {d.server!r} is already "
                        f"devices[{taken[(d.server, u)]}]"
                    )
                taken[(d.server, u)] = i
        for i, f in enumerate(self.faults):
            if (f.server, f.unit_id) not in taken:
                raise ValueError(f"faults[{i}]: no device {f.unit_id} on server {f.server!r}")
        return self


def parse_site(data: object, source: str) -> SiteFile:
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a site file must be a YAML mapping", file=source)
    try:
        return SiteFile.model_validate(data)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            key = key_path(err["loc"]) if err["loc"] else ""
            msg = err["msg"].removeprefix("Value error, ")
            m = re.match(r"^([\w.\[\]]+): (.*)$", msg)
            if m:
                key, msg = (f"{key}.{m.group(1)}" if key else m.group(1)), m.group(2)
            if err["type"] == "extra_forbidden":
                msg = "unknown key (misspelt?)"
            lines.append(f"{source}: {key or '(top level)'}: {msg}")
        raise ConfigError("\n".join(lines), file=source) from None
