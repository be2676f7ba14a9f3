"""The leader's handling of cloud commands (`node.downlink.Downlink._handle`) without a broker:
a fake subscriber records what is answered and acknowledged, a fake Raft applies proposals with
the real `cluster.apply` on the loop the bridge serves. A command is acknowledged only after its
answer; a refused one is never proposed; a redelivered one is answered with its first result;
one whose commit stays unknown is neither answered nor acknowledged (the next leader gets it)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from meshems.adapters.command_signing import public_hex, sign
from meshems.adapters.mqtt_subscriber import Message
from meshems.cloud.downlink import make_record
from meshems.core.cluster import ZoneState, apply
from meshems.core.config import parse_config
from meshems.node import downlink as node_downlink
from meshems.node.bridge import Bridge
from meshems.node.downlink import Downlink

KEY = Ed25519PrivateKey.generate()


class FakeSub:
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self.stopped = False

    def publish(self, topic: str, payload: bytes, expiry_s: int | None = None) -> None:
        self.events.append(("answer", (topic, json.loads(payload))))

    def ack(self, messages: list[Message]) -> None:
        self.events.extend(("ack", m.mid) for m in messages)

    def stop(self) -> None:
        self.stopped = True


class FakeRaft:
    def __init__(self, fail_with: str | None = None) -> None:
        self.state, self.index, self.proposed, self.fail_with = ZoneState(), 0, 0, fail_with

    async def commit(self, data: bytes) -> dict[str, Any]:
        self.proposed += 1
        if self.fail_with:
            return {"ok": False, "code": self.fail_with, "message": "no commit"}
        self.index += 1
        self.state, result = apply(self.state, data, 1, self.index)
        return result.to_dict()


@pytest.fixture
def bridge() -> Iterator[Bridge]:
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    b = Bridge()
    b.bind(loop)
    yield b
    loop.call_soon_threadsafe(loop.stop)
    thread.join(5)
    loop.close()


def service(bridge: Bridge, raft: FakeRaft) -> tuple[Downlink, FakeSub]:
    node = {"id": "n1", "address": "127.0.0.1", "raft_port": 4001, "api_port": 5001}
    cloud = {"broker_host": "b", "command_keys": [public_hex(KEY)]}
    raft_section = {"secret_file": "s", "commit_timeout_s": 0.5}
    cfg = parse_config(
        {"cluster": "t", "zone": "zone-a", "raft": raft_section, "nodes": [node], "cloud": cloud}
    )
    d = Downlink.configured(cfg, "n1", lambda: True, lambda: raft.state, raft.commit, bridge)
    assert d is not None
    sub = FakeSub()
    d.sub = sub  # type: ignore[assignment]
    return d, sub


def message(mid: int, seq: int, age_s: float = 0, kw: float = 40.0) -> Message:
    """A signed command issued `age_s` ago, valid for 60 s from then."""
    values = {"values": {"import_limit_kw": kw}}
    rec = make_record("zone-a", "set_policy", values, seq, time.time() - age_s, 60)
    return Message("meshems/zone-a/commands", sign(rec, KEY), (), mid, 1)


def test_a_command_is_answered_then_acknowledged_and_a_repeat_gets_the_first_result(bridge: Bridge) -> None:
    raft = FakeRaft()
    d, sub = service(bridge, raft)
    msg = message(1, 5)
    d._handle(msg)
    (kind, (topic, first)), ack = sub.events
    assert kind == "answer" and topic == "meshems/zone-a/results" and ack == ("ack", 1)
    assert first["ok"] and first["seq"] == 5 and first["index"] == 1 and not first["duplicate"]
    assert raft.state.policy is not None and raft.state.policy.import_limit_kw == 40.0
    d._handle(Message(msg.topic, msg.payload, (), 2, 1))  # redelivered to the (next) leader
    (_, (_, again)), ack2 = sub.events[2:]
    assert again["ok"] and again["duplicate"] and again["index"] == 1 and ack2 == ("ack", 2)
    assert raft.proposed == 1


def test_a_refused_command_is_answered_and_never_proposed(bridge: Bridge) -> None:
    raft = FakeRaft()
    d, sub = service(bridge, raft)
    d._handle(message(1, 5, age_s=120, kw=1.0))  # expired a minute ago
    d._handle(message(2, 6))
    d._handle(message(3, 4, kw=1.0))  # older than the applied 6: a replay
    codes = [e[1][1]["code"] for e in sub.events if e[0] == "answer"]
    assert codes == ["E_CMD_EXPIRED", "OK", "E_CMD_REPLAY"] and raft.proposed == 1
    assert [e[1] for e in sub.events if e[0] == "ack"] == [1, 2, 3]
    assert raft.state.policy.import_limit_kw == 40.0  # type: ignore[union-attr]


def test_a_command_whose_commit_stays_unknown_is_not_acknowledged(
    bridge: Bridge, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(node_downlink, "PROPOSE_TRIES", 2)
    raft = FakeRaft(fail_with="E_LEADER_CHANGED")
    d, sub = service(bridge, raft)
    d._handle(message(1, 5))
    assert sub.events == [] and sub.stopped and d.sub is None and raft.proposed == 2
