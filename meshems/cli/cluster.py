"""`meshems secret init | node run | status | setpoint set/get | member add/remove`: the
cluster's secret, its node daemon and its replicated state, read and written over the API.

Owns these commands' arguments and output; Raft and the daemon live in `meshems.node` and
the node API. Imports what a command uses inside it (`status` needs no schema, `node run` all).
"""

from __future__ import annotations

import sys
from typing import Any

from meshems.cli.args import add_command, add_group, add_output
from meshems.cli.output import fail, print_json

EXAMPLES = {
    "secret init": "meshems secret init --config cluster-configs/local-3.yaml",
    "node run": "meshems node run --config cluster-configs/local-3.yaml --node n1",
    "status": "meshems status --config cluster-configs/local-3.yaml -o json",
    "setpoint set": "meshems setpoint set --config cluster-configs/local-3.yaml n1-bat -12.5",
    "setpoint get": "meshems setpoint get --config cluster-configs/local-3.yaml n1-bat -o json",
    "member add": "meshems member add --config cluster-configs/local-4.yaml n4",
    "member remove": "meshems member remove --config cluster-configs/local-4.yaml n4",
}


def add_parsers(sub: Any) -> None:
    """Add `secret`, `node`, `status`, `setpoint` and `member` to the top-level subparsers."""
    secret = add_group(sub, "secret", "manage the cluster's Raft secret")
    s = add_command(
        secret, "init", "create the Raft secret file (mode 0600) the config names", EXAMPLES["secret init"]
    )
    s.add_argument("--force", action="store_true", help="replace an existing secret")
    s.set_defaults(run=cmd_secret_init)

    node = add_group(sub, "node", "run a node")
    s = add_command(
        node, "run", "run one gateway's node daemon (one process per gateway)", EXAMPLES["node run"]
    )
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
    s.add_argument(
        "--allow-root",
        action="store_true",
        help="run even as root (the lab and local test clusters); a gateway runs it as the meshems user",
    )
    s.set_defaults(run=cmd_node_run)

    s = add_command(
        sub, "status", "show every node's Raft status, like etcdctl endpoint status", EXAMPLES["status"]
    )
    add_output(s)
    s.add_argument("--timeout", type=float, default=1.5, help="per-node timeout in seconds")
    s.set_defaults(run=cmd_status)

    sp = add_group(sub, "setpoint", "write or read committed setpoints")
    s = add_command(
        sp, "set", "write a setpoint through Raft (returns after commit)", EXAMPLES["setpoint set"]
    )
    s.add_argument("device_id", metavar="DEVICE_ID")
    s.add_argument("kw", metavar="KW", type=float, help="kW; + delivers to the site, - consumes")
    s.add_argument("--node", "-n", help="node to send it through (default: any)")
    s.add_argument("--rid", help="request id (default: random; reuse it to retry safely)")
    add_output(s)
    s.set_defaults(run=cmd_setpoint_set)
    s = add_command(sp, "get", "read committed setpoints with their term and index", EXAMPLES["setpoint get"])
    s.add_argument("device_id", metavar="DEVICE_ID", nargs="?")
    s.add_argument("--node", "-n", help="node to read from (default: first that answers)")
    s.add_argument(
        "--consistent",
        action="store_true",
        help="commit a barrier first, so the read reflects every earlier commit",
    )
    add_output(s)
    s.set_defaults(run=cmd_setpoint_get)

    mem = add_group(sub, "member", "change cluster membership at run time")
    for action in ("add", "remove"):
        s = add_command(
            mem,
            action,
            f"{action} a node (declared in the config) "
            f"{'to' if action == 'add' else 'from'} the running cluster",
            EXAMPLES[f"member {action}"],
        )
        s.add_argument("node_id", metavar="NODE_ID")
        add_output(s)
        s.set_defaults(run=cmd_member, action=action)


def cmd_secret_init(args: Any) -> int:
    from meshems.adapters.api_tls import ensure_zone_pki
    from meshems.adapters.config_file import load_config
    from meshems.adapters.secret import init_secret

    cfg = load_config(args.config)
    path = init_secret(cfg.secret_path, force=args.force)
    print(f"wrote the Raft secret to {path.resolve()} (mode 0600); copy it to every gateway")
    for made in ensure_zone_pki(cfg):
        print(f"created {made} (the zone's HTTPS API; keys 0600 beside it)")
    return 0


def cmd_node_run(args: Any) -> int:
    from meshems import logs
    from meshems.adapters.config_file import load_config
    from meshems.node.daemon import run_node
    from meshems.node.service import refuse_root

    refuse_root(args.allow_root)  # E_ROOT before anything is read or written
    cfg = load_config(args.config)
    logs.setup(args.node, args.log_level)
    return run_node(cfg, args.node, args.config, reset_journal=args.reset_journal, trace_file=args.trace)


def cmd_status(args: Any) -> int:
    from meshems.cli.api import connect

    cfg, client = connect(args)
    rows = client.status_all(timeout_s=args.timeout)
    if args.output == "json":
        print_json(rows)
    else:
        from meshems.cli.output import out_console, status_table

        out_console().print(status_table(rows))
        up = [r for r in rows if r.get("reachable")]
        if up:
            _print_summary(cfg.zone, rows, up)
    if not any(r.get("reachable") for r in rows):
        print("error E_UNREACHABLE: no node answered", file=sys.stderr)
        return 1
    return 0


def _print_summary(zone: str, rows: list[dict[str, Any]], up: list[dict[str, Any]]) -> None:
    leader = next((r for r in up if r["role"] == "leader"), None)
    print(
        f"zone {zone}: leader {leader['id'] if leader else 'none'}, "
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


def cmd_setpoint_set(args: Any) -> int:
    from meshems.cli.api import connect, new_rid
    from meshems.core import commands

    _, client = connect(args)
    rid = args.rid or new_rid()
    data = commands.encode("set_setpoint", rid, device_id=args.device_id, kw=args.kw, source="operator")
    res = client.propose(data, prefer=args.node)
    if args.output == "json":
        print_json({**res, "rid": rid})
    elif res.get("ok"):
        dup = " (already applied earlier: retry deduplicated)" if res.get("duplicate") else ""
        print(
            f"committed {args.device_id} = {args.kw} kW at term {res['term']}, index "
            f"{res['index']}{dup}  [rid {rid}]"
        )
    else:
        fail(res.get("code"), res.get("message"))
    return 0 if res.get("ok") else 1


def cmd_setpoint_get(args: Any) -> int:
    from meshems.cli.api import connect, new_rid
    from meshems.core import commands
    from meshems.core.errors import MeshemsError

    _, client = connect(args)
    if args.consistent:
        client.propose(commands.encode("barrier", new_rid()), prefer=args.node)
    path = "/v1/setpoints" + (f"?device={args.device_id}" if args.device_id else "")
    last_err = "no node answered"
    for node in client.ordered_nodes(args.node):
        try:
            code, body = client.request(node, "GET", path)
        except MeshemsError as exc:
            last_err = exc.message
            continue
        if code != 200:
            return fail(body.get("code"), body.get("message"))
        if args.output == "json":
            print_json(body["setpoints"])
        else:
            from meshems.cli.output import out_console, table

            caption = f"read from {body['node']} at applied index {body['applied_index']}"
            t = table("DEVICE", "KW", "TERM", "INDEX", "SOURCE", "RID", caption=caption)
            for sp in body["setpoints"]:
                cells = (sp["device_id"], f"{sp['kw']:g}", str(sp["term"]), str(sp["index"]), sp["source"])
                t.add_row(*cells, sp["rid"])
            out_console().print(t)
        return 0
    return fail("E_UNREACHABLE", last_err)


def cmd_member(args: Any) -> int:
    from meshems.cli.api import client_for, view

    cfg = view(args)
    cfg.node(args.node_id)
    res = client_for(cfg, args).members(args.action, args.node_id)
    if args.output == "json":
        print_json(res)
    elif res.get("ok"):
        print(res["message"])
    else:
        fail(res.get("code"), res.get("message"))
    return 0 if res.get("ok") else 1
