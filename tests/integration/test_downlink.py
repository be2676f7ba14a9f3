"""Signed commands from the cloud to a real 3-node zone through a real mosquitto (TLS 1.3,
client certificates): a signed policy command is applied and answered; a tampered, an expired
and a replayed one are refused with their codes and never applied; a command in flight while
the leader is killed is applied exactly once; commands sent while the zone is offline are
applied once when it is back, unless they expired meanwhile."""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest
import yaml

from meshems.adapters import command_signing, pki
from meshems.adapters.config_file import load_config
from meshems.adapters.mqtt_subscriber import MqttSubscriber
from meshems.adapters.payload_bundle import keygen
from meshems.adapters.secret import init_secret, read_secret
from meshems.cli import main
from meshems.cloud.downlink import make_record, send
from meshems.core import downlink
from meshems.core.cloud_config import CloudIngestConfig, parse_cloud_config
from meshems.ops.supervisor import LocalCluster
from tests.conftest import write_config
from tests.mqtt_broker import MosquittoBroker, Subscriber

pytestmark = pytest.mark.integration
ZONE = "zone-t"


@dataclasses.dataclass
class Zone:
    lc: LocalCluster
    cloud: CloudIngestConfig
    key: Any
    results: Subscriber
    sender: MqttSubscriber

    def publish(self, data: bytes) -> None:
        info = self.sender.publish(downlink.commands_topic("meshems", ZONE), data)
        info.wait_for_publish(5.0)
        assert info.is_published()

    def answer(self, command_id: str, timeout_s: float = 8.0, count: int = 1) -> list[dict[str, Any]]:
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            got = [json.loads(m.payload) for m in list(self.results.messages)]
            mine = [a for a in got if a.get("command_id") == command_id]
            if len(mine) >= count:
                return mine
            time.sleep(0.05)
        raise AssertionError(f"no answer to command {command_id} within {timeout_s} s")

    def policy(self, node_id: str) -> dict[str, Any]:
        _, body = self.lc.client.request(self.lc.cfg.node(node_id), "GET", "/v1/control")
        return body.get("policy") or {}


def _session_held(broker: MosquittoBroker, after: int = 0) -> bool:
    log = broker.log_text()[after:]
    return f"-{ZONE}-commands" in log and "SUBSCRIBE" in log.split(f"-{ZONE}-commands", 1)[1]


def wait(predicate: Any, timeout_s: float, what: str) -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if got := predicate():
            return got
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout_s} s: {what}")


@contextmanager
def zone(tmp_path: Path, broker: MosquittoBroker, extra: dict[str, Any] | None = None) -> Iterator[Zone]:
    """A 3-node zone with a cloud link to `broker` and the cloud's command key (in
    TMP/cloud/, beside TMP/cloud/cloud.yaml) pinned; `extra`: more top-level config keys."""
    key_file = tmp_path / "cloud" / "command.key"
    _, public = keygen(key_file)
    crt, key = broker.client_files("cloud")
    cloud_yaml = tmp_path / "cloud" / "cloud.yaml"
    cloud_yaml.write_text(yaml.safe_dump({
        "broker_host": broker.host, "broker_port": broker.port, "ca_file": str(broker.ca_file),
        "cert_file": str(crt), "key_file": str(key), "client_id": "cloud",
    }))  # fmt: skip
    path = write_config(tmp_path, nodes=3)
    doc = yaml.safe_load(path.read_text())
    for n in doc["nodes"]:
        pki.issue(broker.pki_folder, n["id"], "node")
    doc["zone"] = ZONE
    doc["cloud"] = {"broker_host": broker.host, "broker_port": broker.port,
                    "ca_file": str(broker.pki_folder / "ca.crt"), "cert_dir": str(broker.pki_folder),
                    "outbox_dir": "outbox", "reconnect_min_s": 0.2, "reconnect_max_s": 1.0,
                    "command_keys": [public]}  # fmt: skip
    doc.update(extra or {})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = load_config(path)
    init_secret(cfg.secret_path)
    lc = LocalCluster(cfg, str(path), read_secret(cfg.secret_path), tmp_path / "logs")
    cloud = parse_cloud_config(yaml.safe_load(cloud_yaml.read_text()), str(cloud_yaml))
    sender = MqttSubscriber(broker.host, broker.port, broker.ca_file, crt, key, "test-sender",
                            "meshems/none", session_expiry_s=0)  # fmt: skip
    try:
        with broker.subscribe(downlink.results_topic("meshems", ZONE)) as results:
            sender.start()
            lc.start_all()
            yield Zone(lc, cloud, command_signing.load_private_key(key_file), results, sender)
    finally:
        sender.stop()
        for node_id in list(lc.procs):  # all at once: their shutdowns overlap
            if lc.running(node_id):
                lc.signal(node_id, signal.SIGTERM)
        lc.stop_all()


def signed(z: Zone, seq: int, kw: float, **changes: Any) -> tuple[downlink.CommandRecord, bytes]:
    rec = make_record(ZONE, "set_policy", {"values": {"import_limit_kw": kw}}, seq, time.time(), 60)
    rec = dataclasses.replace(rec, **changes)
    return rec, command_signing.sign(rec, z.key)


def test_a_signed_command_applies_once_and_wrong_ones_never(
    tmp_path: Path, broker: MosquittoBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    with zone(tmp_path, broker) as z:
        leader = z.lc.wait_leader(20)
        wait(lambda: _session_held(broker), 5, "the leader holds the zone's command session")
        # through the CLI, as an operator would
        rc = main(["cloud", "send", "--config", z.cloud.source, "--zone", ZONE, "--expires", "1m", "--wait",
                   "--timeout", "8", "policy", "set", "import_limit_kw=40"])  # fmt: skip
        shown = capsys.readouterr()
        assert rc == 0, shown.err
        assert f"applied by {leader} at term" in shown.out, shown.out
        assert z.policy(leader)["import_limit_kw"] == 40.0
        first = z.results.messages[0]
        applied = json.loads(first.payload)
        assert applied["ok"] and applied["code"] == "OK" and applied["index"] >= 1 and first.qos == 1
        seq = applied["seq"]

        # tampered: the record's 70.0 turned into 99.0 after signing
        rec, data = signed(z, seq + 10, 70.0)
        env = msgpack.unpackb(data)
        env["record"] = env["record"].replace(msgpack.packb(70.0), msgpack.packb(99.0))
        z.publish(msgpack.packb(env, use_bin_type=True))
        # expired: signed correctly, but its expiry passed before the leader got it
        old, expired = signed(z, seq + 11, 71.0, issued_at_s=int(time.time()) - 120,
                              expires_at_s=int(time.time()) - 60)  # fmt: skip
        z.publish(expired)
        # replayed: a newer command applies, then an older one signed before it arrives late
        late, late_data = signed(z, seq + 20, 55.0)
        new, new_data = signed(z, seq + 21, 41.0)
        z.publish(new_data)
        z.publish(late_data)
        z.publish(new_data)  # its exact bytes again: answered with the first result, not applied again

        assert z.answer(rec.command_id)[0]["code"] == "E_CMD_SIGNATURE"
        assert z.answer(old.command_id)[0]["code"] == "E_CMD_EXPIRED"
        assert z.answer(late.command_id)[0]["code"] == "E_CMD_REPLAY"
        first_new, again = z.answer(new.command_id, count=2)
        assert first_new["ok"] and not first_new["duplicate"]
        assert again["ok"] and again["duplicate"] and again["index"] == first_new["index"]
        # none of the refused ones changed the policy, on any node
        for node in z.lc.cfg.nodes:
            wait(lambda n=node.id: z.policy(n).get("import_limit_kw") == 41.0, 5, f"{node.id} has 41 kW")
        # the replay guard is replicated: every node holds the last applied seq
        assert {r["cloud_command_seq"] for r in z.lc.client.status_all()} == {new.seq}


def test_commands_across_a_leader_kill_apply_exactly_once(tmp_path: Path, broker: MosquittoBroker) -> None:
    with zone(tmp_path, broker) as z:
        leader = z.lc.wait_leader(20)
        wait(lambda: _session_held(broker), 5, "the leader holds the zone's command session")
        base = int(time.time() * 1000)
        a, a_data = signed(z, base, 45.0)  # in flight as the leader dies
        b, b_data = signed(z, base + 1, 46.0)  # sent while the zone is offline: queued in the session
        z.publish(a_data)
        others = [n.id for n in z.lc.cfg.nodes if n.id != leader]
        for n in others:  # the zone offline: no node takes the lead, none holds the session
            z.lc.signal(n, signal.SIGSTOP)
        z.lc.kill(leader)
        z.publish(b_data)
        # two that lapse while the zone is offline: `cloud send` gives the broker the command's
        # expiry, so it drops the first; the second has no message expiry: the zone refuses it
        # (the policy is never 47 or 48: every live node ends with b's 46 kW, checked below)
        dropped, _ = send(z.cloud, ZONE, "set_policy", {"values": {"import_limit_kw": 47.0}}, 1)
        now = time.time()
        lapsed, lapsed_data = signed(z, base + 2, 48.0, expires_at_s=int(now) + 1)
        z.publish(lapsed_data)
        lapse = max(dropped.expires_at_s, lapsed.expires_at_s, now + 1.0) + 0.1
        wait(lambda: time.time() > lapse, 3, "both lapsed")
        for n in others:
            z.lc.signal(n, signal.SIGCONT)
        new = z.lc.wait_leader(10, exclude={leader})
        answers = {c.command_id: z.answer(c.command_id, timeout_s=10) for c in (a, b)}
        assert z.answer(lapsed.command_id)[0]["code"] == "E_CMD_EXPIRED"
        time.sleep(0.5)  # a repeat answer (a redelivery to the new leader) would arrive by now
        # the broker dropped it, or (its expiry counts in whole seconds) the zone refused it
        late = [
            json.loads(m.payload)
            for m in list(z.results.messages)
            if dropped.command_id in m.payload.decode()
        ]
        assert all(x["code"] == "E_CMD_EXPIRED" for x in late), late
        for c in (a, b):
            got = z.answer(c.command_id)
            assert all(x["ok"] for x in got), got
            # one log entry per command: every answer, first or repeat, names the same one
            assert len({(x["term"], x["index"]) for x in got}) == 1, got
            assert sum(not x["duplicate"] for x in got) <= 1, got
        assert answers[b.command_id][0]["node"] == new
        for node in z.lc.cfg.nodes:
            if node.id != leader:
                wait(lambda n=node.id: z.policy(n).get("import_limit_kw") == 46.0, 5, f"{node.id} has 46 kW")
