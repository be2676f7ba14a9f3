"""The MQTT v5 uplink to the cloud broker: TLS 1.3 only, a client certificate per node.

Owns one paho-mqtt 2.x client (network thread, reconnects with backoff), the TLS context and
the own-certificate check (what failures mean: `mqtt_failures`). Keeps no message beyond paho's
RAM queue; paho callbacks run under paho's locks, so they only assign fields and enqueue.
"""

from __future__ import annotations

import queue
import socket
import ssl
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from meshems.adapters.mqtt_failures import AUTH_REASON_CODES, CLOSED_BEFORE_CONNACK, classify, reason_error
from meshems.adapters.pki import require_valid
from meshems.core.errors import AuthError, ConfigError, MeshemsError, TimeoutError_, UnreachableError

#: how long connect_once's probe listens after the TLS handshake for the broker's verdict
TLS_PROBE_WAIT_S = 2.0
#: MQTT v5 PUBACK reason 0x10: accepted, but no subscription matched (nobody will get it)
NO_MATCHING_SUBSCRIBERS = 0x10


class _State:
    """What paho's callbacks record for one client; plain fields assigned from paho's thread."""

    def __init__(self) -> None:
        self.connected = False
        self.connects = 0
        self.error: MeshemsError | None = None
        self.last_log_error = ""
        self.refused = False  # this attempt got a failure CONNACK (its reason is the error)
        self.finished = False  # connect_once: CONNACK seen or the connection failed


@dataclass(frozen=True)
class Reject:
    """A QoS 1 publish the broker acknowledged with a failure reason code (e.g. not authorized)."""

    mid: int
    reason: str
    code: int


def check_client_certificate(cert: Path, key: Path, now: datetime | None = None) -> None:
    """Raise AuthError naming the file and date when a client certificate is expired or not
    yet valid; ConfigError when the certificate or key file is missing."""
    require_valid(cert, now or datetime.now(UTC))
    if not key.is_file():
        raise ConfigError(f"{key}: no private key for {cert}", path=str(key))


def client_tls_context(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.3 only, the broker verified against `ca` and its name against the host, and the
    client certificate and key presented (the publisher's and the ingest's)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.check_hostname = True
    ctx.load_verify_locations(cafile=str(ca))
    ctx.load_cert_chain(certfile=str(cert), keyfile=str(key))
    return ctx


class MqttLink:
    """One node's MQTT v5 connection to the broker.

    `start()` connects in the background and keeps reconnecting (delay doubling from
    `reconnect_min_s` to `reconnect_max_s`); `publish()` returns paho's message id and the id
    comes back through `drain_acks()` once the broker acknowledged it (QoS 1) or it was
    written to the socket (QoS 0); `drain_ack_codes()` also tells the PUBACK's reason code
    (NO_MATCHING_SUBSCRIBERS: accepted, but nobody subscribed). While disconnected, QoS 1
    messages wait in paho's RAM queue (lost with the process) and QoS 0 messages are dropped.
    `last_error` holds the last failure with a stable code: E_AUTH_FAIL (own certificate
    expired or refused, TLS handshake failed, broker said not authorized), E_UNREACHABLE (no
    TCP connection or the broker went away), E_TIMEOUT."""

    def __init__(
        self,
        host: str,
        port: int,
        ca: Path,
        cert: Path,
        key: Path,
        client_id: str,
        keepalive_s: int = 30,
        reconnect_min_s: float = 1.0,
        reconnect_max_s: float = 120.0,
        max_inflight: int = 250,
    ) -> None:
        self.host, self.port = host, port
        self.max_inflight = max_inflight
        self.ca, self.cert, self.key = Path(ca), Path(cert), Path(key)
        self.client_id = client_id
        self.keepalive_s = keepalive_s
        self.reconnect_min_s, self.reconnect_max_s = reconnect_min_s, reconnect_max_s
        self._state = _State()
        self._acks: queue.SimpleQueue[tuple[int, int]] = queue.SimpleQueue()  # (mid, reason code)
        self._rejects: queue.SimpleQueue[Reject] = queue.SimpleQueue()
        self._client: mqtt.Client | None = None

    # -- state -----------------------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """True between a successful CONNACK and the next disconnect."""
        return self._state.connected

    @property
    def connects(self) -> int:
        """Successful connections since start (1 + reconnects)."""
        return self._state.connects

    @property
    def last_error(self) -> MeshemsError | None:
        """The last failure (cleared by a successful connection); `.code` is stable."""
        return self._state.error

    @property
    def tls_version(self) -> str | None:
        """The negotiated TLS version of the current connection ("TLSv1.3"), None when down."""
        client = self._client
        sock = client.socket() if client is not None else None
        return sock.version() if isinstance(sock, ssl.SSLSocket) else None

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    def check_certificate(self, now: datetime | None = None) -> None:
        """Raise AuthError naming the file and date when the own certificate is expired or
        not yet valid; ConfigError when the certificate or key file is missing."""
        check_client_certificate(self.cert, self.key, now)

    # -- connection ------------------------------------------------------------------------

    def tls_context(self) -> ssl.SSLContext:
        return client_tls_context(self.ca, self.cert, self.key)

    def _new_client(self, state: _State) -> mqtt.Client:
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5,
            userdata=state,
        )
        try:
            client.tls_set_context(self.tls_context())
        except (OSError, ValueError) as exc:
            raise AuthError(f"cannot load TLS files ({self.ca}, {self.cert}, {self.key}): {exc}") from None
        # paho's default of 20 in flight caps a drain at 20 per round trip; 250 keeps the queue
        # ahead of a live message short (the broker serves one connection in order)
        client.max_inflight_messages_set(self.max_inflight)
        client.max_queued_messages_set(0)
        client.on_connect = self._on_connect
        client.on_connect_fail = self._on_connect_fail
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        client.on_log = self._on_log
        client.on_pre_connect = self._on_pre_connect
        return client

    def start(self) -> None:
        """Check the own certificate (AuthError when expired, also kept in `last_error`),
        then connect in paho's background thread and keep reconnecting."""
        if self._client is not None:
            return
        try:
            self.check_certificate()
        except MeshemsError as exc:
            self._state.error = exc
            raise
        client = self._new_client(self._state)
        client.reconnect_delay_set(self.reconnect_min_s, self.reconnect_max_s)  # type: ignore[arg-type]
        client.connect_async(self.host, self.port, keepalive=self.keepalive_s)
        self._client = client
        client.loop_start()

    def stop(self) -> None:
        """Disconnect and end paho's thread; QoS 1 messages not yet acknowledged are lost."""
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        client.loop_stop()
        self._state.connected = False

    def connect_once(self, timeout_s: float = 5.0) -> None:
        """Connect, wait for the CONNACK, disconnect: a synchronous test of certificate,
        broker and network. Raises AuthError, UnreachableError or TimeoutError_.

        With TLS 1.3 the client's handshake completes before the broker has checked the
        client certificate; a refusal arrives as an alert on the first read, or is lost to
        a reset racing the MQTT CONNECT. When the connection ended that way, a bare TLS
        probe that sends nothing and only reads recovers the broker's alert (expired,
        unknown CA, no certificate) as the reported cause."""
        self.check_certificate()
        deadline = time.monotonic() + timeout_s
        error = self._mqtt_once(deadline, timeout_s)
        if error is None:
            return
        if error.context.get("cause") == CLOSED_BEFORE_CONNACK:
            error = self._probe_tls(deadline) or error
        raise error

    def _mqtt_once(self, deadline: float, timeout_s: float) -> MeshemsError | None:
        state = _State()
        client = self._new_client(state)
        try:
            try:
                client.connect(self.host, self.port, keepalive=self.keepalive_s)
            except OSError as exc:
                return classify(self, exc, before_connack=True)
            while not state.finished and time.monotonic() < deadline:
                rc = client.loop(timeout=min(0.1, max(0.01, deadline - time.monotonic())))
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS and not state.finished:
                    detail = state.last_log_error or mqtt.error_string(rc)
                    state.error = state.error or classify(self, detail, before_connack=True)
                    break
            if state.connected:
                return None
            return state.error or TimeoutError_(f"broker {self.endpoint}: no CONNACK within {timeout_s:g} s")
        finally:
            if state.connected:
                client.disconnect()
                for _ in range(5):
                    if client.loop(timeout=0.05) != MQTTErrorCode.MQTT_ERR_SUCCESS:
                        break
            sock = client.socket()
            if sock is not None:
                sock.close()

    def _probe_tls(self, deadline: float) -> MeshemsError | None:
        """Handshake and read without sending: the broker's alert if it refuses us, None if it
        stays silent (as it does for an accepted client until the CONNECT)."""
        remaining = max(0.05, deadline - time.monotonic())
        try:
            with (
                socket.create_connection((self.host, self.port), timeout=remaining) as raw,
                self.tls_context().wrap_socket(raw, server_hostname=self.host) as tls,
            ):
                tls.settimeout(min(TLS_PROBE_WAIT_S, max(0.05, deadline - time.monotonic())))
                try:
                    tls.recv(1)
                except TimeoutError:
                    return None
                return None  # data or a clean end: nothing more precise to say
        except OSError as exc:
            return classify(self, exc, before_connack=True)

    # -- publishing ------------------------------------------------------------------------

    def publish(
        self,
        topic: str,
        payload: bytes,
        user_props: Sequence[tuple[str, str]] = (),
        expiry_s: int | None = None,
        qos: int = 1,
    ) -> int:
        """Queue one message; returns its message id (it comes back from `drain_acks`).

        Works while disconnected: QoS 1 waits in RAM and is sent after the reconnect."""
        client = self._client
        if client is None:
            raise MeshemsError(f"the MQTT link to {self.endpoint} is not started")
        props = Properties(PacketTypes.PUBLISH)
        if expiry_s is not None:
            props.MessageExpiryInterval = int(expiry_s)
        if user_props:
            props.UserProperty = [(str(k), str(v)) for k, v in user_props]
        info = client.publish(topic, payload, qos=qos, properties=props)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            raise MeshemsError(f"publish to {topic} refused by paho: {mqtt.error_string(info.rc)}")
        return info.mid

    def drain_acks(self) -> list[int]:
        """Message ids acknowledged since the last call (never blocks)."""
        return [mid for mid, _ in self.drain_ack_codes()]

    def drain_ack_codes(self) -> list[tuple[int, int]]:
        """(message id, PUBACK reason code) acknowledged since the last call: 0 delivered,
        NO_MATCHING_SUBSCRIBERS accepted by a broker that had no subscriber for it."""
        out: list[tuple[int, int]] = []
        while True:
            try:
                out.append(self._acks.get_nowait())
            except queue.Empty:
                return out

    def drain_rejects(self) -> list[Reject]:
        """Messages the broker acknowledged with a failure reason code since the last call."""
        out: list[Reject] = []
        while True:
            try:
                out.append(self._rejects.get_nowait())
            except queue.Empty:
                return out

    # -- paho callbacks: run in paho's thread under its locks; assign and enqueue only ------

    def _on_pre_connect(self, client: mqtt.Client, state: _State) -> None:
        state.last_log_error = ""
        state.refused = False

    def _on_connect(
        self, client: mqtt.Client, state: _State, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        state.finished = True
        if reason.is_failure:
            state.connected = False
            state.refused = True
            state.error = reason_error(self, reason, "refused the connection:")
            return
        state.connected = True
        state.connects += 1
        state.error = None

    def _on_connect_fail(self, client: mqtt.Client, state: _State) -> None:
        # paho calls this inside its `except OSError:` block: the exception is still current
        exc = sys.exc_info()[1]
        state.connected = False
        state.finished = True
        failure = exc if exc is not None else ConnectionError(state.last_log_error or "connect failed")
        state.error = classify(self, failure, before_connack=True)

    def _on_disconnect(
        self, client: mqtt.Client, state: _State, flags: Any, reason: ReasonCode, props: Any
    ) -> None:
        was_connected = state.connected
        state.connected = False
        state.finished = True
        if state.refused or (reason.value == 0 and not state.last_log_error):
            return  # the CONNACK's reason is already the error, or we disconnected on purpose
        if reason.is_failure and reason.value in AUTH_REASON_CODES:
            state.error = reason_error(self, reason, "disconnected us:")
        elif not was_connected:  # the socket ended between the TLS handshake and the CONNACK
            state.error = classify(self, state.last_log_error or f"closed ({reason})", before_connack=True)
        else:
            detail = state.last_log_error or str(reason)
            state.error = UnreachableError(
                f"broker {self.endpoint}: connection lost ({detail})", endpoint=self.endpoint
            )

    def _on_publish(
        self, client: mqtt.Client, state: _State, mid: int, reason: ReasonCode, props: Any
    ) -> None:
        if reason.is_failure:
            self._rejects.put(Reject(mid, str(reason), reason.value))
        else:
            self._acks.put((mid, reason.value))

    def _on_log(self, client: mqtt.Client, state: _State, level: int, text: str) -> None:
        if level in (mqtt.MQTT_LOG_ERR, mqtt.MQTT_LOG_WARNING):
            state.last_log_error = text
