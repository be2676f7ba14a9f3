#!/usr/bin/env python3
"""Cloud ingest benchmark on a local mosquitto (TLS 1.3, client certificates) and a local
PostgreSQL (a throw-away cluster, fsync on), both started here, in one run.

1. Throughput: a backlog of N telemetry records from 1,000 zones is queued on the broker for
   K offline sessions of one shared subscription; then K worker processes resume them and
   drain it: the real `IngestWorker` into SQLite, into PostgreSQL, and a raw paho subscriber
   loop (receive and acknowledge, nothing else; plain paho: its own PUBLISH decoding and a
   PUBACK per message, where the worker's `mqtt_fastpath` decodes and acks its own way) as
   the baseline, K = 1 and 2. Rate = records / (last commit - the workers' connect); per
   worker = rate / K; database rows/s counts the records and readings rows written; CPU µs
   per message = the workers' process CPU time from `go` to their stop / records (a figure
   the shared machine's load moves less). `--quick` runs K = 1 only.
2. Lag: 1,000 zones x 1 msg/s published live for a while to 2 workers per store;
   end-to-end lag = the batch's commit - the record's publish time, p50/p99.
Every record is checked stored exactly once. Never asserts on time.

    python scripts/bench/ingest_bench.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
from meshems.core import telemetry
from tests.mqtt_broker import MosquittoBroker

TARGET_PER_WORKER, TARGET_RATIO = 5000.0, 0.5
DEVICES = ("meter", "bat")


def record(zone: str, seq: int, t_pub: float) -> tuple[str, bytes, list[tuple[str, str]]]:
    """One leader record (about 300 B msgpack): two device readings and the publish time."""
    body = {"node": "n1", "t_pub": t_pub,
            "readings": {f"n1-{d}": {"state": "ok", "values": {"power_kw": seq % 97 / 10, "soc_pct": 55.5}}
                         for d in DEVICES}}  # fmt: skip
    rec = telemetry.TelemetryRecord(seq, 2, 100 + seq, "node", "n1", body)
    props = [*telemetry.user_properties(seq, 2, 100 + seq, zone), ("publisher", "n1")]
    return telemetry.topic("meshems", zone, "node", "n1"), telemetry.payload(rec, zone), props


# -- the worker processes (this script with --worker) -------------------------------------------


def worker_main(args: argparse.Namespace) -> int:
    """Open the store, say ready, wait for `go` on stdin, drain until `stop`; write figures."""
    from meshems.adapters.config_file import load_yaml
    from meshems.core.cloud_config import parse_cloud_config

    cfg = parse_cloud_config(load_yaml(args.worker), args.worker)
    if args.kind == "raw":
        return raw_worker(cfg, args)
    from meshems.cloud.ingest import IngestWorker, make_subscriber
    from meshems.cloud.store import open_store

    timed = Timed(open_store(cfg))
    worker = IngestWorker(cfg, make_subscriber(cfg, args.client_id), store=lambda: timed)
    print("ready", flush=True)
    sys.stdin.readline()
    timed.first, cpu0 = time.time(), time.process_time()  # from `go`: setup counts, as for raw
    stop = threading.Event()
    threading.Thread(target=steer, args=(lambda: timed.stored, stop, args.max_s), daemon=True).start()
    stats = worker.run(stop)
    out = {**timed.figures(), "cpu_s": time.process_time() - cpu0, "stats": stats.__dict__}
    Path(args.out).write_text(json.dumps(out))
    return 0


def steer(count: Any, stop: threading.Event, max_s: float) -> None:
    """Print the count whenever it changes (the parent sums them) until the parent writes
    `stop` on stdin (or `max_s` passed)."""
    threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
    end, last = time.monotonic() + max_s, -1
    while not stop.wait(0.05) and time.monotonic() < end:
        if count() != last:
            last = count()
            print(last, flush=True)
    stop.set()


class Timed:
    """The store with the times the benchmark needs: first arrival, last commit, each new
    record's lag from its publish time to the commit, and the rows written."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.first = self.last = 0.0
        self.stored = self.rows = 0
        self.lags_ms: list[float] = []

    def ingest(self, records: Any, gaps: Any = ()) -> Any:
        out = self.inner.ingest(records, gaps)
        now = time.time()
        self.last = now
        self.stored += len(out.new)
        new = {(a.zone, a.seq) for a in out.new}
        for r in records:
            if (r.arrival.zone, r.arrival.seq) in new:
                self.rows += 1 + len(r.readings)
                self.lags_ms.append((now - float(r.doc["data"]["t_pub"])) * 1000)
        return out

    def figures(self) -> dict[str, Any]:
        return {"first": self.first, "last": self.last, "stored": self.stored, "rows": self.rows,
                "lags_ms": self.lags_ms}  # fmt: skip

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def raw_worker(cfg: Any, args: argparse.Namespace) -> int:
    """A raw paho v5 loop on the same session: count and acknowledge, nothing else."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    from meshems.adapters.mqtt_link import client_tls_context

    seen = {"n": 0, "first": 0.0, "last": 0.0}

    def on_message(c: Any, u: Any, msg: Any) -> None:
        seen["last"] = time.time()
        seen["n"] += 1

    c = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=args.client_id, protocol=MQTTProtocolVersion.MQTTv5
    )
    c.tls_set_context(
        client_tls_context(cfg.path(cfg.ca_file), cfg.path(cfg.cert_file), cfg.path(cfg.key_file))
    )
    c.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = cfg.session_expiry_s
    props.ReceiveMaximum = cfg.receive_maximum
    print("ready", flush=True)
    sys.stdin.readline()
    seen["first"], cpu0 = time.time(), time.process_time()
    c.connect(cfg.broker_host, cfg.broker_port, clean_start=False, properties=props)
    c.loop_start()
    steer(lambda: seen["n"], threading.Event(), args.max_s)
    c.disconnect()
    c.loop_stop()
    out = {"first": seen["first"], "last": seen["last"], "stored": seen["n"], "rows": 0, "lags_ms": [],
           "cpu_s": time.process_time() - cpu0}  # fmt: skip
    Path(args.out).write_text(json.dumps(out))
    return 0


# -- the parent: broker, database, publishing, runs ------------------------------------------


class Bench:
    def __init__(
        self,
        folder: Path,
        broker: MosquittoBroker,
        pg_url: str,
        pg_pw: Path,
    ) -> None:
        self.folder, self.broker, self.pg_url, self.pg_pw = folder, broker, pg_url, pg_pw
        self.crt, self.key = broker.client_files("ingest")
        pub_crt, pub_key = broker.client_files("bench-pub", "node")
        self.pub = Publisher(broker, pub_crt, pub_key)
        self.runs = 0
        self.say: Any = print

    def config(self, kind: str, group: str) -> Path:
        b = self.broker
        doc: dict[str, Any] = {"broker_host": b.host, "broker_port": b.port, "ca_file": str(b.ca_file),
                               "cert_file": str(self.crt), "key_file": str(self.key), "share_group": group,
                               "session_expiry_s": 600}  # fmt: skip
        doc["store"] = str(self.folder / f"{group}.sqlite3")
        if kind == "postgres":
            doc["store"] = self.pg_url.rsplit("/", 1)[0] + "/" + group.replace("-", "_")
            doc["password_file"] = str(self.pg_pw)
        path = self.folder / f"{group}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    def start_workers(self, kind: str, cfg: Path, ids: list[str], max_s: float) -> list[tuple[Any, Path]]:
        procs = []
        for cid in ids:
            out = self.folder / f"{cid}.json"
            with open(self.folder / f"{cid}.log", "wb") as err:
                p = subprocess.Popen(
                    [sys.executable, __file__, "--worker", str(cfg), "--kind", kind, "--client-id", cid,
                     "--out", str(out), "--max-s", str(max_s)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err, text=True,
                )  # fmt: skip
            procs.append((p, out))
        for (p, _), cid in zip(procs, ids, strict=True):
            assert p.stdout is not None
            if p.stdout.readline().strip() != "ready":
                p.wait(timeout=10)
                err = (self.folder / f"{cid}.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"a {kind} worker ({cid}) did not start (exit {p.returncode}):\n{err}")
        return procs

    def go(self, procs: list[tuple[Any, Path]]) -> list[int]:
        """Start the workers; their counts as they print them (a thread per worker)."""
        counts = [0] * len(procs)

        def read(i: int, p: Any) -> None:
            for line in p.stdout:
                if line.strip().isdigit():
                    counts[i] = int(line)

        for i, (p, _) in enumerate(procs):
            p.stdin.write("go\n")
            p.stdin.flush()
            threading.Thread(target=read, args=(i, p), daemon=True).start()
        return counts

    def wait_for(self, counts: list[int], n: int, stall_s: float = 10.0) -> None:
        """Until the workers' counts sum to `n`, or nothing moved for `stall_s`."""
        last, moved = -1, time.monotonic()
        while sum(counts) < n and time.monotonic() - moved < stall_s:
            if sum(counts) != last:
                last, moved = sum(counts), time.monotonic()
            time.sleep(0.02)

    def finish(self, procs: list[tuple[Any, Path]], timeout_s: float) -> list[dict[str, Any]]:
        for p, _ in procs:
            p.stdin.write("stop\n")
            p.stdin.flush()
        out = []
        for p, path in procs:
            try:
                p.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)
            if not path.exists():
                tail = path.with_suffix(".log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"worker {path.stem} wrote no figures (exit {p.returncode}):\n{tail}")
            out.append(json.loads(path.read_text()))
        return out

    def throughput(self, kind: str, workers: int, n: int, zones: int) -> dict[str, Any]:
        self.runs += 1
        group = f"t{self.runs}-{kind}-{workers}"
        cfg = self.config(kind, group)
        ids = [f"{group}-w{i}" for i in range(workers)]
        if kind == "postgres":
            self.create_db(group.replace("-", "_"))
        self.pub.sessions(ids, f"$share/{group}/meshems/+/#")  # subscribed, then away: the broker queues
        procs = self.start_workers(kind, cfg, ids, max_s=300)  # imports and store opened meanwhile
        t0 = time.monotonic()
        self.pub.backlog(n, zones)
        t1 = time.monotonic()
        self.wait_for(self.go(procs), n)
        res = self.finish(procs, 30)
        self.say(f"  published in {t1 - t0:.1f} s, drained in {time.monotonic() - t1:.1f} s")
        first = min(r["first"] for r in res if r.get("first"))
        last = max(r["last"] for r in res if r.get("last"))
        took = max(last - first, 1e-6)
        stored = sum(r["stored"] for r in res)
        rows = sum(r["rows"] for r in res)
        cpu_us = sum(r["cpu_s"] for r in res) / max(stored, 1) * 1e6
        return {"msgs_s": stored / took, "per_worker": stored / took / workers, "stored": stored,
                "rows_s": rows / took, "shares": [r["stored"] for r in res], "cpu_us": cpu_us}  # fmt: skip

    def lag(self, kind: str, workers: int, zones: int, seconds: float) -> dict[str, Any]:
        self.runs += 1
        group = f"l{self.runs}-{kind}-{workers}"
        cfg = self.config(kind, group)
        ids = [f"{group}-w{i}" for i in range(workers)]
        if kind == "postgres":
            self.create_db(group.replace("-", "_"))
        self.pub.sessions(ids, f"$share/{group}/meshems/+/#")
        procs = self.start_workers(kind, cfg, ids, max_s=seconds + 60)
        counts = self.go(procs)
        time.sleep(0.5)  # connected and subscribed (their sessions resume)
        sent = self.pub.paced(zones, seconds)
        self.wait_for(counts, sent)
        res = self.finish(procs, 30)
        lags = [x for r in res for x in r.get("lags_ms", [])]
        return {"sent": sent, "stored": sum(r.get("stored", 0) for r in res),
                "p50_ms": pct(lags, 50), "p99_ms": pct(lags, 99)}  # fmt: skip

    def create_db(self, name: str) -> None:
        import psycopg

        with psycopg.connect(self.pg_url, password=self.pg_pw.read_text().strip(), autocommit=True) as db:
            db.execute(f'CREATE DATABASE "{name}"')


class Publisher:
    """A raw paho v5 publisher (QoS 1, 1,000 in flight) on its own connection."""

    def __init__(self, broker: MosquittoBroker, crt: Path, key: Path) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

        from meshems.adapters.mqtt_link import client_tls_context

        self.broker, self.tls = broker, client_tls_context(broker.ca_file, crt, key)
        self.mqtt, self.versions = mqtt, (CallbackAPIVersion.VERSION2, MQTTProtocolVersion.MQTTv5)
        self.c = self._client(f"bench-pub-{uuid.uuid4().hex[:6]}")
        self.c.max_inflight_messages_set(1000)
        self.c.max_queued_messages_set(0)
        self.c.connect(broker.host, broker.port)
        self.c.loop_start()
        self.seq: dict[str, int] = {}

    def _client(self, cid: str) -> Any:
        c = self.mqtt.Client(self.versions[0], client_id=cid, protocol=self.versions[1])
        c.tls_set_context(self.tls)
        return c

    def sessions(self, ids: list[str], topic: str) -> None:
        """Each id's persistent session subscribed to `topic`, then disconnected."""
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        for cid in ids:
            c, done = self._client(cid), threading.Event()
            c.on_subscribe = lambda *a, done=done: done.set()
            c.on_connect = lambda cl, *a: cl.subscribe(topic, qos=1)
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = 600
            c.connect(self.broker.host, self.broker.port, clean_start=True, properties=props)
            c.loop_start()
            if not done.wait(10):
                raise RuntimeError(f"{cid}: no SUBACK")
            c.disconnect()
            c.loop_stop()

    def _send(self, zone: str) -> Any:
        seq = self.seq[zone] = self.seq.get(zone, 0) + 1
        topic, payload, props = record(zone, seq, time.time())
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        p = Properties(PacketTypes.PUBLISH)
        p.UserProperty = props
        return self.c.publish(topic, payload, qos=1, properties=p)

    def backlog(self, n: int, zones: int) -> None:
        self.seq = {}
        infos = [self._send(f"z{i % zones:04d}") for i in range(n)]
        for info in infos:
            info.wait_for_publish(60)

    def paced(self, zones: int, seconds: float) -> int:
        """`zones` records per second (each zone once a second) for `seconds`."""
        self.seq = {}
        t0, sent, infos = time.monotonic(), 0, []
        while (now := time.monotonic()) - t0 < seconds:
            due = int((now - t0) * zones)
            while sent < due:
                infos.append(self._send(f"z{sent % zones:04d}"))
                sent += 1
            time.sleep(0.005)
        for info in infos:
            info.wait_for_publish(60)
        return sent

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def mark(ok: bool) -> str:
    return "✓" if ok else "✗"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small run for a smoke test")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--records", type=int, help="backlog per throughput run (default 30,000; quick 2,000)")
    ap.add_argument("--lag-s", type=float, help="seconds of live 1,000 msgs/s (default 20; quick 2)")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--kind", help=argparse.SUPPRESS)
    ap.add_argument("--client-id", help=argparse.SUPPRESS)
    ap.add_argument("--out", help=argparse.SUPPRESS)
    ap.add_argument("--max-s", type=float, default=300.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker_main(args)
    from tests.pg_server import PgServer

    n = args.records or (1_000 if args.quick else 30_000)
    lag_s = args.lag_s or (1.0 if args.quick else 20.0)
    counts = (1,) if args.quick else (1, 2)  # quick: a smoke test, no scaling figure
    zones = 1000
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    folder = Path(tempfile.mkdtemp(prefix="meshems-ingest-bench-"))
    os.chmod(folder, 0o755)
    pki_dir = folder / "pki"
    pki.init_ca(pki_dir, "bench-ca")
    tp: dict[tuple[str, int], dict[str, Any]] = {}
    lags: dict[str, dict[str, Any]] = {}
    extra = ("max_queued_messages 0", "max_queued_bytes 0")
    pg = PgServer(settings=())  # fsync on: a real commit; started beside the broker
    pg_started = threading.Thread(target=pg.start, daemon=True)
    pg_started.start()
    try:
        with MosquittoBroker(folder, pki_dir, extra_config=extra, log_all=False) as b:
            bench = Bench(folder, b, pg.url(with_password=False), pg.password_file)
            bench.say = say
            try:
                pg_started.join(120)  # before any run: its start would take CPU from the run
                if not pg.started:
                    raise RuntimeError(f"PostgreSQL did not start:\n{pg.log_tail()}")
                for kind in ("raw", "sqlite", "postgres"):
                    for k in counts:
                        say(f"bench: {kind}, {k} worker(s), a backlog of {n} records from {zones} zones...")
                        tp[(kind, k)] = bench.throughput(kind, k, n, zones)
                for kind in ("sqlite", "postgres"):
                    say(f"bench: {kind}, {counts[-1]} worker(s), {zones} zones x 1 msg/s for {lag_s:g} s...")
                    lags[kind] = bench.lag(kind, counts[-1], zones, lag_s)
            finally:
                bench.pub.close()
    finally:
        pg_started.join(120)
        pg.close()
        shutil.rmtree(folder, ignore_errors=True)
    out = figures(tp, lags, n, zones, counts[-1])
    if args.json:
        print(json.dumps(out))
        return 0
    print(f"{'':<50}{'sqlite':>12}{'postgres':>12}{'raw paho':>12}")
    rows = [
        ("msgs/s, 1 worker", "ingest_msgs_s_{}", out["raw_msgs_s"]),
        ("msgs/s, 2 workers (total)", "ingest_msgs_s_{}_2_workers", out["raw_msgs_s_2_workers"]),
        ("msgs/s per worker, 2 workers", "ingest_per_worker_{}_2_workers", out["raw_per_worker_2_workers"]),
        ("scaling 2 / 1 workers", "scaling_2_vs_1_{}", out["scaling_2_vs_1_raw"]),
        ("ratio to raw (1 worker)", "ratio_vs_raw_{}", "1.00"),
        ("worker CPU µs per message (1 worker)", "cpu_us_per_msg_{}", out["raw_cpu_us_per_msg"]),
        ("database rows/s (records + readings), 1 worker", "db_rows_s_{}", "-"),
        ("every seq stored once (1 and 2 workers)", "stored_once_{}", "-"),
        (f"lag p50 ms ({zones} zones x 1 msg/s, {counts[-1]} worker(s))", "lag_p50_ms_{}", "-"),
        (f"lag p99 ms ({zones} zones x 1 msg/s, {counts[-1]} worker(s))", "lag_p99_ms_{}", "-"),
    ]  # fmt: skip
    for label, key, raw in rows:
        cells = [out[key.format(k)] for k in ("sqlite", "postgres")] + [raw]
        print(f"{label:<50}" + "".join(f"{'-' if c is None else c!s:>12}" for c in cells))
    print(f"one run per cell (no medians: each drains its own backlog of {n} records from {zones} zones)")
    for kind in ("sqlite", "postgres"):
        per, ratio = out[f"ingest_msgs_s_{kind}"], out[f"ratio_vs_raw_{kind}"]
        print(f"target {kind}: >= {TARGET_PER_WORKER:.0f} msgs/s per worker {mark(per >= TARGET_PER_WORKER)}"
              f" ({per}), >= {TARGET_RATIO}x raw {mark(ratio >= TARGET_RATIO)} ({ratio})")  # fmt: skip
    return 0


def figures(
    tp: dict[tuple[str, int], dict[str, Any]], lags: dict[str, dict[str, Any]], n: int, zones: int, lag_k: int
) -> dict[str, Any]:
    """The JSON object: per store and the raw loop; 2-worker figures None when not run."""
    raw1, raw2 = tp[("raw", 1)], tp.get(("raw", 2))
    out: dict[str, Any] = {
        "records": n,
        "zones": zones,
        "raw_msgs_s": round(raw1["per_worker"]),
        "raw_cpu_us_per_msg": round(raw1["cpu_us"], 1),
        "raw_msgs_s_2_workers": round(raw2["msgs_s"]) if raw2 else None,
        "raw_per_worker_2_workers": round(raw2["per_worker"]) if raw2 else None,
        "scaling_2_vs_1_raw": round(raw2["msgs_s"] / raw1["msgs_s"], 2) if raw2 else None,
        "raw_received_all": all(r["stored"] >= n for (k, _), r in tp.items() if k == "raw"),
        "lag_workers": lag_k,
        "lag_p99_ms": round(max(lags[k]["p99_ms"] for k in lags), 1),
    }
    for kind in ("sqlite", "postgres"):
        one, two = tp[(kind, 1)], tp.get((kind, 2))
        out |= {
            f"ingest_msgs_s_{kind}": round(one["per_worker"]),
            f"cpu_us_per_msg_{kind}": round(one["cpu_us"], 1),
            f"ingest_msgs_s_{kind}_2_workers": round(two["msgs_s"]) if two else None,
            f"ingest_per_worker_{kind}_2_workers": round(two["per_worker"]) if two else None,
            f"scaling_2_vs_1_{kind}": round(two["msgs_s"] / one["msgs_s"], 2) if two else None,
            f"ratio_vs_raw_{kind}": round(one["per_worker"] / raw1["per_worker"], 3),
            f"db_rows_s_{kind}": round(one["rows_s"]),
            f"stored_once_{kind}": all(r["stored"] == n for (k, _), r in tp.items() if k == kind),
            f"lag_p50_ms_{kind}": round(lags[kind]["p50_ms"], 1),
            f"lag_p99_ms_{kind}": round(lags[kind]["p99_ms"], 1),
            f"lag_sent_{kind}": lags[kind]["sent"],
            f"lag_stored_{kind}": lags[kind]["stored"],
        }
    return out


if __name__ == "__main__":
    sys.exit(main())
