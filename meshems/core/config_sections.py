"""The shared strict base of the cluster config schema and its network sections: the node
API's guards, the WireGuard overlay, the cloud uplink, and the keys logic payloads need.

Pure, like `core.config` (which assembles them into `ClusterConfig` and re-exports them):
schema and messages only, no I/O.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from meshems.core.ids import NAME_PATTERN
from meshems.core.payload_checks import parse_key_hex

NAME = NAME_PATTERN
NameStr = Annotated[str, Field(pattern=NAME)]
Port = Annotated[int, Field(ge=1, le=65535)]


def config_relative(source: str, relative: str) -> Path:
    """A path written in a config file, relative to that file's folder (as given when it is
    absolute or the config came from memory)."""
    p = Path(relative).expanduser()
    if p.is_absolute() or source == "<memory>":
        return p
    return Path(source).resolve().parent / p


def items() -> Any:
    """A tuple field that takes YAML's lists (a lax container; its items stay strict)."""
    return Field(default=(), strict=False)


class Frozen(BaseModel):
    """Strict: `true` is no port and "27101" no number; NaN and infinity are no limits."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


class ApiConfig(Frozen):
    """The node API: HTTPS only (TLS 1.3, certificates of the zone CA) and its guards."""

    max_connections: int = Field(default=256, ge=1, le=100_000, description="open connections at once")
    max_connections_per_peer: int = Field(
        default=64, ge=1, le=100_000, description="open connections from one peer address"
    )
    header_timeout_s: float = Field(default=5.0, gt=0, le=300, description="a whole request head within")
    body_timeout_s: float = Field(default=5.0, gt=0, le=300, description="a whole body within")
    tls_dir: str = Field(
        default=".meshems/pki",
        description="the zone CA (ca.crt), each node's NODE.crt/.key (0600) and operator certificates",
    )
    operator_networks: tuple[str, ...] = Field(
        default=(),
        strict=False,
        description="CIDRs the firewall lets reach the API besides the peers (`meshems firewall`)",
    )

    @model_validator(mode="after")
    def _networks(self) -> ApiConfig:
        for i, net in enumerate(self.operator_networks):
            try:
                ipaddress.ip_network(net)
            except ValueError as exc:
                raise ValueError(
                    f"operator_networks[{i}]: {net!r} is not a network such as 10.0.0.0/24 ({exc})"
                ) from None
        return self


class OverlayConfig(Frozen):
    """The WireGuard overlay between gateways (Raft and the API bind to overlay addresses)."""

    key_dir: str = Field(
        default=".meshems/overlay", description="node keys: KEY_DIR/NODE.key (0600) and .pub"
    )
    listen_port: Port = 51820
    prefix_len: int = Field(default=24, ge=8, le=32)
    keepalive_s: int = Field(default=25, ge=0, le=3600)
    handshake_max_age_s: float = Field(default=180.0, gt=0)
    interface_prefix: str = Field(
        default="mwg-",
        pattern=r"^[a-z][a-z0-9-]{0,7}$",
        description="interface name = PREFIX + node id (wireguard-go's UAPI sockets are shared)",
    )


TopicStr = Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$")]
MIB = 1024 * 1024


class CloudConfig(Frozen):
    """The cloud uplink: the leader publishes zone telemetry over MQTT v5 on TLS 1.3 with a
    client certificate per node, through a durable outbox that survives broker outages."""

    broker_host: str = Field(min_length=1, description="MQTT broker host; its certificate must name it")
    broker_port: Port = Field(default=8883, description="MQTT over TLS port")
    ca_file: str = Field(
        default=".meshems/pki/ca.crt", description="CA certificate the broker's certificate must chain to"
    )
    cert_dir: str = Field(
        default=".meshems/pki",
        description="node certificates: CERT_DIR/NODE.crt and CERT_DIR/NODE.key (0600)",
    )
    pki_dir: str = Field(default=".meshems/pki", description="folder of the CA `meshems pki` manages")
    topic_prefix: TopicStr = Field(
        default="meshems", description="topics are PREFIX/ZONE/... (see README); no wildcards, no leading '/'"
    )
    qos: Literal[0, 1] = Field(default=1, description="MQTT QoS of telemetry (1: at least once)")
    keepalive_s: int = Field(default=30, ge=5, le=65535, description="MQTT keepalive")
    message_expiry_s: int = Field(
        default=3600, ge=1, le=4_294_967_295, description="broker drops an undelivered message after this"
    )
    outbox_dir: str = Field(
        default=".meshems/outbox", description="durable outbox while the broker is away: OUTBOX_DIR/NODE/"
    )
    outbox_max_bytes: int = Field(default=256 * MIB, ge=MIB, description="outbox size cap on disk")
    outbox_max_age_s: float = Field(
        default=7 * 86400.0, gt=0, description="outbox entries older than this are dropped unsent"
    )
    outbox_full_policy: Literal["drop_oldest", "reject_new"] = Field(
        default="drop_oldest", description="when the outbox is full: drop the oldest entries or refuse new"
    )
    payload_format: Literal["msgpack", "json"] = Field(default="msgpack", description="telemetry encoding")
    hold_unsubscribed: bool = Field(
        default=True,
        description="a record the broker accepts with 'no matching subscribers' is not delivered: keep "
        "it and offer it again every second until a subscriber takes it (the ingest's shared "
        "subscription may be gone after a broker restart); false: count it as delivered",
    )
    reconnect_min_s: float = Field(default=1.0, gt=0, le=3600, description="first reconnect delay")
    reconnect_max_s: float = Field(
        default=120.0, gt=0, le=3600, description="reconnect delay cap (doubling from reconnect_min_s)"
    )
    live_share: float = Field(
        default=0.2, ge=0, lt=1, description="share of the publish budget kept for live data while draining"
    )
    drain_max_msgs_s: float = Field(
        default=0.0,
        ge=0,
        description="cap on the backlog drain rate, for brokers that throttle a connection (0: none)",
    )
    command_keys: tuple[Annotated[str, AfterValidator(parse_key_hex)], ...] = Field(
        default=(),
        strict=False,
        description="the cloud's Ed25519 public keys (64 hex digits, meshems cloud keygen) whose signed "
        "commands the leader applies; none: no downlink",
    )
    command_session_expiry_s: int = Field(
        default=86400,
        ge=0,
        le=4_294_967_295,
        description="the broker queues commands for an away zone this long",
    )

    @model_validator(mode="after")
    def _reconnect(self) -> CloudConfig:
        for i, key in enumerate(self.command_keys):
            if key in self.command_keys[:i]:
                raise ValueError(
                    f"command_keys[{i}]: the same key as command_keys[{self.command_keys.index(key)}]"
                )
        if self.reconnect_max_s < self.reconnect_min_s:
            raise ValueError(
                f"reconnect_max_s ({self.reconnect_max_s}) must not be below reconnect_min_s "
                f"({self.reconnect_min_s})"
            )
        return self

    def node_cert_files(self, node_id: str) -> tuple[str, str]:
        """(certificate, key) of a node, relative to the config like `cert_dir`."""
        return f"{self.cert_dir}/{node_id}.crt", f"{self.cert_dir}/{node_id}.key"


class PayloadsConfig(Frozen):
    """Logic payloads (`meshems payload`): the Ed25519 public keys whose signatures a bundle
    needs, inline as 64 hex digits (the line of a `.pub` file), and how many distinct ones."""

    trusted_keys: tuple[Annotated[str, AfterValidator(parse_key_hex)], ...] = Field(
        default=(), strict=False, description="release keys: 64 hex digits each (meshems payload keygen)"
    )
    threshold: int = Field(default=1, ge=1, le=16, description="distinct trusted signatures a bundle needs")

    @model_validator(mode="after")
    def _threshold(self) -> PayloadsConfig:
        for i, key in enumerate(self.trusted_keys):
            if key in self.trusted_keys[:i]:
                first = self.trusted_keys.index(key)
                raise ValueError(f"trusted_keys[{i}]: the same key as trusted_keys[{first}]")
        if self.trusted_keys and self.threshold > len(self.trusted_keys):
            raise ValueError(
                f"threshold: {self.threshold} signatures needed but only {len(self.trusted_keys)} "
                "trusted keys"
            )
        return self
