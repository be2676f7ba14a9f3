"""The fast MQTT v5 receive path (`adapters.mqtt_fastpath`) against paho's own: the same
topic, payload, user properties, packet id and QoS for every PUBLISH property, a malformed
packet refused wherever paho refuses it, PUBACKs byte for byte what paho writes, and the
private paho names the fast path relies on still there and still wired as it expects (a
paho release that changes them fails here, not in production)."""

from __future__ import annotations

import inspect
import socket
import struct
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from meshems.adapters.mqtt_fastpath import FastClient, decode_publish

V5 = MQTTProtocolVersion.MQTTv5
Decoded = tuple[str, bytes, tuple[tuple[str, str], ...], int, int]
TELEMETRY = [("seq", "5"), ("term", "2"), ("index", "105"), ("zone", "z0001"), ("publisher", "n1")]


def client(cls: type[mqtt.Client] = mqtt.Client, manual_ack: bool = True) -> Any:
    c = cls(CallbackAPIVersion.VERSION2, client_id="t", protocol=V5)
    c.manual_ack_set(manual_ack)
    return c


def props(**values: Any) -> Properties:
    p = Properties(PacketTypes.PUBLISH)
    for name, value in values.items():
        setattr(p, name, value)
    return p


def publish(
    topic: str, payload: bytes, qos: int = 1, mid: int = 77, p: Properties | None = None
) -> tuple[int, bytes]:
    """(first header byte, the bytes after the remaining length) of a PUBLISH."""
    t = topic.encode()
    body = struct.pack("!H", len(t)) + t + (struct.pack("!H", mid) if qos else b"")
    body += bytes((p or Properties(PacketTypes.PUBLISH)).pack()) + payload
    return 0x30 | qos << 1, body


def paho_decodes(header: int, body: bytes | bytearray) -> Decoded:
    """What paho's own `_handle_publish` hands `on_message`, as the fast path's tuple."""
    c, got = client(), []
    c.on_message = lambda cl, u, m: got.append(m)
    c._in_packet = {**c._in_packet, "command": header, "packet": bytearray(body)}
    c._handle_publish()
    (m,) = got
    return m.topic, m.payload, tuple(getattr(m.properties, "UserProperty", [])), m.mid, m.qos


def fast_decodes(header: int, body: bytes | bytearray) -> Decoded:
    return decode_publish(header, bytearray(body))


CASES = {
    "telemetry": publish("meshems/z0001/telemetry/node/n1", b"\x85" * 300, p=props(UserProperty=TELEMETRY)),
    "no properties": publish("a/b", b"x"),
    "qos 0": publish("a/b", b"x", qos=0, p=props(UserProperty=[("k", "v")])),
    "empty payload": publish("a/b", b"", p=props(UserProperty=[("k", "v")])),
    "non-ascii": publish("zone/ü/€", "µ".encode() * 40, p=props(UserProperty=[("naïve", "日本"), ("k", "")])),
    "every publish property": publish(
        "a/b",
        b"{}",
        mid=65535,
        p=props(
            PayloadFormatIndicator=1,
            MessageExpiryInterval=3600,
            ContentType="application/json",
            ResponseTopic="r/t",
            CorrelationData=b"\x00\x01",
            SubscriptionIdentifier=[7, 300000],
            TopicAlias=3,
            UserProperty=[("a", "1"), ("a", "2")],
        ),
    ),
    "large payload": publish("big", bytes(range(256)) * 300, p=props(UserProperty=[("k", "v" * 1000)])),
}


@pytest.mark.parametrize("name", CASES)
def test_decodes_as_paho_does(name: str) -> None:
    header, body = CASES[name]
    assert fast_decodes(header, body) == paho_decodes(header, body)


def test_refused_wherever_paho_refuses_and_never_decoded_differently() -> None:
    """Every truncation of a packet with every kind of property: where paho's decoder
    raises MalformedPacket, so does the fast one; where the fast one decodes, paho agrees."""
    header, body = CASES["every publish property"]
    refused = 0
    for cut in range(len(body)):
        part = body[:cut]
        try:
            want = paho_decodes(header, part)
        except MalformedPacket:
            with pytest.raises(MalformedPacket):
                fast_decodes(header, part)
            refused += 1
            continue
        try:
            assert fast_decodes(header, part) == want, cut
        except MalformedPacket:
            refused += 1  # stricter than paho: a property region cut short
    assert refused >= len(body) - 5  # only cuts in the 2-byte payload decode


@pytest.mark.parametrize(
    ("label", "tail"),
    [("null", b"\x00"), ("BOM", "\ufeff".encode()), ("not UTF-8", b"\xff"), ("surrogate", b"\xed\xa0\x80")],
)
def test_a_user_property_that_is_no_mqtt_string_is_malformed(label: str, tail: bytes) -> None:
    value = b"v" + tail
    pair = b"\x26" + struct.pack("!H", 1) + b"k" + struct.pack("!H", len(value)) + value
    bad = struct.pack("!H", 3) + b"a/b" + struct.pack("!H", 77) + bytes([len(pair)]) + pair + b"x"
    for decode in (paho_decodes, fast_decodes):
        with pytest.raises(MalformedPacket):
            decode(0x32, bad)


@pytest.mark.parametrize(
    ("label", "prop_bytes"),
    [("session expiry: not a PUBLISH property", b"\x11\x00\x00\x00\x01"),
     ("unknown identifier", b"\x7f\x00"),
     ("message expiry twice", b"\x02\x00\x00\x00\x01\x02\x00\x00\x00\x02"),
     ("5-byte variable byte integer", b"\x0b\xff\xff\xff\xff\x01")],
)  # fmt: skip
def test_a_property_a_publish_cannot_carry_is_malformed(label: str, prop_bytes: bytes) -> None:
    body = struct.pack("!H", 3) + b"a/b" + struct.pack("!H", 9) + bytes([len(prop_bytes)]) + prop_bytes + b"x"
    for decode in (paho_decodes, fast_decodes):
        with pytest.raises(MalformedPacket):
            decode(0x32, body)


def test_paho_private_names_the_fast_path_uses_are_there() -> None:
    """If this fails, paho changed its internals: check FastClient against the new paho."""
    for name in ("_handle_publish", "_send_puback", "_packet_queue", "_packet_read", "_packet_handle"):
        assert callable(getattr(mqtt.Client, name, None)), name
    assert list(inspect.signature(mqtt.Client._packet_queue).parameters) == [
        "self", "command", "packet", "mid", "qos", "info"
    ]  # fmt: skip
    c = client()
    assert {"command", "packet"} <= set(c._in_packet) and c._protocol == V5 and c._manual_ack is True
    assert hasattr(c._in_callback_mutex, "acquire") and hasattr(c._out_packet, "popleft")


@pytest.mark.parametrize("manual_ack", [True, False])
def test_paho_read_loop_hands_a_publish_to_the_sink(manual_ack: bool) -> None:
    """A PUBLISH on the socket, through paho's loop_read → _packet_read → _handle_publish:
    the sink gets it; paho acks it itself only without manual acks."""
    c, got = client(FastClient, manual_ack), []
    c.sink = lambda *a: got.append(a)
    c.on_message = lambda *a: pytest.fail("paho's own path ran")
    ours, broker = socket.socketpair()
    try:
        ours.setblocking(False)
        c._sock = ours
        header, body = CASES["telemetry"]
        broker.sendall(bytes([header, 0x80 | len(body) & 127, len(body) >> 7]) + body)
        assert c.loop_read() == MQTTErrorCode.MQTT_ERR_SUCCESS
        assert got == [fast_decodes(header, body)]
        broker.setblocking(False)  # no loop thread: paho wrote its own PUBACK at once
        try:
            acks = broker.recv(100)
        except BlockingIOError:
            acks = b""
        assert acks == (b"" if manual_ack else b"\x40\x02\x00\x4d")
    finally:
        c._sock = None
        ours.close()
        broker.close()


def test_qos_2_and_no_sink_keep_paho_own_path() -> None:
    c, got = client(FastClient), []
    c.on_message = lambda cl, u, m: got.append((m.topic, m.qos))
    for sink, (header, body) in (
        (lambda *a: pytest.fail("the fast path took QoS 2"), publish("a/q2", b"x", qos=2)),
        (None, publish("a/nosink", b"x")),
    ):
        c.sink = sink
        c._in_packet = {**c._in_packet, "command": header, "packet": bytearray(body)}
        c._handle_publish()
    assert got == [("a/nosink", 1)] and 77 in c._in_messages  # QoS 2: held for PUBREL, as paho does


def test_puback_is_one_packet_of_what_paho_writes_per_message() -> None:
    mids = [1, 2, 300, 65535]
    paho = client()
    for mid in mids:
        paho._send_puback(mid)
    fast = client(FastClient)
    fast.puback(mids)
    fast.puback([])
    (packet,) = fast._out_packet
    assert packet["packet"] == b"".join(p["packet"] for p in paho._out_packet)
    assert packet["packet"][:4] == b"\x40\x02\x00\x01"
