"""The cloud's end of the downlink: `send` signs a command for one zone with the cloud's
Ed25519 key, publishes it on `PREFIX/ZONE/commands` (QoS 1, the broker drops it at its expiry)
and can wait for the zone leader's answer on `PREFIX/ZONE/results`.

Owns the per-zone sequence file (beside the key) and one short MQTT connection; the record,
its signature rules and the answer's form are `core.downlink`'s.
"""

from __future__ import annotations

import fcntl
import json
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from meshems.adapters import command_signing
from meshems.adapters.atomic_write import write_atomic
from meshems.adapters.mqtt_subscriber import MqttSubscriber
from meshems.core import downlink
from meshems.core.cloud_config import CloudIngestConfig
from meshems.core.errors import ConfigError, TimeoutError_, UnreachableError


def seq_path(key: Path) -> Path:
    """The per-zone sequence file beside the key: `command.key` -> `command.seq.json`."""
    return key.with_suffix(".seq.json")


def next_seq(path: Path, zone: str, now_s: float) -> int:
    """The zone's next sequence: above the last one sent from here and at least the time in
    ms (so a lost file or a second sender machine still rises), recorded under a lock."""
    with open(path.with_suffix(".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            sent = json.loads(path.read_text()) if path.exists() else {}
        except ValueError as exc:
            raise ConfigError(f"{path}: not the JSON map of zone -> last seq ({exc}); remove it") from None
        seq = max(int(sent.get(zone, 0)) + 1, int(now_s * 1000))
        write_atomic(path, json.dumps({**sent, zone: seq}, sort_keys=True).encode(), 0o600)
    return seq


def make_record(zone: str, action: str, args: Mapping[str, Any], seq: int, now_s: float,
                expires_s: float) -> downlink.CommandRecord:  # fmt: skip
    issued = int(now_s)
    expires = issued + max(1, int(expires_s))
    return downlink.CommandRecord(uuid.uuid4().hex, zone, seq, issued, expires, action, dict(args))


def send(
    cfg: CloudIngestConfig, zone: str, action: str, args: Mapping[str, Any], expires_s: float,
    wait_s: float | None = None,
) -> tuple[downlink.CommandRecord, dict[str, Any] | None]:  # fmt: skip
    """Sign and publish one command; with `wait_s`, also the zone's answer (None: no answer
    in time). Raises ConfigError (key), UnreachableError / TimeoutError_ (broker)."""
    key_file = cfg.path(cfg.command_key_file)
    key = command_signing.load_private_key(key_file)
    now = time.time()
    record = make_record(zone, action, args, next_seq(seq_path(key_file), zone, now), now, expires_s)
    data = command_signing.sign(record, key)
    sub = MqttSubscriber(
        cfg.broker_host, cfg.broker_port, cfg.path(cfg.ca_file), cfg.path(cfg.cert_file),
        cfg.path(cfg.key_file),
        client_id=f"{cfg.client_id}-send-{record.command_id[:8]}",
        topic_filter=downlink.results_topic(cfg.topic_prefix, zone), session_expiry_s=0,
    )  # fmt: skip
    sub.start()
    try:
        if not sub.subscribed.wait(10.0):
            raise sub.last_error or UnreachableError(f"broker {sub.endpoint}: no connection within 10 s")
        info = sub.publish(downlink.commands_topic(cfg.topic_prefix, zone), data, expiry_s=int(expires_s))
        info.wait_for_publish(10.0)
        if not info.is_published():
            raise TimeoutError_(f"broker {sub.endpoint} did not acknowledge the command within 10 s")
        if wait_s is None:
            return record, None
        deadline = time.monotonic() + wait_s
        while (left := deadline - time.monotonic()) > 0:
            msg = sub.get(min(left, 0.5))
            if msg is None:
                continue
            sub.ack([msg])
            try:
                doc = json.loads(msg.payload)
            except ValueError:
                continue
            if isinstance(doc, dict) and doc.get("command_id") == record.command_id:
                return record, doc
        return record, None
    finally:
        sub.stop()
