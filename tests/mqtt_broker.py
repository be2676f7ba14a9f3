"""Test helper: a real mosquitto broker on 127.0.0.1 speaking MQTT over TLS 1.3 with client
certificates, and a paho v5 subscriber that records what arrives.

Owns the broker's process, its folder (config, copies of the TLS files, persistence, log)
and the subscriber's client; must always leave no process behind (every wait is bounded).
"""

from __future__ import annotations

import os
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from meshems.adapters import pki
from tests.conftest import free_ports

HOST = "127.0.0.1"
SERVER_CN = "broker"


def _chown_to_mosquitto(*paths: Path) -> None:
    """mosquitto started as root drops to the `mosquitto` user: let it read and write."""
    if os.geteuid() != 0:
        return
    import pwd

    try:
        pw = pwd.getpwnam("mosquitto")
    except KeyError:
        return
    for p in paths:
        os.chown(p, pw.pw_uid, pw.pw_gid)


class MosquittoBroker:
    """`with MosquittoBroker(tmp_path, pki_folder) as broker:` starts mosquitto on a free
    port with a server certificate issued by the PKI in `pki_folder` (which must have a
    CA). `stop()` / `start()` restart it on the same port (outage tests), `kill()` sends
    SIGKILL; leaving the block always ends the process and removes the folder."""

    def __init__(
        self,
        tmp_path: Path,
        pki_folder: Path,
        name: str = "mosquitto",
        extra_config: tuple[str, ...] = (),
        log_all: bool = True,
    ) -> None:
        self.extra_config, self.log_all = extra_config, log_all
        # as root mosquitto drops to its own user, which cannot enter pytest's 0700 tmp_path:
        # then the broker's folder lives under /tmp, owned by that user (removed on exit)
        self.folder = (
            Path(tempfile.mkdtemp(prefix=f"meshems-{name}-")) if os.geteuid() == 0 else tmp_path / name
        )
        self.pki_folder = pki_folder
        self.host = HOST
        self.port = free_ports(1)[0]
        self.proc: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self.ca_file = self.folder / "ca.crt"
        self.conf = self.folder / "mosquitto.conf"
        self.log_file = self.folder / "mosquitto.log"

    # -- setup -----------------------------------------------------------------------------

    def _prepare(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        data = self.folder / "data"
        data.mkdir(exist_ok=True)
        key, crt = pki.issue(self.pki_folder, SERVER_CN, "server", force=True)
        shutil.copyfile(self.pki_folder / pki.CA_CERT, self.ca_file)
        shutil.copyfile(crt, self.folder / "server.crt")
        shutil.copyfile(key, self.folder / "server.key")
        os.chmod(self.folder / "server.key", 0o600)
        self.conf.write_text(
            "\n".join(
                [
                    "per_listener_settings false",
                    f"listener {self.port} {self.host}",
                    "tls_version tlsv1.3",
                    f"cafile {self.ca_file}",
                    f"certfile {self.folder / 'server.crt'}",
                    f"keyfile {self.folder / 'server.key'}",
                    "require_certificate true",
                    "use_identity_as_username true",
                    "allow_anonymous false",
                    "persistence true",
                    f"persistence_location {data}/",
                    f"log_dest file {self.log_file}",
                    "log_type all" if self.log_all else "log_type error\nlog_type warning",
                    "connection_messages true",
                    *self.extra_config,
                    "",
                ]
            )
        )
        self.log_file.touch()
        _chown_to_mosquitto(
            self.folder, data, self.log_file, self.folder / "server.key", self.folder / "server.crt"
        )

    # -- process ---------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 5.0) -> None:
        """Start mosquitto (on the same port as before) and wait until it accepts TCP."""
        if self.running:
            return
        if not self.conf.exists():
            self._prepare()
        self._stderr = open(self.folder / "stderr.log", "ab")  # noqa: SIM115 (closed in _reaped)
        self.proc = subprocess.Popen(
            ["mosquitto", "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=self._stderr
        )
        deadline = time.monotonic() + timeout_s
        for _ in range(int(timeout_s / 0.02) + 1):
            if self.proc.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with socket.create_connection((self.host, self.port), timeout=0.2):
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                break
            time.sleep(0.02)
        self.kill()
        raise TimeoutError(
            f"mosquitto did not accept TCP on {self.port} within {timeout_s} s:\n{self.log_tail()}"
        )

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM (mosquitto saves its persistence file), SIGKILL after `timeout_s`."""
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=timeout_s)
        self._reaped()

    def kill(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)
        self._reaped()

    def _reaped(self) -> None:
        self.proc = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def log_text(self) -> str:
        parts = []
        for p in (self.log_file, self.folder / "stderr.log"):
            if p.exists():
                parts.append(p.read_text(errors="replace"))
        return "".join(parts)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- context manager -------------------------------------------------------------------

    def __enter__(self) -> MosquittoBroker:
        try:
            self.start()
        except BaseException:
            self.close(failed=True)
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(failed=exc_type is not None)

    def close(self, failed: bool = False) -> None:
        try:
            self.stop(timeout_s=3)
        finally:
            self.kill()
            if failed:  # pytest shows captured stderr of a failed test
                print(f"--- mosquitto log ({self.log_file}) ---\n{self.log_tail(60)}", file=sys.stderr)
            shutil.rmtree(self.folder, ignore_errors=True)

    # -- clients ---------------------------------------------------------------------------

    def client_files(self, name: str, kind: pki.Kind = "client") -> tuple[Path, Path]:
        """(cert, key) for `name`, issued now by the same CA (replacing an older one)."""
        key, crt = pki.issue(self.pki_folder, name, kind, force=True)
        return crt, key

    def subscribe(
        self, topic: str, name: str = "test-sub", timeout_s: float = 5.0, session_expiry_s: int = 300
    ) -> Subscriber:
        """A connected, subscribed (SUBACK seen) recorder; use it in a `with` block.

        Its session outlives a broker restart (persistence) and its own reconnects for
        `session_expiry_s`, so QoS 1 messages published meanwhile are queued for it."""
        crt, key = self.client_files(name)
        sub = Subscriber(self.host, self.port, self.ca_file, crt, key, name, session_expiry_s)
        sub.open(topic, timeout_s)
        return sub


@dataclass
class Received:
    topic: str
    payload: bytes
    user_props: list[tuple[str, str]]
    expiry_s: int | None
    qos: int


@dataclass
class Subscriber:
    """A paho MQTT v5 subscriber over TLS 1.3 that appends every message to `messages`.

    It connects with clean start off and a session expiry: mosquitto 2.0.11 writes only
    such sessions to its persistence file, so the subscription and the QoS 1 messages
    queued for it survive a broker restart. `close()` ends the session."""

    host: str
    port: int
    ca: Path
    cert: Path
    key: Path
    client_id: str
    session_expiry_s: int = 300
    messages: list[Received] = field(default_factory=list)
    _client: Any = None
    _subscribed: threading.Event = field(default_factory=threading.Event)

    def open(self, topic: str, timeout_s: float) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(cafile=str(self.ca))
        ctx.load_cert_chain(str(self.cert), str(self.key))
        client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=self.client_id, protocol=MQTTProtocolVersion.MQTTv5
        )
        client.tls_set_context(ctx)
        client.reconnect_delay_set(0.1, 0.5)  # type: ignore[arg-type]

        def on_connect(c: mqtt.Client, u: Any, flags: Any, reason: Any, props: Any) -> None:
            # the first time always; later only when the broker lost the session (and so the
            # subscription): a resumed session still has it and its queued messages
            if not reason.is_failure and (not self._subscribed.is_set() or not flags.session_present):
                c.subscribe(topic, qos=1)

        def on_subscribe(c: mqtt.Client, u: Any, mid: int, reasons: Any, props: Any) -> None:
            self._subscribed.set()

        def on_message(c: mqtt.Client, u: Any, msg: mqtt.MQTTMessage) -> None:
            props = msg.properties
            self.messages.append(
                Received(
                    msg.topic,
                    msg.payload,
                    list(getattr(props, "UserProperty", [])),
                    getattr(props, "MessageExpiryInterval", None),
                    msg.qos,
                )
            )

        client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
        self._client = client
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        client.connect(self.host, self.port, keepalive=30, clean_start=False, properties=props)
        client.loop_start()
        if not self._subscribed.wait(timeout_s):
            self.close()
            raise TimeoutError(f"subscriber {self.client_id}: no SUBACK for {topic} within {timeout_s} s")

    def wait_for(self, count: int, timeout_s: float = 5.0) -> list[Received]:
        """Wait (bounded) until `count` messages arrived; returns them (maybe fewer)."""
        deadline = time.monotonic() + timeout_s
        for _ in range(int(timeout_s / 0.01) + 1):
            if len(self.messages) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        return list(self.messages)

    def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0  # the broker forgets the session: no leftovers
            client.disconnect(properties=props)
            client.loop_stop()

    def __enter__(self) -> Subscriber:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
