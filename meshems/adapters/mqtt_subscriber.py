"""The cloud side's MQTT v5 subscriber: TLS 1.3 only, a client certificate, a persistent
session (clean start off, a session expiry) and manual acknowledgements.

Owns one paho-mqtt 2.x client (`mqtt_fastpath.FastClient`: PUBLISH packets decoded without
paho's `Properties`): its network thread queues every message; the owner acks messages only
once they are stored (`ack`, one write for a batch), so a worker killed mid-batch gets them
again when its session resumes. paho's callbacks run under paho's locks: they only assign and
enqueue.
"""

from __future__ import annotations

import queue
import ssl
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from meshems.adapters.mqtt_failures import classify, reason_error
from meshems.adapters.mqtt_fastpath import FastClient, UserProps
from meshems.adapters.mqtt_link import check_client_certificate, client_tls_context
from meshems.core.errors import AuthError, MeshemsError


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    payload: bytes
    user_props: tuple[tuple[str, str], ...]
    mid: int
    qos: int


class MqttSubscriber:
    """`start()` connects in the background (reconnecting with backoff) and subscribes to
    `topic_filter` at QoS 1 on every connection; `get`/`drain` hand out messages; `ack`
    acknowledges them. `last_error` holds the last failure (E_AUTH_FAIL, E_UNREACHABLE)."""

    def __init__(
        self,
        host: str,
        port: int,
        ca: Path,
        cert: Path,
        key: Path,
        client_id: str,
        topic_filter: str,
        session_expiry_s: int = 3600,
        keepalive_s: int = 30,
        receive_maximum: int = 1000,
        reconnect_min_s: float = 0.2,
        reconnect_max_s: float = 10.0,
        max_packet_bytes: int | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.ca, self.cert, self.key = Path(ca), Path(cert), Path(key)
        self.client_id, self.topic_filter = client_id, topic_filter
        self.session_expiry_s, self.keepalive_s = session_expiry_s, keepalive_s
        self.receive_maximum = receive_maximum
        #: MQTT v5 Maximum Packet Size: the broker sends nothing larger (None: the protocol's limit)
        self.max_packet_bytes = max_packet_bytes
        self.reconnect = (reconnect_min_s, reconnect_max_s)
        self.messages: queue.SimpleQueue[Message] = queue.SimpleQueue()
        self.subscribed = threading.Event()
        self.connected = False
        self.connects = 0
        self.last_error: MeshemsError | None = None
        self._client: FastClient | None = None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def check_certificate(self) -> None:
        check_client_certificate(self.cert, self.key)

    def tls_context(self) -> ssl.SSLContext:
        return client_tls_context(self.ca, self.cert, self.key)

    def start(self) -> None:
        """Check the own certificate (AuthError when expired), then connect in paho's thread."""
        self.check_certificate()
        client = FastClient(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        client.sink = self._on_publish
        try:
            client.tls_set_context(self.tls_context())
        except (OSError, ValueError) as exc:
            raise AuthError(f"cannot load TLS files ({self.ca}, {self.cert}, {self.key}): {exc}") from None
        client.manual_ack_set(True)
        client.reconnect_delay_set(*self.reconnect)  # type: ignore[arg-type]
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message  # what paho's own path decodes (QoS 2)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        props.ReceiveMaximum = self.receive_maximum
        if self.max_packet_bytes is not None:
            props.MaximumPacketSize = self.max_packet_bytes
        client.connect_async(self.host, self.port, self.keepalive_s, clean_start=False, properties=props)
        self._client = client
        client.loop_start()

    def stop(self) -> None:
        """Disconnect (the session stays on the broker for `session_expiry_s`) and end paho's thread."""
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()
        self.connected = False

    def get(self, timeout_s: float) -> Message | None:
        try:
            return self.messages.get(timeout=timeout_s)
        except queue.Empty:
            return None

    def drain(self, most: int) -> list[Message]:
        out: list[Message] = []
        while len(out) < most:
            try:
                out.append(self.messages.get_nowait())
            except queue.Empty:
                break
        return out

    def ack(self, messages: Sequence[Message]) -> None:
        """Acknowledge stored messages (their QoS 1 PUBACKs in one write); the broker sends
        them again otherwise."""
        client = self._client
        if client is None:
            return
        client.puback([m.mid for m in messages if m.qos == 1])
        for m in messages:
            if m.qos == 2:
                client.ack(m.mid, m.qos)

    def publish(self, topic: str, payload: bytes, expiry_s: int | None = None) -> mqtt.MQTTMessageInfo:
        """Queue one QoS 1 message on this connection (a cloud command, or a zone's answer);
        the info's `wait_for_publish(timeout)` waits for the broker's acknowledgement."""
        client = self._client
        if client is None:
            raise MeshemsError(f"the MQTT subscriber to {self.endpoint} is not started")
        props = Properties(PacketTypes.PUBLISH)
        if expiry_s is not None:
            props.MessageExpiryInterval = int(expiry_s)
        return client.publish(topic, payload, qos=1, properties=props)

    # -- paho callbacks: paho's thread, under its locks; assign and enqueue only -------------

    def _on_connect(self, client: mqtt.Client, u: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        if reason.is_failure:
            self.last_error = reason_error(self, reason, "refused the connection:")
            return
        self.connected, self.last_error = True, None
        self.connects += 1
        client.subscribe(self.topic_filter, qos=1)

    def _on_connect_fail(self, client: mqtt.Client, u: Any) -> None:
        exc = sys.exc_info()[1]
        self.connected = False
        self.last_error = classify(self, exc or ConnectionError("connect failed"), before_connack=True)

    def _on_disconnect(self, client: mqtt.Client, u: Any, flags: Any, reason: ReasonCode, props: Any) -> None:
        self.connected = False
        if reason.is_failure:
            self.last_error = reason_error(self, reason, "disconnected us:")

    def _on_subscribe(self, client: mqtt.Client, u: Any, mid: int, reasons: Any, props: Any) -> None:
        if reasons and all(not r.is_failure for r in reasons):
            self.subscribed.set()
        else:
            self.last_error = AuthError(
                f"broker {self.endpoint} refused the subscription {self.topic_filter}"
            )

    def _on_publish(self, topic: str, payload: bytes, user: UserProps, mid: int, qos: int) -> None:
        self.messages.put(Message(topic, payload, user, mid, qos))

    def _on_message(self, client: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
        props = getattr(msg.properties, "UserProperty", None) or []
        self.messages.put(Message(msg.topic, msg.payload, tuple(props), msg.mid, msg.qos))
