"""`meshems cloud ingest | zones | query | twin`: the cloud side's telemetry ingest and what
it stored, on the command line. Owns these commands' arguments and output (tables, JSON,
CSV); the work is `meshems.cloud` and `adapters.ingest_store`'s, imported inside commands.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from meshems.cli.args import add_command, add_group, add_output

if TYPE_CHECKING:
    from meshems.cloud.store import IngestStore
    from meshems.core.cloud_config import CloudIngestConfig

CLOUD_CONFIG_HELP = "cloud config (YAML): broker, client certificate, share_group, topic_prefix, store"
EXAMPLES = {
    "ingest": "meshems cloud ingest --config cloud.yaml  (another worker: --client-id ingest-2)",
    "zones": "meshems cloud zones --config cloud.yaml -o json",
    "query": "meshems cloud query --config cloud.yaml --zone zone-a --device n1-meter --since 1h -o csv",
    "twin": "meshems cloud twin --config cloud.yaml --zone zone-a",
}


def add_parsers(sub: Any) -> None:
    """Add `cloud ingest`, `cloud zones`, `cloud query` and `cloud twin`."""
    cloud = add_group(sub, "cloud", "the cloud side: ingest the zones' telemetry from the broker and read it")

    def add(name: str, help_: str) -> Any:
        sp = add_command(cloud, name, help_, EXAMPLES[name], config=False)
        sp.add_argument("--config", "-c", required=True, help=CLOUD_CONFIG_HELP)
        return sp

    s = add("ingest", "subscribe to every zone's telemetry (a shared subscription) and store each seq once")
    s.add_argument("--client-id", help="this worker's MQTT client id (default: the config's client_id)")
    s.set_defaults(run=cmd_ingest)
    s = add(
        "zones", "per zone: publisher, last seq, contiguous through, missing, announced gaps, lag, msgs/s"
    )
    add_output(s)
    s.set_defaults(run=cmd_zones)
    s = add("query", "a zone's stored records (or one device's readings) received since a time")
    s.add_argument("--zone", required=True)
    s.add_argument("--node", help="only this node's records")
    s.add_argument("--device", help="this device's readings instead of whole records")
    s.add_argument("--since", default="1h", help="received within, e.g. 90s, 30m, 1h, 2d (default 1h)")
    s.add_argument("-o", "--output", choices=["table", "json", "csv"], default="table")
    s.set_defaults(run=cmd_query)
    s = add("twin", "the latest reading of every device of a zone (the digital twin)")
    s.add_argument("--zone", required=True)
    add_output(s)
    s.set_defaults(run=cmd_twin)
    from meshems.cli import cloud_deploy, cloud_send  # light too: they import only args at the top

    cloud_send.add_parsers(cloud)  # keygen, send: signed commands down to a zone
    cloud_deploy.add_parsers(cloud)  # deploy: a signed payload bundle down to a zone


def load(path: str) -> CloudIngestConfig:
    from meshems.adapters.config_file import load_yaml
    from meshems.core.cloud_config import parse_cloud_config

    return parse_cloud_config(load_yaml(path), path)


def _store(args: Any) -> IngestStore:
    from meshems.cloud.store import open_store

    return open_store(load(args.config))


def cmd_ingest(args: Any) -> int:
    import signal
    import threading

    from meshems import logs
    from meshems.cloud.ingest import IngestWorker, make_subscriber

    cfg = load(args.config)
    logs.setup(args.client_id or cfg.client_id)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    worker = IngestWorker(cfg, make_subscriber(cfg, args.client_id))
    stats = worker.run(stop)
    return 1 if stats.store_errors and not stats.stored else 0


def _ranges(ranges: list[list[int]]) -> str:
    text = ", ".join(f"{a}" if a == b else f"{a}..{b}" for a, b in ranges[:4])
    return (text + (f" (+{len(ranges) - 4})" if len(ranges) > 4 else "")) or "-"


def cmd_zones(args: Any) -> int:
    import time

    from meshems.cli.output import out_console, print_json, table

    store = _store(args)
    now = time.time()
    rows = [z.to_dict(now) for z in store.zones(now)]
    store.close()
    if args.output == "json":
        print_json(rows)
        return 0
    cols = ("ZONE", "PUBLISHER", "LAST SEQ", "CONTIGUOUS", "MISSING", "ANNOUNCED", "DUPS", "CONFLICTS", "LAG",
            "MSGS/S")  # fmt: skip
    t = table(*cols, right=("LAST SEQ", "CONTIGUOUS", "DUPS", "CONFLICTS", "LAG", "MSGS/S"))
    for r in rows:
        conflicts = f"[red]{r['conflicts']}[/red]" if r["conflicts"] else "0"
        lag = "-" if r["lag_s"] is None else f"{r['lag_s']:.0f}s"
        t.add_row(r["zone"], r["publisher"] or "-", str(r["last_seq"]), str(r["contiguous_through"]),
                  _ranges(r["missing"]), _ranges(r["announced"]), str(r["duplicates"]), conflicts, lag,
                  f"{r['msgs_s']:.1f}")  # fmt: skip
    out_console().print(t)
    return 0


def cmd_query(args: Any) -> int:
    import time

    from meshems.cli.relay import duration_s

    try:
        since = time.time() - duration_s(args.since)
    except ValueError as exc:
        print(f"error E_USAGE: --since: {exc}", file=sys.stderr)
        return 2
    store = _store(args)
    try:
        rows = store.query(args.zone, since_s=since, node=args.node, device=args.device)
    finally:
        store.close()
    _print_rows(rows, args.output, "values" if args.device else "data")
    return 0


def cmd_twin(args: Any) -> int:
    store = _store(args)
    try:
        rows = store.twin(args.zone)
    finally:
        store.close()
    _print_rows(rows, args.output, "values")
    return 0


def _print_rows(rows: list[dict[str, Any]], output: str, nested: str) -> None:
    """JSON as stored; CSV and tables with the nested mapping flattened to one column per key."""
    import json

    from meshems.cli.output import out_console, print_json, table

    if output == "json":
        print_json(rows)
        return
    flat = []
    for r in rows:
        inner = r.get(nested)
        row = {k: v for k, v in r.items() if k != nested}
        if nested == "values" and isinstance(inner, dict):
            row.update(inner)
        else:
            row[nested] = json.dumps(inner, sort_keys=True, separators=(",", ":"))
        flat.append(row)
    cols = list(dict.fromkeys(k for r in flat for k in r))
    if output == "csv":
        import csv

        w = csv.DictWriter(sys.stdout, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(flat)
        return
    t = table(*(c.upper() for c in cols))
    for r in flat:
        t.add_row(*(str(r.get(c, "")) if r.get(c) is not None else "-" for c in cols))
    out_console().print(t)
