"""`meshems pki init | issue | show`: the cloud uplink's certificate authority on the
command line. Owns these commands' arguments and output (tables or JSON); the certificates
are made by `adapters.pki` (cryptography is imported inside the commands). Must not print a
private key.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshems.cli.args import CONFIG_HELP, add_output

if TYPE_CHECKING:
    from meshems.core.config import ClusterConfig

EXAMPLES = {
    "pki init": "meshems pki init --config cluster-configs/local-3.yaml",
    "pki issue": "meshems pki issue --config cluster-configs/local-3.yaml --operator alice --role operate",
    "pki show": "meshems pki show --config cluster-configs/local-3.yaml -o json",
}


def add_parsers(sub: Any) -> None:
    """Add `pki init`, `pki issue` and `pki show` to the top-level subparsers."""
    parser = sub.add_parser(
        "pki", help="the cloud uplink's certificate authority (EC P-256, TLS 1.3 client certificates)"
    )
    pki_sub = parser.add_subparsers(dest="sub", required=True, metavar="SUBCOMMAND")

    def add(name: str, help_: str) -> Any:
        sp = pki_sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=f"Example: {EXAMPLES['pki ' + name]}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sp.add_argument("--config", "-c", required=True, help=CONFIG_HELP)
        sp.add_argument("--dir", help="PKI folder (default: cloud.pki_dir of the config, .meshems/pki)")
        return sp

    s = add("init", "create the certificate authority: ca.key (0600, folder 0700) and ca.crt")
    s.add_argument("--name", help="the CA's name (default: meshems-CLUSTER)")
    s.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    s.add_argument("--force", action="store_true", help="replace an existing CA (every certificate is void)")
    s.set_defaults(run=cmd_pki_init)

    s = add("issue", "issue a certificate signed by the CA: NAME.key (0600) and NAME.crt")
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("--node", metavar="ID", help="a node's client certificate (CN = node id)")
    who.add_argument("--client", metavar="NAME", help="a client certificate (CN = NAME), e.g. a cloud reader")
    who.add_argument(
        "--operator", metavar="NAME", help="an operator's certificate for the node API (with --role)"
    )
    who.add_argument(
        "--server", metavar="NAME", help="a broker certificate (CN = NAME; SAN localhost, 127.0.0.1, NAME)"
    )
    s.add_argument("--role", choices=["read", "operate", "admin"], help="an operator's role on the node API")
    s.add_argument("--days", type=int, default=825, help="validity in days (default 825)")
    s.add_argument(
        "--san", action="append", default=[], metavar="HOST_OR_IP", help="extra subject alternative name"
    )
    s.add_argument("--force", action="store_true", help="replace an existing key and certificate")
    s.set_defaults(run=cmd_pki_issue)

    s = add("show", "list the certificates with their expiry (exit code 1 when one has expired)")
    add_output(s)
    s.set_defaults(run=cmd_pki_show)


def pki_dir(cfg: ClusterConfig, args: Any) -> Path:
    """`--dir` as given, else the config's cloud.pki_dir (relative to the config file)."""
    from meshems.core.config import CloudConfig

    if getattr(args, "dir", None):
        return Path(args.dir)
    relative = cfg.cloud.pki_dir if cfg.cloud is not None else CloudConfig.model_fields["pki_dir"].default
    return cfg.path(relative)


def cmd_pki_init(args: Any) -> int:
    from meshems.adapters import pki
    from meshems.adapters.config_file import load_config

    cfg = load_config(args.config)
    folder = pki_dir(cfg, args)
    name = args.name or f"meshems-{cfg.cluster}"
    cert = pki.init_ca(folder, name, days=args.days, force=args.force)
    print(f"created CA {name!r}: {cert} (key {folder / pki.CA_KEY}, mode 0600); valid {args.days} days")
    return 0


def cmd_pki_issue(args: Any) -> int:
    from meshems.adapters import pki
    from meshems.adapters.config_file import load_config

    cfg = load_config(args.config)
    kind: pki.Kind
    if args.node:
        cfg.node(args.node)  # ConfigError naming the known nodes when it is not declared
        kind, cn = "node", args.node
    elif args.client:
        kind, cn = "client", args.client
    elif args.operator:
        if args.role is None:
            print("error E_USAGE: --operator needs --role read|operate|admin", file=sys.stderr)
            return 2
        kind, cn = "operator", args.operator
    else:
        kind, cn = "server", args.server
    if kind == "node":
        from meshems.adapters.api_tls import node_sans

        args.san = [*node_sans(cfg.node(cn)), *args.san]  # the node API is reached at these
    role = args.role if kind == "operator" else None
    key, cert = pki.issue(
        pki_dir(cfg, args), cn, kind, days=args.days, sans=args.san, force=args.force, role=role
    )
    print(
        f"issued {kind} certificate CN={cn}: {cert} (key {key}, mode 0600), expires "
        f"{pki.iso_utc(pki.cert_expiry(cert))}"
    )
    return 0


def cmd_pki_show(args: Any) -> int:
    from datetime import UTC, datetime

    from meshems.adapters import pki
    from meshems.adapters.config_file import load_config
    from meshems.cli.output import out_console, print_json, table

    rows = pki.list_certs(pki_dir(load_config(args.config), args), datetime.now(UTC))
    if args.output == "json":
        print_json([r.to_dict() for r in rows])
    else:
        t = table("NAME", "KIND", "CN", "NOT AFTER", "DAYS LEFT", "STATE", right=("DAYS LEFT",))
        for r in rows:
            state = "ok" if r.days_to_expiry >= 30 else "[yellow]renew soon[/yellow]"
            state = "[red]expired[/red]" if r.expired else state
            t.add_row(r.name, r.kind, r.cn, r.not_after, str(r.days_to_expiry), state)
        out_console().print(t)
    return 1 if any(r.expired for r in rows) else 0
