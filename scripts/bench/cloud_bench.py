#!/usr/bin/env python3
"""Cloud sync benchmark against a local mosquitto (TLS 1.3, client certificates), in one run.

1. Live: a 3-node meshems cluster (real node processes) with a cloud section; a client
   writes setpoints at a steady rate; each committed setpoint becomes a telemetry record the
   leader publishes. Latency = subscriber arrival - the write's commit acknowledgement at
   the client (and - the write's start), p50/p99; delivered rate.
2. Drain: a one-hour backlog of 1 Hz telemetry from 100 devices (360,000 records, one per
   device reading, ~250 B msgpack) in a node's outbox, drained by the real CloudSync
   publisher over the real MqttLink, while fresh records keep arriving (10/s) to show live
   data is not starved (their latency is reported). The watermark commit goes to a stub
   here (no Raft: the live part measures that path).
3. Baseline: a raw paho publish loop (1,000 in flight, QoS 1) of the same payloads over the
   same kind of TLS connection. Ratio = drain rate / raw rate.
A subscriber checks every seq: lost (never arrived) and undetectable duplicates (same seq,
different payload). Never asserts on time.

    python scripts/bench/cloud_bench.py [--quick] [--json] [--records N] [--writes N] [--idle-s S]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import yaml
from benchlib import pct

from meshems.adapters import pki
from meshems.adapters.config_file import load_config
from meshems.adapters.mqtt_link import MqttLink
from meshems.adapters.outbox import Outbox
from meshems.adapters.outbox_records import Record
from meshems.adapters.secret import init_secret, read_secret
from meshems.core import commands, telemetry
from meshems.core.cluster import ZoneState
from meshems.node.cloud import CloudSync
from meshems.ops.supervisor import LocalCluster
from tests.conftest import free_ports
from tests.mqtt_broker import MosquittoBroker

ZONE = "bench"


SUBSCRIBER = r"""
import json, ssl, sys, threading, time, zlib
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
host, port, ca, crt, key, topic, out, keep = sys.argv[1:9]
rows, last = [], [time.monotonic()]
ready = threading.Event()
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
ctx.load_verify_locations(cafile=ca)
ctx.load_cert_chain(crt, key)
def on_message(c, u, msg):
    now = time.monotonic()
    last[0] = now
    props = dict(getattr(msg.properties, "UserProperty", []))
    if "seq" in props:
        rows.append([now, int(props["seq"]), props.get("lane", ""), zlib.crc32(msg.payload),
                     msg.payload.hex() if keep == "1" else ""])
c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sub-" + str(time.time_ns()),
                protocol=MQTTProtocolVersion.MQTTv5)
c.tls_set_context(ctx)
c.on_connect = lambda cl, u, f, r, p: cl.subscribe(topic, qos=1)
c.on_subscribe = lambda cl, u, mid, r, p: ready.set()
c.on_message = on_message
c.connect(host, int(port))
c.loop_start()
if not ready.wait(10):
    sys.exit("not subscribed")
print("ready", flush=True)
idle = float(sys.stdin.readline() or 5)  # the parent writes the idle time when it is done
end = time.monotonic() + 900
while time.monotonic() < end and time.monotonic() - last[0] < idle:
    time.sleep(0.05)
c.disconnect()
c.loop_stop()
with open(out, "w") as f:
    json.dump(rows, f)
"""


#: (arrival monotonic s, seq, lane, CRC-32 of the payload, payload or b"")
Row = tuple[float, int, str, int, bytes]


class Recorder:
    """A paho v5 subscriber (TLS 1.3, client cert) in its own process (so it does not share
    the publisher's interpreter), recording (arrival, seq, lane, payload CRC[, payload])."""

    def __init__(
        self, broker: MosquittoBroker, topic: str, folder: Path, keep_payloads: bool = False
    ) -> None:
        crt, key = broker.client_files(f"bench-sub-{uuid.uuid4().hex[:6]}")
        self.out = folder / f"sub-{uuid.uuid4().hex[:6]}.json"
        args = [
            str(broker.host),
            str(broker.port),
            str(broker.ca_file),
            str(crt),
            str(key),
            topic,
            str(self.out),
        ]
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SUBSCRIBER, *args, "1" if keep_payloads else "0"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout is not None
        if self.proc.stdout.readline().strip() != "ready":
            self.proc.kill()
            raise RuntimeError("subscriber did not subscribe")
        self.rows: list[Row] = []

    def finish(
        self, idle_s: float = 5.0, timeout_s: float = 900.0
    ) -> list[tuple[float, int, str, int, bytes]]:
        """Wait until nothing arrived for `idle_s`, then collect every row."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(f"{idle_s}\n")
        self.proc.stdin.flush()
        self.proc.wait(timeout=timeout_s)
        raw = json.loads(self.out.read_text())
        self.rows = [(r[0], r[1], r[2], r[3], bytes.fromhex(r[4])) for r in raw]
        return self.rows


def check_stream(rows: list[Row], first: int, last: int) -> dict[str, int]:
    seen: dict[int, int] = {}
    dup, bad = 0, 0
    for _, seq, _, payload, _ in rows:
        if seq in seen:
            dup += 1
            bad += seen[seq] != payload
        else:
            seen[seq] = payload
    lost = sum(1 for s in range(first, last + 1) if s not in seen)
    return {"lost": lost, "duplicates": dup, "undetectable_duplicates": bad}


def cloud_doc(broker: MosquittoBroker, pki_dir: Path) -> dict[str, Any]:
    return {
        "broker_host": broker.host,
        "broker_port": broker.port,
        "ca_file": str(pki_dir / "ca.crt"),
        "cert_dir": str(pki_dir),
        "outbox_dir": "outbox",
        "reconnect_min_s": 0.2,
        "reconnect_max_s": 1.0,
    }


def live(folder: Path, broker: MosquittoBroker, pki_dir: Path, writes: int, rate: float) -> dict[str, Any]:
    ports = free_ports(6)
    doc = {
        "cluster": "bench",
        "zone": ZONE,
        "raft": {"secret_file": "secret/raft.secret", "data_dir": "data"},
        "cloud": cloud_doc(broker, pki_dir),
        "nodes": [
            {"id": f"n{i + 1}", "address": "127.0.0.1", "raft_port": ports[2 * i],
             "api_port": ports[2 * i + 1],
             "devices": [{"id": f"n{i + 1}-bat", "kind": "battery", "min_kw": -50, "max_kw": 50}]}
            for i in range(3)
        ],
    }  # fmt: skip
    folder.mkdir(parents=True)
    for n in ("n1", "n2", "n3"):
        pki.issue(pki_dir, n, "node", force=True)
    path = folder / "cluster.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = load_config(path)
    init_secret(cfg.secret_path)
    lc = LocalCluster(cfg, str(path), read_secret(cfg.secret_path), folder / "logs")
    acks: dict[str, tuple[float, float]] = {}
    errors = 0
    rec: Recorder | None = None
    try:
        lc.start_all()
        # subscribed while the nodes start (no setpoint is written before it is)
        rec = Recorder(broker, f"meshems/{ZONE}/setpoints", folder, keep_payloads=True)
        leader = cfg.node(lc.wait_leader(20))
        end = time.monotonic() + 10  # the leader's link to the broker up (it publishes)
        while time.monotonic() < end:
            cloud = lc.client.request(leader, "GET", "/v1/status")[1].get("cloud") or {}
            if cloud.get("publishing") and str(cloud.get("link", "")).startswith("connected"):
                break
            time.sleep(0.05)
        t_next = time.monotonic()
        for i in range(writes):
            t_next += 1.0 / rate
            rid = f"live-{i}"
            data = commands.encode(
                "set_setpoint", rid, device_id="n2-bat", kw=(i % 90) - 45.0, source="bench"
            )
            start = time.monotonic()
            _, body = lc.client.request(leader, "POST", "/v1/propose", data, timeout_s=5)
            if body.get("ok"):
                acks[rid] = (start, time.monotonic())
            else:
                errors += 1
            time.sleep(max(0.0, t_next - time.monotonic()))
        rec.finish(idle_s=IDLE_S or 2.0)
        status = lc.client.status_all()
    finally:
        if rec is not None and rec.proc.poll() is None:
            rec.proc.kill()
        for node_id in list(lc.procs):  # all at once: their shutdowns overlap
            lc.signal(node_id, signal.SIGTERM)
        lc.stop_all()
    assert rec is not None
    by_rid: dict[str, float] = {}
    for t, _, _, _, payload in rec.rows:
        rid = telemetry.parse_payload(payload)["data"].get("rid")
        by_rid.setdefault(rid, t)
    from_commit = [(by_rid[r] - a[1]) * 1000 for r, a in acks.items() if r in by_rid]
    from_start = [(by_rid[r] - a[0]) * 1000 for r, a in acks.items() if r in by_rid]
    seqs = [r[1] for r in rec.rows]
    span = (max(by_rid.values()) - min(by_rid.values())) if by_rid else 0.0
    first, last = (min(seqs), max(seqs)) if seqs else (1, 0)
    return {
        "writes": writes,
        "acknowledged": len(acks),
        "errors": errors,
        "delivered": len(by_rid),
        "rate": (len(by_rid) - 1) / span if span else 0.0,
        "p50_commit": statistics.median(from_commit) if from_commit else float("nan"),
        "p99_commit": pct(from_commit, 99),
        "p50_start": statistics.median(from_start) if from_start else float("nan"),
        "p99_start": pct(from_start, 99),
        "check": check_stream(rec.rows, first, last),
        "leader_cloud": next((r.get("cloud") for r in status if r.get("role") == "leader"), None),
    }


#: seconds of quiet after which a subscriber has seen everything (--idle-s; default 2 live, 5 else)
IDLE_S: float | None = None


def synthetic(n: int, t0: float) -> list[Record]:
    """A one-hour backlog: 100 devices at 1 Hz, one record per reading."""
    out = []
    for seq in range(1, n + 1):
        dev = f"d{seq % 100:03d}"
        body = {"node": "n1", "report_seq": seq, "readings": {dev: {"state": "ok", "power_kw": seq % 97 * 0.5,
                "energy_kwh": seq * 0.01, "soc_pct": 50.0}}, "node_grid_kw": 12.5,
                "zone": {"grid_kw": 12.5, "import_kw": 12.5, "export_kw": 0.0, "complete": True}}  # fmt: skip
        rec = telemetry.TelemetryRecord(seq, 3, 1000 + seq, "node", "n1", body)
        out.append(Record(seq, t0 + seq / 100.0, telemetry.topic("meshems", ZONE, "node", "n1"),
                          telemetry.payload(rec, ZONE)))  # fmt: skip
    return out


def drain(folder: Path, broker: MosquittoBroker, pki_dir: Path, n: int, cap: float = 0.0) -> dict[str, Any]:
    folder.mkdir(parents=True)
    pki.issue(pki_dir, "d1", "node", force=True)
    doc = {
        "cluster": "bench",
        "zone": ZONE,
        "raft": {"secret_file": "secret/raft.secret", "data_dir": "data"},
        "cloud": {**cloud_doc(broker, pki_dir), "drain_max_msgs_s": cap},
        "nodes": [{"id": "d1", "address": "127.0.0.1", "raft_port": 1, "api_port": 2}],
    }
    path = folder / "cluster.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = load_config(path)
    records = synthetic(n, time.time() - 3600)
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    committed: list[int] = []

    async def propose(data: bytes) -> dict[str, Any]:
        committed.append(commands.decode(data).fields["seq"])  # type: ignore[union-attr]
        return {"ok": True}

    state = ZoneState(telemetry_seq=n)
    cs = CloudSync(cfg, "d1", is_leader=lambda: True, state=lambda: state, propose=propose)
    ob = Outbox(cs.outbox_path, 1 << 40, 7 * 86400.0)
    t = time.monotonic()
    for i in range(0, n, 5000):
        ob.append(records[i : i + 5000], time.time())
    fill_s = time.monotonic() - t
    ob.close()
    cs.derived_seq = n
    rec = Recorder(broker, f"meshems/{ZONE}/#", folder)
    live_sent: dict[int, float] = {}
    stop = threading.Event()

    def live_feed() -> None:
        seq = n
        while not stop.is_set():
            seq += 1
            zone = {"grid_kw": 1.0, "import_kw": 1.0, "export_kw": 0.0, "complete": True}
            body = {"node": "n1", "report_seq": seq, "readings": {}, "node_grid_kw": 1.0, "zone": zone}
            r = telemetry.TelemetryRecord(seq, 3, 1000 + seq, "node", "n1", body)
            live_sent[seq] = time.monotonic()
            cs.derived_seq = seq
            cs.pending.put(Record(seq, time.time(), telemetry.topic("meshems", ZONE, "node", "n1"),
                                  telemetry.payload(r, ZONE)))  # fmt: skip
            stop.wait(0.1)

    t0 = time.monotonic()
    cs.bridge.bind(loop)
    cs.start()
    feeder = threading.Thread(target=live_feed, daemon=True)
    feeder.start()
    end = t0 + 600
    while time.monotonic() < end and cs.publisher.acked_through < n:
        time.sleep(0.02)
    acked_s = time.monotonic() - t0
    stop.set()
    feeder.join()
    last_live = max(live_sent) if live_sent else n
    end = time.monotonic() + 30
    while time.monotonic() < end and cs.publisher.acked_through < last_live:
        time.sleep(0.05)
    rec.finish(idle_s=IDLE_S or 5.0)
    cs.stop()
    loop.call_soon_threadsafe(loop.stop)
    arrivals: dict[int, float] = {}
    for t_, seq, _, _, _ in rec.rows:
        arrivals.setdefault(seq, t_)
    backlog_arrivals = [arrivals[s] for s in range(1, n + 1) if s in arrivals]
    live_lat = [(arrivals[s] - t_) * 1000 for s, t_ in live_sent.items() if s in arrivals]
    live_during = [
        (arrivals[s] - t_) * 1000 for s, t_ in live_sent.items() if s in arrivals and t_ < t0 + acked_s
    ]
    live_ack = list(cs.stats.live_ack_ms)
    sub_s = (max(backlog_arrivals) - t0) if backlog_arrivals else float("nan")
    return {
        "records": n,
        "fill_s": fill_s,
        "acked_s": acked_s,
        "drain_msgs_s": n / acked_s,
        "subscriber_s": sub_s,
        "live_during_drain": len(live_during),
        "live_p50_ms": statistics.median(live_lat) if live_lat else float("nan"),
        "live_p99_ms": pct(live_lat, 99),
        "live_during_p99_ms": pct(live_during, 99),
        "live_ack_n": len(live_ack),
        "live_ack_p50_ms": statistics.median(live_ack) if live_ack else float("nan"),
        "live_ack_p99_ms": pct(live_ack, 99),
        "watermark_commits": len(committed),
        "check": check_stream(rec.rows, 1, last_live),
    }


def raw(broker: MosquittoBroker, pki_dir: Path, n: int, folder: Path) -> dict[str, Any]:
    key, crt = pki.issue(pki_dir, "raw", "client", force=True)
    link = MqttLink(broker.host, broker.port, pki_dir / "ca.crt", crt, key, client_id="bench-raw")
    records = synthetic(n, time.time())
    rec = Recorder(broker, f"meshems/{ZONE}/#", folder)  # the same subscriber load as the drain
    link.start()
    end = time.monotonic() + 10
    while not link.connected and time.monotonic() < end:
        time.sleep(0.01)
    acked, sent, inflight = 0, 0, 0
    t0 = time.monotonic()
    end = t0 + 600
    while acked < n and time.monotonic() < end:
        got = len(link.drain_acks())
        acked += got
        inflight -= got
        while inflight < link.max_inflight and sent < n:
            r = records[sent]
            link.publish(r.topic, r.payload, telemetry.user_properties(r.seq, 3, 1000 + r.seq, ZONE), 3600)
            sent += 1
            inflight += 1
        if inflight >= link.max_inflight or sent >= n:
            time.sleep(0.001)
    took = time.monotonic() - t0
    link.stop()
    rows = rec.finish(idle_s=IDLE_S or 5.0)
    return {"raw_msgs_s": acked / took, "raw_acked": acked, "raw_delivered": len({r[1] for r in rows})}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run for a smoke test")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument(
        "--drain-cap", type=float, default=0.0, help="cloud.drain_max_msgs_s for the drain (0: none)"
    )
    ap.add_argument(
        "--idle-s",
        type=float,
        help="seconds without a message before the subscriber stops counting "
        "(default 2 s after the live writes, 5 s after the raw loop and the drain)",
    )
    ap.add_argument(
        "--records", type=int, help="backlog drained, and raw messages (default 360,000; quick 5,000)"
    )
    ap.add_argument("--writes", type=int, help="live setpoint writes at 20/s (default 600; quick 40)")
    args = ap.parse_args()
    global IDLE_S
    IDLE_S = args.idle_s
    n = args.records or (5_000 if args.quick else 360_000)
    writes, rate = (args.writes or (40 if args.quick else 600)), 20.0
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    folder = Path(tempfile.mkdtemp(prefix="meshems-cloud-bench-"))
    pki_dir = folder / "pki"
    pki.init_ca(pki_dir, "bench-ca")
    extra = ("max_queued_messages 0", "max_inflight_messages 0", "max_queued_bytes 0")
    try:
        with MosquittoBroker(folder, pki_dir, extra_config=extra, log_all=False) as broker:
            say(f"bench: live telemetry, {writes} setpoint writes at {rate:g}/s through a 3-node cluster...")
            lv = live(folder / "live", broker, pki_dir, writes, rate)
            say(f"bench: raw paho publish loop, {n} messages...")
            rw = raw(broker, pki_dir, n, folder)
            say(f"bench: draining a {n}-record backlog through CloudSync...")
            dr = drain(folder / "drain", broker, pki_dir, n, args.drain_cap)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out = {
        "live_writes": lv["writes"],
        "live_delivered": lv["delivered"],
        "live_rate_msgs_s": round(lv["rate"], 2),
        "live_p50_ms": round(lv["p50_commit"], 2),
        "live_p99_ms": round(lv["p99_commit"], 2),
        "live_from_write_p50_ms": round(lv["p50_start"], 2),
        "live_from_write_p99_ms": round(lv["p99_start"], 2),
        "drain_records": n,
        "drain_msgs_s": round(dr["drain_msgs_s"]),
        "raw_msgs_s": round(rw["raw_msgs_s"]),
        "drain_ratio_vs_raw": round(dr["drain_msgs_s"] / rw["raw_msgs_s"], 3),
        "drain_subscriber_s": round(dr["subscriber_s"], 2),
        "outbox_fill_s": round(dr["fill_s"], 2),
        "live_during_drain": dr["live_during_drain"],
        "live_during_drain_p50_ms": round(dr["live_p50_ms"], 2),
        "live_during_drain_p99_ms": round(dr["live_during_p99_ms"], 2),
        "watermark_commits": dr["watermark_commits"],
        "live_lane_during_drain": dr["live_ack_n"],
        "live_lane_ack_p50_ms": round(dr["live_ack_p50_ms"], 2),
        "live_lane_ack_p99_ms": round(dr["live_ack_p99_ms"], 2),
        "lost": lv["check"]["lost"] + dr["check"]["lost"],
        "duplicates": lv["check"]["duplicates"] + dr["check"]["duplicates"],
        "undetectable_duplicates": lv["check"]["undetectable_duplicates"]
        + dr["check"]["undetectable_duplicates"],
        "errors": lv["errors"],
    }
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{'metric':<66}{'value':>14}")
    rows = [
        ("live: setpoint writes / delivered", f"{lv['writes']} / {lv['delivered']}"),
        ("live: delivered rate (msgs/s)", f"{lv['rate']:.1f}"),
        ("live: commit ack -> subscriber p50 / p99 (ms)", f"{lv['p50_commit']:.1f} / {lv['p99_commit']:.1f}"),
        ("live: write sent -> subscriber p50 / p99 (ms)", f"{lv['p50_start']:.1f} / {lv['p99_start']:.1f}"),
        (f"drain: {n} records, all acked by the broker (msgs/s)"
         + (f", capped at {args.drain_cap:g}/s" if args.drain_cap else ""), f"{dr['drain_msgs_s']:.0f}"),
        ("raw paho loop, same payloads, 250 in flight (msgs/s)", f"{rw['raw_msgs_s']:.0f}"),
        ("drain / raw", f"{dr['drain_msgs_s'] / rw['raw_msgs_s']:.2f}"),
        ("drain: last backlog record at the subscriber (s)", f"{dr['subscriber_s']:.1f}"),
        ("drain: filling the outbox beforehand (s)", f"{dr['fill_s']:.1f}"),
        ("live during the drain, derived -> broker ack: n / p50 / p99 (ms)",
         f"{dr['live_ack_n']} / {dr['live_ack_p50_ms']:.1f} / {dr['live_ack_p99_ms']:.1f}"),
        ("live during the drain, -> subscriber: n / p50 / p99 (ms)",
         f"{dr['live_during_drain']} / {dr['live_p50_ms']:.1f} / {dr['live_during_p99_ms']:.1f}"),
        ("lost / duplicates / undetectable duplicates",
         f"{out['lost']} / {out['duplicates']} / {out['undetectable_duplicates']}"),
    ]  # fmt: skip
    for name, value in rows:
        print(f"{name:<66}{value:>14}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
