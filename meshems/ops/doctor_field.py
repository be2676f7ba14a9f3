"""The probes of `meshems doctor` that leave the machine for the field and the cloud: every
Modbus device (one read of its profile's first point, or the SunS marker), serial-port
permissions, and the broker (TCP, TLS 1.3 with the node's certificate, a message seen on
the zone's topics). Returns `core.diagnosis.Check`s; writes nothing to any device.
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from meshems.adapters.modbus import FieldError, ModbusLink
from meshems.adapters.mqtt_link import MqttLink
from meshems.adapters.payload_profiles import load_device_profile
from meshems.adapters.sunspec import find_base
from meshems.core import diagnosis as dx
from meshems.core.config import BusConfig, ClusterConfig, DeviceConfig, NodeConfig
from meshems.core.errors import MeshemsError
from meshems.core.telemetry import subscription

#: how long the broker check waits for a message on the zone's topics
MESSAGE_WAIT_S = 5.0
_FIELD_HINTS = {
    "E_CONNECT": "check the device's host/port (or the converter) and the wiring; nc -zv HOST PORT",
    "E_TIMEOUT": "check unit_id, wiring and baud; a slow converter needs a larger timeout_s",
    "E_CRC": "interference or wrong baud/parity: shielded twisted pair, 120 Ω termination",
}


def serial_check(bus: BusConfig) -> dx.Check:
    """An RTU bus's serial port exists and this user may read and write it."""
    name, port = f"serial {bus.id}", bus.serial_port or ""
    if not os.path.exists(port):
        return dx.fail(name, f"{port}: no such device", "plug the adapter in; check ls -l /dev/serial/by-id/")
    if not os.access(port, os.R_OK | os.W_OK):
        return dx.fail(
            name,
            f"{port}: no read/write permission for this user",
            "add the service user to the dialout group: usermod -aG dialout meshems (then restart it)",
        )
    return dx.ok(name, f"{port} readable and writable")


async def _probe(link: ModbusLink, cfg: ClusterConfig, dev: DeviceConfig, data_dir: Path) -> dx.Check:
    bus = link.bus
    timeout_s = dev.timeout_s or bus.timeout_s
    where = f"{link.bus.serial_port or f'{bus.host}:{bus.port}'} unit {dev.unit_id}"
    name = f"device {dev.id}"

    async def read(address: int, count: int, table: str = "holding") -> list[int]:
        return await link.read(dev.unit_id, address, count, table, timeout_s=timeout_s)

    start = time.perf_counter()
    try:
        async with asyncio.timeout(timeout_s * 4 + 2):
            if dev.profile == "sunspec":
                base = await find_base(read)
                detail = f"SunS marker at {base}"
            else:
                point = load_device_profile(dev.profile or "", cfg.path("."), data_dir).points[0]
                await read(point.address, point.count, point.table)
                detail = f"point {point.name}"
    except FieldError as exc:
        return dx.fail(
            name, f"{where}: {exc.code} {exc.detail}", _FIELD_HINTS.get(exc.code, _FIELD_HINTS["E_TIMEOUT"])
        )
    except TimeoutError:
        return dx.fail(name, f"{where}: E_TIMEOUT no answer", _FIELD_HINTS["E_TIMEOUT"])
    except MeshemsError as exc:
        return dx.fail(name, f"{where}: {exc.message}", "check the device's profile and unit_id")
    check = dx.response_time(name, where, time.perf_counter() - start, timeout_s)
    return dx.Check(check.name, check.status, f"{check.detail}, {detail}", check.hint)


async def _probe_bus(
    cfg: ClusterConfig, bus: BusConfig, devices: Sequence[DeviceConfig], data_dir: Path
) -> list[dx.Check]:
    link = ModbusLink(bus)
    try:
        return [await _probe(link, cfg, dev, data_dir) for dev in devices]
    finally:
        await link.close()


def check_devices(cfg: ClusterConfig, nodes: Sequence[NodeConfig], explicit: bool) -> list[dx.Check]:
    """Every wired device of `nodes` (a shared device once). Without `--node` (`explicit`
    False) a node none of whose devices answers is one warning (it is not wired here)."""
    out: list[dx.Check] = []
    seen: set[str] = set()
    for node in nodes:
        checks: list[dx.Check] = []
        for bus in node.buses:
            devices = [d for d in node.devices if d.bus == bus.id and d.id not in seen]
            seen.update(d.id for d in devices)
            if bus.serial:
                serial = serial_check(bus)
                checks.append(serial)
                if serial.status == "fail":
                    continue
            if devices:
                checks += asyncio.run(_probe_bus(cfg, bus, devices, cfg.data_dir(node.id)))
        devices_seen = [c for c in checks if c.name.startswith("device ")]
        if not explicit and devices_seen and all(c.status == "fail" for c in devices_seen):
            out.append(dx.warn(f"devices {node.id}", f"none of {len(devices_seen)} answers from here",
                               f"run doctor on {node.id}'s gateway, or pass --node {node.id}"))  # fmt: skip
            continue
        out += checks
    return out


def _subscribe_once(link: MqttLink, topic: str, wait_s: float) -> tuple[str | None, str | None]:
    """(topic of the first message seen, error): a paho v5 client with the node's TLS."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

    got: list[str] = []
    errors: list[str] = []
    done = threading.Event()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=link.client_id, protocol=MQTTProtocolVersion.MQTTv5
    )
    client.tls_set_context(link.tls_context())

    def on_connect(c: mqtt.Client, u: object, flags: object, reason: object, props: object) -> None:
        if getattr(reason, "is_failure", False):
            errors.append(f"CONNACK {reason}")
            done.set()
        else:
            c.subscribe(topic, qos=0)

    def on_message(c: mqtt.Client, u: object, msg: mqtt.MQTTMessage) -> None:
        got.append(msg.topic)
        done.set()

    client.on_connect, client.on_message = on_connect, on_message
    try:
        client.connect(link.host, link.port, keepalive=30)
    except OSError as exc:
        return None, str(exc)
    client.loop_start()
    try:
        done.wait(wait_s)
    finally:
        client.disconnect()
        client.loop_stop()
    return (got[0] if got else None), (errors[0] if errors else None)


def check_broker(cfg: ClusterConfig, node_id: str, wait_s: float = MESSAGE_WAIT_S) -> list[dx.Check]:
    """TCP to the broker, the TLS 1.3 handshake with `node_id`'s certificate, then one
    message on PREFIX/ZONE/# within `wait_s` (a leader publishes; none: a topic mismatch or
    no leader uplink)."""
    cc = cfg.cloud
    if cc is None:
        return []
    endpoint = f"{cc.broker_host}:{cc.broker_port}"
    cert, key = cc.node_cert_files(node_id)
    link = MqttLink(cc.broker_host, cc.broker_port, cfg.path(cc.ca_file), cfg.path(cert), cfg.path(key),
                    client_id=f"meshems-{cfg.cluster}-{node_id}-doctor")  # fmt: skip
    try:
        raw = socket.create_connection((cc.broker_host, cc.broker_port), timeout=3)
    except OSError as exc:
        hint = f"is the broker up, is port {cc.broker_port} open? nc -zv {cc.broker_host} {cc.broker_port}"
        return [dx.fail("broker tcp", f"{endpoint}: {exc.strerror or exc}", hint)]
    out = [dx.ok("broker tcp", endpoint)]
    try:
        with raw, link.tls_context().wrap_socket(raw, server_hostname=cc.broker_host) as tls:
            version = tls.version()
    except (OSError, ssl.SSLError, ValueError) as exc:
        hint = (
            f"check {cert} (CN {node_id}, not expired) and that the broker trusts the zone CA ({cc.ca_file})"
        )
        return [*out, dx.fail("broker tls", f"{endpoint}: {exc}", hint)]
    if version != "TLSv1.3":
        out.append(dx.fail("broker tls", f"{endpoint}: {version}", "enable TLS 1.3 on the broker"))
        return out
    out.append(dx.ok("broker tls", f"{version} as {node_id}"))
    topic = subscription(cc.topic_prefix, cfg.zone)
    seen, error = _subscribe_once(link, topic, wait_s)
    if error:
        out.append(
            dx.fail("broker topic", f"{endpoint}: {error}", "the broker refused the node: check its ACL")
        )
    elif seen is None:
        hint = (
            f"check cloud.topic_prefix ({cc.topic_prefix!r}) against the cloud's subscription, "
            "and that the leader's uplink is connected (meshems status)"
        )
        out.append(dx.fail("broker topic", f"no message on {topic} within {wait_s:g} s", hint))
    else:
        out.append(dx.ok("broker topic", f"{seen} seen"))
    return out


def default_cert_node(cfg: ClusterConfig, node_id: str | None) -> str | None:
    """The node whose certificate the broker check presents: `--node`, else the first node
    with a certificate file in cloud.cert_dir."""
    if node_id or cfg.cloud is None:
        return node_id
    for node in cfg.nodes:
        if Path(cfg.path(cfg.cloud.node_cert_files(node.id)[0])).is_file():
            return node.id
    return None
