"""The MQTT v5 uplink against a real mosquitto 2.0 on 127.0.0.1 (TLS 1.3, client certificates).

A node with a valid certificate connects and its user properties arrive; a client without
a certificate, a TLS 1.2-only client and an expired certificate are refused with
E_AUTH_FAIL; a broker outage shows as `connected` going False and True again.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from meshems.adapters import pki
from meshems.adapters.mqtt_link import NO_MATCHING_SUBSCRIBERS, MqttLink
from meshems.core.errors import AuthError
from tests.mqtt_broker import MosquittoBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]


def wait_until(check: Callable[[], bool], timeout_s: float, step_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    for _ in range(int(timeout_s / step_s) + 1):
        if check():
            return True
        if time.monotonic() > deadline:
            break
        time.sleep(step_s)
    return check()


@pytest.fixture(scope="module")
def pki_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki") / "pki"
    pki.init_ca(folder, "test-ca")
    return folder


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory, pki_folder: Path) -> Iterator[MosquittoBroker]:
    with MosquittoBroker(tmp_path_factory.mktemp("broker"), pki_folder) as b:
        yield b


@pytest.fixture
def links() -> Iterator[list[MqttLink]]:
    """Links a test starts; always stopped."""
    started: list[MqttLink] = []
    try:
        yield started
    finally:
        for link in started:
            link.stop()


def make_link(broker: MosquittoBroker, name: str, cls: type[MqttLink] = MqttLink, **kw: object) -> MqttLink:
    crt, key = broker.client_files(name, "node")
    return cls(broker.host, broker.port, broker.ca_file, crt, key, name, **kw)  # type: ignore[arg-type]


class NoCertificate(MqttLink):
    """Presents no client certificate (everything else as MqttLink)."""

    def tls_context(self) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_verify_locations(cafile=str(self.ca))
        return ctx


class Tls12Only(MqttLink):
    def tls_context(self) -> ssl.SSLContext:
        ctx = super().tls_context()
        ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        return ctx


class NoExpiryCheck(MqttLink):
    """Skips the own-certificate check, to see what the broker itself says."""

    def check_certificate(self, now: datetime | None = None) -> None:
        return None


def raw_tls(broker: MosquittoBroker, ctx: ssl.SSLContext) -> bytes:
    """Handshake, then read: the broker's verdict on the client certificate (TLS 1.3 sends it
    after the client's handshake is done) arrives as an alert or an end of connection."""
    with (
        socket.create_connection((broker.host, broker.port), timeout=3) as raw,
        ctx.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        tls.settimeout(2)
        return tls.recv(1)


def test_node_connects_over_tls13_and_user_properties_arrive(
    broker: MosquittoBroker, links: list[MqttLink]
) -> None:
    link = make_link(broker, "n1")
    link.connect_once(timeout_s=5)
    with broker.subscribe("meshems/#") as sub:
        links.append(link)
        link.start()
        assert wait_until(lambda: link.connected, 5), link.last_error
        assert link.tls_version == "TLSv1.3"
        props = [("schema", "1"), ("node", "n1"), ("term", "7")]
        mid = link.publish("meshems/test/zone-a/telemetry", b"\x81\xa2kw\xcb@", props, expiry_s=600)
        acks: list[tuple[int, int]] = []
        assert wait_until(lambda: bool(acks.extend(link.drain_ack_codes()) or (mid, 0) in acks), 5), acks
        got = sub.wait_for(1, 5)
        assert len(got) == 1
        assert got[0].topic == "meshems/test/zone-a/telemetry"
        assert got[0].payload == b"\x81\xa2kw\xcb@"
        assert got[0].user_props == props
        assert got[0].expiry_s is not None and 590 <= got[0].expiry_s <= 600
        assert link.last_error is None
    assert "as n1 (p5" in broker.log_text() and "u'n1'" in broker.log_text()  # CN = MQTT username
    # the subscriber's session ended: the broker accepts, and says nobody will get it
    lone = link.publish("meshems/test/zone-a/telemetry", b"nobody", props, expiry_s=600)
    assert wait_until(lambda: bool(acks.extend(link.drain_ack_codes()) or lone in dict(acks)), 5), acks
    assert dict(acks)[lone] == NO_MATCHING_SUBSCRIBERS


def test_a_client_without_a_certificate_is_refused(broker: MosquittoBroker, links: list[MqttLink]) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.load_verify_locations(cafile=str(broker.ca_file))
    with pytest.raises(ssl.SSLError, match="CERTIFICATE_REQUIRED"):
        raw_tls(broker, ctx)

    link = make_link(broker, "n-nocert", NoCertificate, reconnect_min_s=0.2, reconnect_max_s=0.5)
    with pytest.raises(AuthError, match="certificate required"):
        link.connect_once(timeout_s=5)
    links.append(link)
    link.start()
    assert wait_until(lambda: link.last_error is not None, 5)
    assert link.last_error is not None and link.last_error.code == "E_AUTH_FAIL"
    assert not link.connected


def test_a_tls12_only_client_is_refused(broker: MosquittoBroker) -> None:
    crt, key = broker.client_files("n-tls12", "node")
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cafile=str(broker.ca_file))
    ctx.load_cert_chain(str(crt), str(key))
    with pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION"):
        raw_tls(broker, ctx)

    link = make_link(broker, "n-tls12", Tls12Only)
    with pytest.raises(AuthError, match="protocol version") as info:
        link.connect_once(timeout_s=5)
    assert info.value.code == "E_AUTH_FAIL"


def test_an_expired_certificate_is_e_auth_fail_naming_the_date(
    broker: MosquittoBroker, pki_folder: Path, links: list[MqttLink]
) -> None:
    expired_at = datetime.now(UTC).replace(microsecond=0) - timedelta(days=3)
    start = expired_at - timedelta(days=90)
    key, crt = pki.issue(pki_folder, "n-old", "node", not_before=start, not_after=expired_at, force=True)
    link = MqttLink(broker.host, broker.port, broker.ca_file, crt, key, "n-old")
    want = f"E_AUTH_FAIL: {crt} expired on {pki.iso_utc(expired_at)}"
    with pytest.raises(AuthError) as info:
        link.start()
    assert str(info.value).startswith(want)
    assert link.last_error is not None and str(link.last_error).startswith(want)
    assert not link.connected
    with pytest.raises(AuthError, match="expired on"):
        link.connect_once(timeout_s=5)

    # without our own check the broker refuses it too: a TLS alert after the handshake
    unchecked = NoExpiryCheck(broker.host, broker.port, broker.ca_file, crt, key, "n-old")
    with pytest.raises(AuthError, match="certificate expired") as info:
        unchecked.connect_once(timeout_s=5)
    assert info.value.code == "E_AUTH_FAIL"


def test_broker_outage_connected_goes_false_and_comes_back(
    tmp_path: Path, pki_folder: Path, links: list[MqttLink]
) -> None:
    with MosquittoBroker(tmp_path, pki_folder, name="outage") as broker:
        link = make_link(broker, "n2", reconnect_min_s=0.1, reconnect_max_s=0.5)
        links.append(link)
        link.start()
        assert wait_until(lambda: link.connected, 5), link.last_error
        broker.stop()
        assert wait_until(lambda: not link.connected, 5)
        mid = link.publish("meshems/test/zone-a/telemetry", b"while-down", [("schema", "1")], expiry_s=600)
        assert wait_until(lambda: link.last_error is not None and link.last_error.code == "E_UNREACHABLE", 5)
        broker.start()
        assert wait_until(lambda: link.connected, 10), link.last_error
        assert link.connects == 2
        assert link.last_error is None
        acks: list[int] = []  # paho kept the QoS 1 message in RAM and sent it after the reconnect
        assert wait_until(lambda: bool(acks.extend(link.drain_acks()) or mid in acks), 5)


def test_the_subscriber_helper_keeps_its_session_over_a_broker_restart(
    tmp_path: Path, pki_folder: Path, links: list[MqttLink]
) -> None:
    with (
        MosquittoBroker(tmp_path, pki_folder, name="restart") as broker,
        broker.subscribe("meshems/#", name="sub-restart") as sub,
    ):
        link = make_link(broker, "n3", reconnect_min_s=0.1, reconnect_max_s=0.5)
        links.append(link)
        link.start()
        assert wait_until(lambda: link.connected, 5), link.last_error
        broker.stop()
        assert wait_until(lambda: not link.connected, 5)
        link.publish("meshems/test/zone-a/telemetry", b"while-down", [("seq", "1")], expiry_s=600)
        broker.start()
        got = sub.wait_for(1, 10)
        assert [(m.payload, m.user_props) for m in got] == [(b"while-down", [("seq", "1")])]
        assert "Sending CONNACK to sub-restart (1, 0)" in broker.log_text()  # session present
