"""Cloud sync against a real mosquitto (TLS 1.3, client certificates) and real node
processes with simulated sites: the subscriber sees every telemetry sequence number, in
order after de-duplication, through a broker outage, a leader kill during the outage, a
restart of every node with a backlog, and an outbox cap (counted, alarmed, announced). A
`meshems cloud ingest` worker as the only subscriber stores the stream through a leader kill
and a broker restart: contiguous after the drain, the gap notices in its ledger."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshems.adapters import pki
from meshems.adapters.config_file import load_config
from meshems.adapters.secret import init_secret, read_secret
from meshems.cli import main
from meshems.core.telemetry import parse_payload
from meshems.ops.supervisor import LocalCluster
from tests.conftest import write_config
from tests.integration.test_cloud_ingest import Worker
from tests.mqtt_broker import MosquittoBroker, Received

pytestmark = pytest.mark.integration
TOPICS = "meshems/zone-t/#"


@contextmanager
def cloud_cluster(
    tmp_path: Path, broker: MosquittoBroker, nodes: int = 3, **cloud: Any
) -> Iterator[LocalCluster]:
    path = write_config(tmp_path, nodes=nodes, wired=True)
    doc = yaml.safe_load(path.read_text())
    for n in doc["nodes"]:
        if not (broker.pki_folder / f"{n['id']}.crt").exists():
            pki.issue(broker.pki_folder, n["id"], "node")
    doc["cloud"] = {
        "broker_host": broker.host,
        "broker_port": broker.port,
        "ca_file": str(broker.pki_folder / "ca.crt"),
        "cert_dir": str(broker.pki_folder),
        "outbox_dir": "outbox",
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 1.0,
        **cloud,
    }
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = load_config(path)
    init_secret(cfg.secret_path)
    lc = LocalCluster(cfg, str(path), read_secret(cfg.secret_path), tmp_path / "logs")
    try:
        lc.start_sims()
        lc.start_all()
        yield lc
    finally:
        for node_id in list(lc.procs):  # all at once: their shutdowns overlap
            if lc.running(node_id):
                lc.signal(node_id, signal.SIGTERM)
        lc.stop_all()


@contextmanager
def ingest(tmp_path: Path, broker: MosquittoBroker) -> Iterator[tuple[Path, Worker]]:
    """A `meshems cloud ingest` worker into SQLite, subscribed (its session held on the broker)
    before the zone publishes; yields its cloud.yaml and the worker."""
    crt, key = broker.client_files("ingest")
    cfg = tmp_path / "cloud.yaml"
    cfg.write_text(yaml.safe_dump({
        "broker_host": broker.host, "broker_port": broker.port, "ca_file": str(broker.ca_file),
        "cert_file": str(crt), "key_file": str(key), "share_group": "ingest", "topic_prefix": "meshems",
        "store": "ingest.sqlite3", "session_expiry_s": 300,
    }))  # fmt: skip
    worker = Worker(cfg, "ingest-1", tmp_path)
    try:
        worker.start()
        yield cfg, worker
    finally:
        if worker.proc is not None and worker.proc.poll() is None:
            os.kill(worker.proc.pid, signal.SIGCONT)
        stats = worker.stop()
    assert stats.get("bad", 0) == 0 and stats.get("conflicts", 0) == 0, stats


def stored_zone(cfg: Path, through: int, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    """The zone's row of `meshems cloud zones -o json` once the store is contiguous through
    `through` with nothing missing, or the last row seen after 10 s."""
    last: dict[str, Any] = {}
    end = time.monotonic() + 10
    while time.monotonic() < end:
        capsys.readouterr()
        assert main(["cloud", "zones", "--config", str(cfg), "-o", "json"]) == 0
        last = next((r for r in json.loads(capsys.readouterr().out) if r["zone"] == "zone-t"), {})
        if last and last["contiguous_through"] >= through and not last["missing"]:
            break
        time.sleep(0.1)
    return last


def rows(lc: LocalCluster) -> dict[str, dict[str, Any]]:
    return {r["id"]: r for r in lc.client.status_all(timeout_s=1.0) if r.get("reachable")}


def leader_cloud(lc: LocalCluster) -> dict[str, Any]:
    for r in rows(lc).values():
        if r["role"] == "leader" and r.get("cloud"):
            return dict(r["cloud"])
    return {}


def wait(predicate: Any, timeout_s: float, what: str) -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        got = predicate()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout_s} s: {what}")


def telemetry(messages: list[Received]) -> dict[int, list[Received]]:
    by_seq: dict[int, list[Received]] = {}
    for m in messages:
        props = dict(m.user_props)
        if "seq" in props:
            by_seq.setdefault(int(props["seq"]), []).append(m)
    return by_seq


def assert_gap_free(messages: list[Received], through: int, announced: set[int] = frozenset()) -> None:
    """Seqs 1..through each arrived (or were announced as dropped); duplicates are identical
    (detectable) and payloads name the same seq as their user properties."""
    by_seq = telemetry(messages)
    missing = [s for s in range(1, through + 1) if s not in by_seq and s not in announced]
    assert not missing, f"missing telemetry seqs {missing[:20]} (of 1..{through})"
    for seq, copies in by_seq.items():
        assert len({c.payload for c in copies}) == 1, f"seq {seq} arrived with different payloads"
        doc = parse_payload(copies[0].payload)
        assert doc["seq"] == seq and doc["zone"] == "zone-t"
        props = dict(copies[0].user_props)
        assert int(props["term"]) >= 1 and int(props["index"]) >= 1 and props["zone"] == "zone-t"
        assert copies[0].qos == 1 and copies[0].expiry_s is not None
    # the stream lane arrives in seq order (a repeat after a reconnect or a new leader starts
    # again from the watermark); only the live lane may overtake a draining backlog
    stream = [int(dict(m.user_props)["seq"]) for m in messages if dict(m.user_props).get("lane") == "stream"]
    firsts: list[int] = []
    for seq in stream:
        if seq not in firsts:
            firsts.append(seq)
    assert firsts == sorted(firsts), "stream-lane telemetry arrived out of order"


def test_outage_and_leader_kill_during_it_leave_no_gap(tmp_path: Path, broker: MosquittoBroker) -> None:
    with broker.subscribe(TOPICS) as sub, cloud_cluster(tmp_path, broker) as lc:
        leader = lc.wait_leader(20)
        sub.wait_for(6, 30)
        assert "TLSv1.3" in wait(lambda: leader_cloud(lc).get("link", ""), 10, "leader's link up")
        broker.stop()
        down = wait(lambda: "down" in leader_cloud(lc).get("link", "") and leader_cloud(lc), 10, "link down")
        assert "E_UNREACHABLE" in down["link"]
        time.sleep(2)
        lc.kill(leader)
        new = lc.wait_leader(15, exclude={leader})
        backlog = wait(lambda: (c := leader_cloud(lc)).get("backlog", 0) >= 5 and c, 20, "a backlog")
        assert backlog["oldest_unsent_age_s"] > 0
        shown = subprocess.run(
            [sys.executable, "-m", "meshems", "status", "--config", lc.config_path],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        cloud_line = next(line for line in shown.splitlines() if line.startswith("cloud: "))
        assert "backlog" in cloud_line and "oldest unsent" in cloud_line and " s," in cloud_line, cloud_line
        wait(lambda: rows(lc)[new]["cloud"]["publishing"], 5, f"{new} takes over publishing")
        through = rows(lc)[new]["telemetry_seq"]
        # both outages last past their grace before they end (a quick machine gets here sooner)
        broker_at, peer_at = f"broker {broker.host}:{broker.port}", f"peer {leader}"
        wait(lambda: all(outage_lines(lc.log_text(new), x)[0] for x in (broker_at, peer_at)), 10, "outages")
        broker.start()
        lc.start(leader)
        wait(
            lambda: rows(lc)[new]["cloud_acked"] >= through, 30, f"the backlog through {through} acknowledged"
        )
        sub.wait_for(through, 10)
        assert_gap_free(sub.messages, through)
        # records keep coming (~3/s) and the watermark commits twice a second: it keeps up
        after = wait(lambda: (c := leader_cloud(lc)).get("backlog", 99) <= 3 and c, 10, "a small backlog")
        assert after["dropped"] == 0 and after["alarms"] == []
        # the outages are logged, not only shown: the broker's on the new leader, the killed peer's
        began, ended = outage_lines(lc.log_text(new), broker_at)
        assert began and began[0]["error"] == "E_UNREACHABLE", lc.log_text(new)[-3000:]
        assert ended and ended[0]["duration_s"] > began[0]["duration_s"]
        peer = wait(lambda: (o := outage_lines(lc.log_text(new), peer_at))[1] and o, 30, "its end")
        assert peer[1][0]["duration_s"] >= 3.0, f"{new} logged the outage of the killed {leader} too early"


def outage_lines(text: str, link: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The W_OUTAGE and I_OUTAGE_END log entries of one link."""
    entries = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    mine = [e for e in entries if e.get("link") == link]
    return [e for e in mine if e["code"] == "W_OUTAGE"], [e for e in mine if e["code"] == "I_OUTAGE_END"]


def test_restart_of_every_node_with_a_backlog_loses_nothing(tmp_path: Path, broker: MosquittoBroker) -> None:
    with broker.subscribe(TOPICS) as sub, cloud_cluster(tmp_path, broker) as lc:
        lc.wait_leader(20)
        sub.wait_for(3, 30)
        broker.stop()
        wait(lambda: leader_cloud(lc).get("backlog", 0) >= 6, 20, "a backlog of 6")
        through = max(r["telemetry_seq"] for r in rows(lc).values())
        for n in ("n1", "n2", "n3"):
            lc.stop(n)
        for n in ("n1", "n2", "n3"):
            lc.start(n)
        lc.wait_leader(20)
        broker.start()
        wait(
            lambda: any(r["cloud_acked"] >= through for r in rows(lc).values()),
            30,
            f"acked through {through}",
        )
        sub.wait_for(through, 10)
        assert_gap_free(sub.messages, through)


def test_outbox_cap_drops_are_counted_alarmed_and_announced(tmp_path: Path, broker: MosquittoBroker) -> None:
    with broker.subscribe(TOPICS) as sub, cloud_cluster(tmp_path, broker, outbox_max_age_s=2.0) as lc:
        lc.wait_leader(20)
        sub.wait_for(3, 30)
        broker.stop()
        full = wait(lambda: (c := leader_cloud(lc)).get("dropped", 0) >= 3 and c, 20, "age-cap drops")
        assert "A_CLOUD_BACKLOG_FULL" in full["alarms"]
        assert any("A_CLOUD_BACKLOG_FULL" in r["alarms"] for r in rows(lc).values())
        broker.start()
        gaps = wait(lambda: [m for m in sub.messages if m.topic.endswith("/gaps")], 20, "a gap notice")
        announced: set[int] = set()
        for g in gaps:
            doc = parse_payload(g.payload)
            assert doc["reason"] == "age" and doc["policy"] == "drop_oldest"
            announced |= set(range(doc["first"], doc["last"] + 1))
        assert len(announced) >= 3
        through = wait(lambda: leader_cloud(lc).get("acked_through", 0), 20, "acks after the outage")
        sub.wait_for(through - len(announced), 10)
        assert_gap_free(sub.messages, through, announced)


def test_an_expired_node_certificate_is_reported_with_its_date(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    past = datetime.now(UTC) - timedelta(days=30)
    pki.issue(broker.pki_folder, "n1", "node", not_before=past - timedelta(days=30), not_after=past)
    with cloud_cluster(tmp_path, broker, nodes=1) as lc:
        lc.wait_leader(20)
        link = wait(
            lambda: "E_AUTH_FAIL" in (c := leader_cloud(lc)).get("link", "") and c["link"], 15, "E_AUTH_FAIL"
        )
        assert "n1.crt" in link and past.strftime("%Y-%m-%d") in link, link


def held_or_queued(cloud: dict[str, Any]) -> bool:
    """The leader is connected, and holds the stream (no subscriber) or the broker took it all."""
    up = cloud.get("link", "").startswith("connected")
    return up and (cloud["unsubscribed"] > 0 or cloud["acked_through"] >= cloud["stream_seq"])


def test_ingest_through_a_leader_kill_and_a_broker_restart_is_contiguous(
    tmp_path: Path, broker: MosquittoBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    """The ingest worker is the zone's only subscriber. mosquitto before 2.0.19 keeps no shared
    subscription over a restart: until the worker subscribes again it accepts the leader's
    records with "no matching subscribers", and the leader holds them (hold_unsubscribed)."""
    aged = cloud_cluster(tmp_path, broker, outbox_max_age_s=1.0)
    with ingest(tmp_path, broker) as (cloud, worker), aged as lc:
        leader = lc.wait_leader(20)
        assert stored_zone(cloud, 1, capsys).get("contiguous_through", 0) >= 1, "the first record stored"
        lc.kill(leader)  # mid-stream, kill -9
        new = lc.wait_leader(15, exclude={leader})
        assert worker.proc is not None
        os.kill(worker.proc.pid, signal.SIGSTOP)  # a slow worker: back only after the leader
        broker.stop()
        wait(lambda: leader_cloud(lc).get("dropped", 0) >= 1, 15, "an age-cap drop while the broker is away")
        started = time.monotonic()
        broker.start()
        # the shared subscription is gone: the leader holds the stream (a broker that kept it
        # has queued the records for the worker instead)
        wait(lambda: held_or_queued(leader_cloud(lc)), 10, "the leader connected, holding the stream")
        held = leader_cloud(lc)
        os.kill(worker.proc.pid, signal.SIGCONT)
        through = max(r["telemetry_seq"] for r in rows(lc).values())
        zone = stored_zone(cloud, through, capsys)
        drained_s = time.monotonic() - started
        assert zone["contiguous_through"] >= through and zone["missing"] == [], zone
        assert zone["conflicts"] == 0 and zone["publisher"] == new, zone

        def reconciled() -> dict[str, Any]:
            """The ledger once its announced ranges are the ones the leader logged as dropped."""
            lines = [json.loads(x) for x in lc.log_text(new).splitlines() if x.startswith("{")]
            drops = [range(e["first"], e["last"] + 1) for e in lines if e["code"] == "A_CLOUD_BACKLOG_FULL"]
            row = stored_zone(cloud, through, capsys)
            told = {s for a, b in row["announced"] for s in range(a, b + 1)}
            return row if told and told == {s for r in drops for s in r} else {}

        zone = wait(reconciled, 5, "the announced ranges are the dropped ones")
        assert zone["missing"] == [] and zone["contiguous_through"] >= through, zone
        print(f"drained through {through} in {drained_s:.1f} s; held: {held}; zone: {zone}", file=sys.stderr)
