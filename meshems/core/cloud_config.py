"""The cloud side's config (`cloud.yaml`): the broker an ingest worker subscribes to, its
client certificate, the shared subscription group and topic prefix, and the store (a SQLite
file, or a PostgreSQL URL with an optional password file).

Validated once at load into a frozen object; errors name the file and the key. Pure: schema
and messages only (the file is read by `adapters.config_file`).
"""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, ValidationError

from meshems.core.config_sections import NAME, Frozen, NameStr, Port, TopicStr, config_relative
from meshems.core.errors import ConfigError, key_path


class CloudIngestConfig(Frozen):
    """One ingest worker: several with the same `share_group` split a broker's load."""

    broker_host: str = Field(min_length=1, description="MQTT broker host; its certificate must name it")
    broker_port: Port = Field(default=8883, description="MQTT over TLS port")
    ca_file: str = Field(min_length=1, description="CA certificate the broker's certificate must chain to")
    cert_file: str = Field(
        min_length=1, description="this worker's client certificate (meshems pki issue --client)"
    )
    key_file: str = Field(min_length=1, description="its private key (0600)")
    client_id: NameStr = Field(
        default="ingest", description="MQTT client id, unique per worker (a restart resumes its session)"
    )
    share_group: NameStr = Field(default="meshems-ingest", description="the shared subscription's group")
    topic_prefix: TopicStr = Field(default="meshems", description="the leaders' cloud.topic_prefix")
    store: str = Field(
        default="ingest.sqlite3",
        min_length=1,
        description="a SQLite file (WAL), or postgresql://USER@HOST:PORT/DB (psycopg 3, batched COPY)",
    )
    password_file: str | None = Field(
        default=None, min_length=1, description="the PostgreSQL password (one line, 0600); not in logs"
    )
    session_expiry_s: int = Field(
        default=3600, ge=0, le=4_294_967_295, description="the broker keeps an away worker's queue this long"
    )
    keepalive_s: int = Field(default=30, ge=5, le=65535, description="MQTT keepalive")
    receive_maximum: int = Field(default=1000, ge=1, le=65535, description="unacknowledged messages at once")
    batch_max: int = Field(
        default=500, ge=1, le=100_000, description="records stored per transaction at most"
    )
    batch_wait_s: float = Field(default=0.05, gt=0, le=10, description="how long a batch waits to fill")
    command_key_file: str = Field(
        default="command.key",
        min_length=1,
        description="the cloud's Ed25519 key signing downlink commands "
        "(0600; meshems cloud keygen); the zones pin its .pub in cloud.command_keys",
    )
    source: str = Field(default="<memory>", exclude=True)

    def path(self, relative: str) -> Path:
        """A path of the config, relative to the config file's folder."""
        return config_relative(self.source, relative)

    @property
    def postgres(self) -> bool:
        """The store is a PostgreSQL URL (else a SQLite file)."""
        return is_postgres_url(self.store)

    @property
    def subscription(self) -> str:
        """`$share/GROUP/PREFIX/+/#`: every zone's records and gap notices, split in the group."""
        return f"$share/{self.share_group}/{self.topic_prefix}/+/#"


def is_postgres_url(store: str) -> bool:
    return store.startswith(("postgresql://", "postgres://"))


def parse_cloud_config(data: object, source: str = "<memory>") -> CloudIngestConfig:
    """Validate a decoded cloud.yaml; ConfigError naming the file and every wrong key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the cloud config must be a YAML mapping", file=source)
    if "source" in data:
        raise ConfigError(f"{source}: source: unknown key (misspelt?)", file=source, key="source")
    if data.get("password_file") and not is_postgres_url(str(data.get("store", ""))):
        msg = f"{source}: password_file: only a postgresql:// store takes a password"
        raise ConfigError(msg, file=source, key="password_file")
    try:
        return CloudIngestConfig.model_validate({**data, "source": source})
    except ValidationError as exc:
        lines, first = [], ""
        for err in exc.errors():
            key = key_path(err["loc"])
            msg = err["msg"]
            if err["type"] == "extra_forbidden":
                msg = "unknown key (misspelt?)"
            elif err["type"] == "string_pattern_mismatch" and err.get("ctx", {}).get("pattern") == NAME:
                msg = f"{err['input']!r} is not a valid name: lower case letters, digits, '.', '_' or '-'"
            elif err["type"].endswith("_type"):
                msg += f", got {str(repr(err.get('input')))[:40]}"
            lines.append(f"{source}: {key}: {msg}")
            first = first or key
        raise ConfigError("\n".join(lines), file=source, key=first) from None
