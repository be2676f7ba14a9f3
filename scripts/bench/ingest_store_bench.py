#!/usr/bin/env python3
"""The cloud ingest's store alone, without MQTT: N telemetry records of `ingest_bench`'s
shape from Z zones, decoded (`core.ingest_records.decode`) and stored by the SQLite store
(`adapters.ingest_store.SqliteStore.ingest`) in batches of B, as a worker does; K runs, each
into a new database. Prints msgs/s (wall) and µs of CPU per message, medians of the runs, and
checks every record stored once and each zone's watermark. Never asserts on time.

    python scripts/bench/ingest_store_bench.py [--records 20000] [--zones 1000] [--runs 3] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ingest_bench import record

from meshems.adapters.ingest_store import SqliteStore
from meshems.core.ingest_records import decode


def one_run(n: int, zones: int, batch: int) -> tuple[float, float]:
    """(msgs/s wall, µs CPU per message) of one run into a new database."""
    msgs = [record(f"z{i % zones:04d}", i // zones + 1, 1.0) for i in range(n)]
    with tempfile.TemporaryDirectory() as folder:
        store = SqliteStore(str(Path(folder) / "ingest.db"))
        t0, c0 = time.perf_counter(), time.process_time()
        for i in range(0, n, batch):
            store.ingest([decode(t, p, u, "meshems", 2.0) for t, p, u in msgs[i : i + batch]], [])
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        stored = sum(store.count(f"z{z:04d}") for z in range(zones))
        if stored != n or store.ledger("z0000").watermark != n // zones:
            raise SystemExit(f"stored {stored} of {n}, or a watermark is wrong")
        store.close()
    return n / wall, cpu / n * 1e6


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], epilog="Example: " + __doc__.split("\n\n")[1].strip()
    )
    p.add_argument("--records", type=int, default=20000)
    p.add_argument("--zones", type=int, default=1000)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--json", action="store_true", help="also print one JSON object")
    a = p.parse_args()
    runs = [one_run(a.records, a.zones, a.batch) for _ in range(a.runs)]
    rate = statistics.median(r for r, _ in runs)
    cpu_us = statistics.median(c for _, c in runs)
    print(f"ingest store only (SQLite): {a.records} records, {a.zones} zones, batches of {a.batch}")
    rates, cpus = ", ".join(f"{r:.0f}" for r, _ in runs), ", ".join(f"{c:.1f}" for _, c in runs)
    print(f"{'msgs/s (wall), median':34}{rate:>10.0f}   runs: {rates}")
    print(f"{'CPU per message (us), median':34}{cpu_us:>10.1f}   runs: {cpus}")
    print("every record stored once: yes")
    if a.json:
        print(json.dumps({"store_msgs_s": rate, "store_cpu_us_per_msg": cpu_us, "runs": a.runs,
                          "records": a.records, "stored_once": True}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
