"""The `meshems` command: argument parsing, output (tables or JSON) and exit codes.

Owns presentation only: every subcommand calls the runtime or the API client. Exit codes:
0 ok, 1 the operation failed, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import json
import sys
import uuid
from typing import Any

from rich.console import Console
from rich.table import Table

from meshems.adapters.config_file import load_config
from meshems.adapters.secret import init_secret, read_secret
from meshems.cli_pki import PKI_HANDLERS, add_pki_parser
from meshems.core import commands
from meshems.core.config import ClusterConfig
from meshems.core.errors import ConfigError, MeshemsError
from meshems.lab.cli import add_lab_parser, run_lab
from meshems.ops.client import NodeClient

EXAMPLES = {
    "secret init": "meshems secret init --config cluster-configs/local-3.yaml",
    "node run": "meshems node run --config cluster-configs/local-3.yaml --node n1",
    "status": "meshems status --config cluster-configs/local-3.yaml -o json",
    "setpoint set": "meshems setpoint set --config cluster-configs/local-3.yaml n1-bat -12.5",
    "setpoint get": "meshems setpoint get --config cluster-configs/local-3.yaml n1-bat -o json",
    "member add": "meshems member add --config cluster-configs/local-4.yaml n4",
    "member remove": "meshems member remove --config cluster-configs/local-4.yaml n4",
    "demo": "meshems demo --config cluster-configs/local-3.yaml",
    "sim": "meshems sim --site cluster-configs/sites/site-n1.yaml",
    "policy set": "meshems policy set --config cluster-configs/local-3.yaml import_limit_kw=40 "
    "shed_order=n1-relays:4,n2-relays:4",
    "policy get": "meshems policy get --config cluster-configs/local-3.yaml -o json",
    "explain": "meshems explain --config cluster-configs/local-3.yaml n1-bat",
    "overlay keygen": "meshems overlay keygen --config cluster-configs/local-3.yaml",
    "overlay render": "meshems overlay render --config cluster-configs/local-3.yaml --node n1",
    "overlay up": "meshems overlay up --config cluster-configs/local-3.yaml --node n1",
    "overlay down": "meshems overlay down --config cluster-configs/local-3.yaml --node n1",
    "overlay status": "meshems overlay status --config cluster-configs/local-3.yaml --node n1 -o json",
    "forecast fit": "meshems forecast fit --config cluster-configs/local-3.yaml --node n1 --csv load.csv",
    "devices": "meshems devices --config cluster-configs/local-3.yaml -o json",
}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="meshems",
        description="An edge energy-management mesh: gateways that govern a microgrid over Raft.",
        epilog="Example: " + EXAMPLES["status"],
    )
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")

    def add(parent: Any, name: str, key: str, help_: str) -> argparse.ArgumentParser:
        sp = parent.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=f"Example: {EXAMPLES[key]}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sp.add_argument("--config", "-c", required=True, help="cluster config (YAML)")
        return sp

    secret = sub.add_parser("secret", help="manage the cluster's Raft secret").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND"
    )
    s = add(secret, "init", "secret init", "create the Raft secret file (mode 0600) the config names")
    s.add_argument("--force", action="store_true", help="replace an existing secret")

    node = sub.add_parser("node", help="run a node").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND"
    )
    s = add(node, "run", "node run", "run one gateway's node daemon (one process per gateway)")
    s.add_argument("--node", "-n", required=True, help="node id from the config")
    s.add_argument(
        "--reset-journal",
        action="store_true",
        help="move this node's Raft files aside and catch up from its peers",
    )
    s.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])
    s.add_argument(
        "--trace",
        metavar="FILE",
        help="append every applied entry and actuated setpoint to FILE (for the lab's fault checker)",
    )

    s = add(sub, "status", "status", "show every node's Raft status, like etcdctl endpoint status")
    s.add_argument("-o", "--output", choices=["table", "json"], default="table")
    s.add_argument("--timeout", type=float, default=1.5, help="per-node timeout in seconds")

    sp = sub.add_parser("setpoint", help="write or read committed setpoints").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND"
    )
    s = add(sp, "set", "setpoint set", "write a setpoint through Raft (returns after commit)")
    s.add_argument("device_id", metavar="DEVICE_ID")
    s.add_argument("kw", metavar="KW", type=float, help="kW; + delivers to the site, - consumes")
    s.add_argument("--node", "-n", help="node to send it through (default: any)")
    s.add_argument("--rid", help="request id (default: random; reuse it to retry safely)")
    s.add_argument("-o", "--output", choices=["table", "json"], default="table")
    s = add(sp, "get", "setpoint get", "read committed setpoints with their term and index")
    s.add_argument("device_id", metavar="DEVICE_ID", nargs="?")
    s.add_argument("--node", "-n", help="node to read from (default: first that answers)")
    s.add_argument(
        "--consistent",
        action="store_true",
        help="commit a barrier first, so the read reflects every earlier commit",
    )
    s.add_argument("-o", "--output", choices=["table", "json"], default="table")

    mem = sub.add_parser("member", help="change cluster membership at run time").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND"
    )
    for action in ("add", "remove"):
        s = add(
            mem,
            action,
            f"member {action}",
            f"{action} a node (declared in the config) "
            f"{'to' if action == 'add' else 'from'} the running cluster",
        )
        s.add_argument("node_id", metavar="NODE_ID")
        s.add_argument("-o", "--output", choices=["table", "json"], default="table")

    s = sub.add_parser(
        "sim",
        help="run simulated DER devices as real Modbus servers",
        description="run simulated DER devices (meter, battery, PV, relays) as real Modbus "
        "servers with site physics and fault injection",
        epilog=f"Example: {EXAMPLES['sim']}",
    )
    s.add_argument("--site", required=True, help="site file (YAML)")
    s.add_argument("--ready-file", help="write the bound ports here as JSON once serving")

    pol = sub.add_parser(
        "policy", help="show or change the zone policy (committed through Raft)"
    ).add_subparsers(dest="sub", required=True, metavar="SUBCOMMAND")
    s = add(pol, "set", "policy set", "change zone policy fields (KEY=VALUE; lists comma-separated)")
    s.add_argument("values", nargs="+", metavar="KEY=VALUE")
    s = add(pol, "get", "policy get", "show the committed zone policy, envelopes and last dispatch")
    s.add_argument("-o", "--output", choices=["table", "json"], default="table")

    s = add(
        sub, "explain", "explain", "why a device has its current setpoint: cycle, term, controller, inputs"
    )
    s.add_argument("device_id", metavar="DEVICE_ID", help="a device id, or a load RELAY_DEVICE:CHANNEL")
    s.add_argument("-o", "--output", choices=["table", "json"], default="table")

    ov = sub.add_parser("overlay", help="WireGuard overlay keys and configs").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND"
    )
    s = add(ov, "keygen", "overlay keygen", "create WireGuard keys (X25519; private key 0600) for the nodes")
    s.add_argument("--node", "-n", help="only this node (default: every node without keys)")
    s.add_argument("--force", action="store_true", help="replace existing keys")
    s = add(ov, "render", "overlay render", "print a node's wg-quick config with every peer")
    s.add_argument("--node", "-n", required=True)
    for verb, text in (
        ("up", "bring this gateway's overlay interface up (idempotent; root)"),
        ("down", "remove this gateway's overlay interface (root)"),
        ("status", "per-peer handshake age and transfer counters"),
    ):
        s = add(ov, verb, f"overlay {verb}", text)
        s.add_argument("--node", "-n", required=True)
        if verb == "status":
            s.add_argument("-o", "--output", choices=["table", "json"], default="table")

    fc = sub.add_parser("forecast", help="fit a node's load forecaster").add_subparsers(
        dest="sub", required=True, metavar="SUBCOMMAND"
    )
    s = add(
        fc,
        "fit",
        "forecast fit",
        "fit a node's load forecaster on its history (CSV: unix_time_s,kw at "
        "15-minute steps) and save it as DATA_DIR/NODE/forecast.npz; the node loads it at start",
    )
    s.add_argument("--node", "-n", required=True)
    s.add_argument(
        "--csv",
        help="history: one 'unix_time_s,kw' row per 15 minutes (8+ weeks); default: the "
        "history the node recorded itself (DATA_DIR/NODE/load_history.npz)",
    )
    s.add_argument("--version", type=int, default=1)

    s = add(sub, "devices", "devices", "show every field device of the nodes: health, rates, errors")
    s.add_argument("--node", "-n", help="only this node")
    s.add_argument("-o", "--output", choices=["table", "json"], default="table")

    s = add(sub, "demo", "demo", "start a local mesh from the config and show it live (Ctrl-C stops)")
    s.add_argument("--duration", type=float, default=0, help="stop after S seconds (0 = until Ctrl-C)")
    s.add_argument("--no-writes", action="store_true", help="do not write demo setpoints (without a policy)")
    s.add_argument(
        "--chaos",
        type=float,
        default=0,
        metavar="N",
        help="kill -9 the leader every N seconds (restarted 3 s later) to show control continuing",
    )
    add_lab_parser(sub)
    add_pki_parser(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    console = Console(stderr=True)
    if args.cmd == "sim":
        from meshems.sim_main import run_sim

        return run_sim(args.site, args.ready_file)
    try:
        if args.cmd == "lab":
            return run_lab(args)
        cfg = load_config(args.config)
        handler = HANDLERS[(args.cmd, getattr(args, "sub", None))]
        return handler(cfg, args)
    except MeshemsError as exc:
        console.print(
            f"[red]error[/red] {exc.code}: {exc.message}",
            highlight=False,
            markup=True,
            soft_wrap=True,
        )
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


def _client(cfg: ClusterConfig, args: Any) -> NodeClient:
    return NodeClient(cfg, read_secret(cfg.secret_path, args.config))


def out_console() -> Console:
    """stdout console; a pipe or file gets full-width tables instead of 80 truncated columns."""
    return Console() if sys.stdout.isatty() else Console(width=200)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, indent=2, default=str))


def cmd_secret_init(cfg: ClusterConfig, args: Any) -> int:
    path = init_secret(cfg.secret_path, force=args.force)
    print(f"wrote the Raft secret to {path.resolve()} (mode 0600); copy it to every gateway")
    return 0


def cmd_node_run(cfg: ClusterConfig, args: Any) -> int:
    from meshems import logs
    from meshems.runtime import run_node

    logs.setup(args.node, args.log_level)
    return run_node(cfg, args.node, args.config, reset_journal=args.reset_journal, trace_file=args.trace)


def _size(n: float) -> str:
    for unit in ("B", "K", "M", "G"):
        if n < 1024 or unit == "G":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.1f}G"  # pragma: no cover


def overlay_cell(peers: Any) -> str:
    """WireGuard peers as `n2 3s rx 1.2K tx 3.4K, ...`: handshake age and transfer counters
    per peer, stale ones marked."""
    if peers is None:
        return "-"
    if isinstance(peers, dict):
        return f"[red]{str(peers.get('error', '?'))[:60]}[/red]"
    parts = []
    for p in peers:
        age = "never" if p.get("handshake_age_s") is None else f"{p['handshake_age_s']:.0f}s"
        text = f"{p['peer']} {age} rx {_size(p.get('rx_bytes', 0))} tx {_size(p.get('tx_bytes', 0))}"
        parts.append(f"[red]{text} stale[/red]" if p.get("stale") else text)
    return ", ".join(parts)


def status_table(rows: list[dict[str, Any]]) -> Table:
    t = Table(title=None, show_lines=False, header_style="bold")
    overlay = any(r.get("overlay") is not None for r in rows)
    cols = ["ID", "ENDPOINT", "REACHABLE", "ROLE", "TERM", "COMMIT", "APPLIED", "LAG", "QUORUM", "UPTIME"]
    cols += ["LEADER", *(["WG HANDSHAKES"] if overlay else [])]
    for col in cols:
        t.add_column(col, justify="right" if col in ("TERM", "COMMIT", "APPLIED", "LAG") else "left")
    for r in rows:
        if not r.get("reachable"):
            t.add_row(r["id"], r["endpoint"], "[red]no[/red]", *["-"] * (len(cols) - 3))
            continue
        role = r["role"]
        role_s = f"[bold green]{role}[/bold green]" if role == "leader" else role
        t.add_row(
            r["id"],
            r["endpoint"],
            "yes",
            role_s,
            str(r["term"]),
            str(r["commit_index"]),
            str(r["applied_index"]),
            "-" if r.get("lag") is None else str(r["lag"]),
            "yes" if r["has_quorum"] else "[red]no[/red]",
            f"{r['uptime_s']:.0f}s",
            r.get("leader") or "-",
            *([overlay_cell(r.get("overlay"))] if overlay else []),
        )
    return t


def cmd_status(cfg: ClusterConfig, args: Any) -> int:
    rows = _client(cfg, args).status_all(timeout_s=args.timeout)
    if args.output == "json":
        _print_json(rows)
    else:
        out_console().print(status_table(rows))
        up = [r for r in rows if r.get("reachable")]
        if up:
            leader = next((r for r in up if r["role"] == "leader"), None)
            print(
                f"zone {cfg.zone}: leader {leader['id'] if leader else 'none'}, "
                f"{up[0]['devices']} devices, {up[0]['setpoints']} setpoints, "
                f"{sum(1 for r in rows if not r.get('reachable'))} unreachable"
            )
            cloud = (leader or up[0]).get("cloud")
            if cloud:
                age = cloud.get("oldest_unsent_age_s")
                print(
                    f"cloud: {cloud.get('link')} via {(leader or up[0])['id']}, backlog "
                    f"{cloud.get('backlog')} records, oldest unsent "
                    f"{'-' if age is None else f'{age:.0f} s'}, acknowledged through "
                    f"{cloud.get('acked_through')}, dropped {cloud.get('dropped')}"
                )
            alarms = sorted({a for r in up for a in r.get("alarms") or []})
            if alarms:
                print(f"alarms: {', '.join(alarms)}")
    if not any(r.get("reachable") for r in rows):
        print("error E_UNREACHABLE: no node answered", file=sys.stderr)
        return 1
    return 0


def cmd_setpoint_set(cfg: ClusterConfig, args: Any) -> int:
    rid = args.rid or f"cli-{uuid.uuid4().hex}"
    data = commands.encode("set_setpoint", rid, device_id=args.device_id, kw=args.kw, source="operator")
    res = _client(cfg, args).propose(data, prefer=args.node)
    if args.output == "json":
        _print_json({**res, "rid": rid})
    elif res.get("ok"):
        dup = " (already applied earlier: retry deduplicated)" if res.get("duplicate") else ""
        print(
            f"committed {args.device_id} = {args.kw} kW at term {res['term']}, index "
            f"{res['index']}{dup}  [rid {rid}]"
        )
    else:
        print(f"error {res.get('code')}: {res.get('message')}", file=sys.stderr)
    return 0 if res.get("ok") else 1


def cmd_setpoint_get(cfg: ClusterConfig, args: Any) -> int:
    client = _client(cfg, args)
    if args.consistent:
        client.propose(commands.encode("barrier", f"cli-{uuid.uuid4().hex}"), prefer=args.node)
    path = "/v1/setpoints" + (f"?device={args.device_id}" if args.device_id else "")
    last_err = "no node answered"
    for node in client.ordered_nodes(args.node):
        try:
            code, body = client.request(node, "GET", path)
        except MeshemsError as exc:
            last_err = exc.message
            continue
        if code != 200:
            print(f"error {body.get('code')}: {body.get('message')}", file=sys.stderr)
            return 1
        if args.output == "json":
            _print_json(body["setpoints"])
        else:
            t = Table(
                header_style="bold",
                caption=f"read from {body['node']} at applied index {body['applied_index']}",
            )
            for col in ("DEVICE", "KW", "TERM", "INDEX", "SOURCE", "RID"):
                t.add_column(col)
            for sp in body["setpoints"]:
                t.add_row(
                    sp["device_id"],
                    f"{sp['kw']:g}",
                    str(sp["term"]),
                    str(sp["index"]),
                    sp["source"],
                    sp["rid"],
                )
            out_console().print(t)
        return 0
    print(f"error E_UNREACHABLE: {last_err}", file=sys.stderr)
    return 1


def _member(cfg: ClusterConfig, args: Any, action: str) -> int:
    cfg.node(args.node_id)
    res = _client(cfg, args).members(action, args.node_id)
    if args.output == "json":
        _print_json(res)
    elif res.get("ok"):
        print(res["message"])
    else:
        print(f"error {res.get('code')}: {res.get('message')}", file=sys.stderr)
    return 0 if res.get("ok") else 1


def cmd_devices(cfg: ClusterConfig, args: Any) -> int:
    client = _client(cfg, args)
    nodes = [cfg.node(args.node)] if args.node else list(cfg.nodes)
    rows: list[dict[str, Any]] = []
    answered = 0
    for node in nodes:
        try:
            code, body = client.request(node, "GET", "/v1/devices")
        except MeshemsError as exc:
            print(f"warning: {node.id} unreachable: {exc.message}", file=sys.stderr)
            continue
        if code != 200:
            print(f"warning: {node.id}: {body.get('code')}: {body.get('message')}", file=sys.stderr)
            continue
        answered += 1
        rows += [{"node": node.id, **d} for d in body["devices"]]
    if args.output == "json":
        _print_json(rows)
    else:
        t = Table(header_style="bold")
        for col in (
            "NODE",
            "DEVICE",
            "KIND",
            "BUS",
            "UNIT",
            "STATE",
            "AGE",
            "RATE",
            "POLLS",
            "TIMEOUTS",
            "CRC",
            "FRAME",
            "EXCEPTIONS",
            "VALUES",
        ):
            t.add_column(col)
        for r in rows:
            state = r["state"]
            color = {"ok": "green", "stale": "yellow", "defective": "red"}.get(state, "white")
            values = ", ".join(f"{k}={v:.2f}" for k, v in sorted(r["values"].items()))
            exc = ", ".join(f"{k}:{v}" for k, v in sorted(r["exceptions"].items())) or "-"
            t.add_row(
                r["node"],
                r["id"],
                r["kind"],
                str(r["bus"]),
                str(r["unit_id"]),
                f"[{color}]{state}[/{color}]",
                "-" if r["age_s"] is None else f"{r['age_s']:.1f}s",
                "-" if r["rate_hz"] is None else f"{r['rate_hz']:.2f}/s",
                str(r["polls"]),
                str(r["timeouts"]),
                str(r["crc_errors"]),
                str(r["frame_errors"]),
                exc,
                values,
            )
        out_console().print(t)
    return 0 if answered else 1


BOOLEANS = {
    "true": True,
    "yes": True,
    "on": True,
    "1": True,
    "false": False,
    "no": False,
    "off": False,
    "0": False,
}


def _parse_policy_values(items: list[str]) -> dict[str, Any]:
    from meshems.core.policy import Policy

    defaults = Policy()
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not hasattr(defaults, key):
            raise ConfigError(
                f"policy: {item!r} is not KEY=VALUE with a known key ({', '.join(defaults.to_dict())})"
            )
        if key == "shed_order":
            out[key] = [x for x in raw.split(",") if x]
        elif key == "reserve_forecast":
            flag = BOOLEANS.get(raw.lower())
            if flag is None:
                raise ConfigError(f"policy: reserve_forecast needs true or false, got {raw!r}")
            out[key] = flag
        else:
            try:
                out[key] = float(raw)
            except ValueError:
                raise ConfigError(f"policy: {key} needs a number, got {raw!r}") from None
    return out


def cmd_policy_set(cfg: ClusterConfig, args: Any) -> int:
    values = _parse_policy_values(args.values)
    res = _client(cfg, args).propose(commands.encode("set_policy", f"cli-{uuid.uuid4().hex}", values=values))
    if res.get("ok"):
        print(f"policy committed at term {res['term']}, index {res['index']}: {values}")
        return 0
    print(f"error {res.get('code')}: {res.get('message')}", file=sys.stderr)
    return 1


def _first_answer(cfg: ClusterConfig, args: Any, path: str) -> tuple[int, dict[str, Any]]:
    client = _client(cfg, args)
    last = "no node answered"
    for node in client.ordered_nodes(getattr(args, "node", None)):
        try:
            return client.request(node, "GET", path)
        except MeshemsError as exc:
            last = exc.message
    raise MeshemsError(f"E_UNREACHABLE: {last}")


def cmd_policy_get(cfg: ClusterConfig, args: Any) -> int:
    _, body = _first_answer(cfg, args, "/v1/control")
    if args.output == "json":
        _print_json(body)
        return 0
    pol = body.get("policy")
    if pol is None:
        print("no policy committed yet (add a policy: section to the config, or meshems policy set)")
        return 0
    for k, v in pol.items():
        print(f"{k:>20}: {v}")
    ld = body.get("last_dispatch")
    if ld:
        print(
            f"last dispatch: cycle {ld['cycle']} at term {ld['term']}, index {ld['index']}: "
            + ", ".join(f"{k}={v:g}" for k, v in ld["inputs"].items())
        )
    for node, env in sorted(body.get("envelopes", {}).items()):
        print(
            f"envelope {node}: import <= {env['import_limit_kw']:.1f} kW, export <= "
            f"{env['export_limit_kw']:.1f} kW, SoC reserve {env['soc_reserve_pct']:.0f} %, shed {env['shed']}"
        )
    return 0


def cmd_explain(cfg: ClusterConfig, args: Any) -> int:
    from urllib.parse import quote

    code, body = _first_answer(cfg, args, f"/v1/explain?device={quote(args.device_id)}")
    if code != 200:
        print(f"error {body.get('code')}: {body.get('message')}", file=sys.stderr)
        return 1
    if args.output == "json":
        _print_json(body)
        return 0
    sp, relay, d = body.get("setpoint"), body.get("relay"), body.get("dispatch")
    if sp:
        print(
            f"{args.device_id}: {sp['kw']:g} kW, committed at term {sp['term']}, index {sp['index']} "
            f"(source {sp['source']})"
        )
    if relay:
        print(
            f"{args.device_id}: {'closed' if relay['closed'] else 'OPEN (shed)'} by {relay['controller']} "
            f"at term {relay['term']}, index {relay['index']}"
        )
    if d and d.get("controller"):
        print(
            f"set by controller '{d['controller']}' in dispatch cycle {d['cycle']} (term {d['term']}, index "
            f"{d['index']}): {d['reason']}"
        )
        print("inputs: " + ", ".join(f"{k}={v:g}" for k, v in d["inputs"].items()))
    elif sp:
        print("not set by dispatch (an operator or earlier write)")
    if body.get("reading"):
        print("latest reading: " + ", ".join(f"{k}={v:.2f}" for k, v in sorted(body["reading"].items())))
    return 0


def cmd_overlay_keygen(cfg: ClusterConfig, args: Any) -> int:
    from meshems.adapters.wireguard import key_paths, keygen

    if cfg.overlay is None:
        raise ConfigError(f"{cfg.source}: overlay: no overlay section in the config")
    nodes = [cfg.node(args.node)] if args.node else list(cfg.nodes)
    for n in nodes:
        if not args.force and not args.node and key_paths(cfg, n.id)[0].exists():
            print(f"{n.id}: keeping the existing key {key_paths(cfg, n.id)[0]}")
            continue
        path, public = keygen(cfg, n.id, force=args.force)
        print(f"{n.id}: public key {public} (private key {path}, mode 0600)")
    return 0


def cmd_overlay_render(cfg: ClusterConfig, args: Any) -> int:
    from meshems.adapters.wireguard import render

    print(render(cfg, args.node), end="")
    return 0


def cmd_overlay_up(cfg: ClusterConfig, args: Any) -> int:
    from meshems.adapters.wireguard import interface_name, up

    how = up(cfg, args.node)
    address = cfg.node(args.node).overlay_address
    print(f"{interface_name(cfg, args.node)} is up ({how}) with address {address}")
    return 0


def cmd_overlay_down(cfg: ClusterConfig, args: Any) -> int:
    from meshems.adapters.wireguard import down, interface_name

    print(f"{interface_name(cfg, args.node)} {'removed' if down(cfg, args.node) else 'was not there'}")
    return 0


def cmd_overlay_status(cfg: ClusterConfig, args: Any) -> int:
    from meshems.adapters.wireguard import peer_status

    rows = peer_status(cfg, args.node)
    if args.output == "json":
        _print_json(rows)
    else:
        for r in rows:
            age = "never" if r["handshake_age_s"] is None else f"{r['handshake_age_s']:.0f} s ago"
            flag = "  STALE" if r["stale"] else ""
            print(
                f"{r['peer']:>8}  {r['endpoint']:<24} handshake {age:<12} "
                f"rx {r['rx_bytes']} tx {r['tx_bytes']}{flag}"
            )
    return 1 if any(r["stale"] for r in rows) else 0


def cmd_forecast_fit(cfg: ClusterConfig, args: Any) -> int:
    import numpy as np

    from meshems.adapters.forecast_store import save
    from meshems.core.forecast import evaluate, fit

    cfg.node(args.node)
    if args.csv:
        try:
            rows = np.loadtxt(args.csv, delimiter=",", ndmin=2)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{args.csv}: cannot read 'unix_time_s,kw' rows: {exc}") from None
        t, kw = rows[:, 0], rows[:, 1]
    else:
        from meshems.adapters.forecast_store import load_history

        hist_path = cfg.data_dir(args.node) / "load_history.npz"
        history = load_history(hist_path)
        if history.t0_s is None or not history.values:
            raise ConfigError(f"{hist_path}: no recorded history yet; pass --csv")
        kw = history.series()
        t = history.t0_s + np.arange(len(kw)) * history.step_s
    try:
        model = fit(kw, float(t[0]), step_s=900.0, version=args.version)
        skill = evaluate(kw, float(t[0]), 900.0, train_days=max(8.0, len(kw) / 96 - 14), test_days=14)
    except ValueError as exc:
        raise ConfigError(f"{args.csv}: {exc}") from None
    path = cfg.data_dir(args.node) / "forecast.npz"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    digest = save(model, path)
    print(
        f"fitted on {model.fitted_on} steps; MAE {skill['mae_model_kw']:.2f} kW vs same time last week "
        f"{skill['mae_naive_kw']:.2f} kW (ratio {skill['ratio']:.2f}); saved {path} (sha256 {digest[:16]})"
    )
    return 0


def cmd_demo(cfg: ClusterConfig, args: Any) -> int:
    from meshems.demo import run_demo

    return run_demo(cfg, args.config, duration_s=args.duration, writes=not args.no_writes, chaos_s=args.chaos)


HANDLERS = {
    ("secret", "init"): cmd_secret_init,
    ("node", "run"): cmd_node_run,
    ("status", None): cmd_status,
    ("setpoint", "set"): cmd_setpoint_set,
    ("setpoint", "get"): cmd_setpoint_get,
    ("member", "add"): lambda c, a: _member(c, a, "add"),
    ("member", "remove"): lambda c, a: _member(c, a, "remove"),
    ("demo", None): cmd_demo,
    ("devices", None): cmd_devices,
    ("policy", "set"): cmd_policy_set,
    ("policy", "get"): cmd_policy_get,
    ("explain", None): cmd_explain,
    ("forecast", "fit"): cmd_forecast_fit,
    ("overlay", "keygen"): cmd_overlay_keygen,
    ("overlay", "render"): cmd_overlay_render,
    ("overlay", "up"): cmd_overlay_up,
    ("overlay", "down"): cmd_overlay_down,
    ("overlay", "status"): cmd_overlay_status,
    **PKI_HANDLERS,
}
