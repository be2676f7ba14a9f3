"""`meshems pki`: the cloud uplink's certificate authority on the command line.

Owns the `pki init | issue | show` argument parsing and their output (tables or JSON); the
certificates themselves are made by `adapters.pki`. Must not print a private key. Wired into
`meshems.cli` with `add_pki_parser(sub)` and the `PKI_HANDLERS` dispatch entries.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from meshems.adapters import pki
from meshems.core.config import CloudConfig, ClusterConfig

PKI_EXAMPLES = {
    "pki init": "meshems pki init --config cluster-configs/local-3.yaml",
    "pki issue": "meshems pki issue --config cluster-configs/local-3.yaml --node n1",
    "pki show": "meshems pki show --config cluster-configs/local-3.yaml -o json",
}


def add_pki_parser(sub: Any) -> argparse.ArgumentParser:
    """Add `pki init`, `pki issue` and `pki show` to the top-level subparsers `sub` (dest
    "cmd"; the subcommand lands in dest "sub"). Returns the `pki` parser."""
    parser: argparse.ArgumentParser = sub.add_parser(
        "pki", help="the cloud uplink's certificate authority (EC P-256, TLS 1.3 client certificates)"
    )
    pki_sub = parser.add_subparsers(dest="sub", required=True, metavar="SUBCOMMAND")

    def add(name: str, help_: str) -> argparse.ArgumentParser:
        sp: argparse.ArgumentParser = pki_sub.add_parser(
            name,
            help=help_,
            description=help_,
            epilog=f"Example: {PKI_EXAMPLES['pki ' + name]}",
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sp.add_argument("--config", "-c", required=True, help="cluster config (YAML)")
        sp.add_argument("--dir", help="PKI folder (default: cloud.pki_dir of the config, .meshems/pki)")
        return sp

    s = add("init", "create the certificate authority: ca.key (0600, folder 0700) and ca.crt")
    s.add_argument("--name", help="the CA's name (default: meshems-CLUSTER)")
    s.add_argument("--days", type=int, default=3650, help="validity in days (default 3650)")
    s.add_argument("--force", action="store_true", help="replace an existing CA (every certificate is void)")

    s = add("issue", "issue a certificate signed by the CA: NAME.key (0600) and NAME.crt")
    who = s.add_mutually_exclusive_group(required=True)
    who.add_argument("--node", metavar="ID", help="a node's client certificate (CN = node id)")
    who.add_argument("--client", metavar="NAME", help="a client certificate (CN = NAME), e.g. a cloud reader")
    who.add_argument(
        "--server", metavar="NAME", help="a broker certificate (CN = NAME; SAN localhost, 127.0.0.1, NAME)"
    )
    s.add_argument("--days", type=int, default=825, help="validity in days (default 825)")
    s.add_argument(
        "--san", action="append", default=[], metavar="HOST_OR_IP", help="extra subject alternative name"
    )
    s.add_argument("--force", action="store_true", help="replace an existing key and certificate")

    s = add("show", "list the certificates with their expiry (exit code 1 when one has expired)")
    s.add_argument("-o", "--output", choices=["table", "json"], default="table")
    return parser


def pki_dir(cfg: ClusterConfig, args: Any) -> Path:
    """`--dir` as given, else the config's cloud.pki_dir (relative to the config file)."""
    if getattr(args, "dir", None):
        return Path(args.dir)
    relative = cfg.cloud.pki_dir if cfg.cloud is not None else CloudConfig.model_fields["pki_dir"].default
    return cfg.path(relative)


def cmd_pki_init(cfg: ClusterConfig, args: Any) -> int:
    folder = pki_dir(cfg, args)
    name = args.name or f"meshems-{cfg.cluster}"
    cert = pki.init_ca(folder, name, days=args.days, force=args.force)
    print(f"created CA {name!r}: {cert} (key {folder / pki.CA_KEY}, mode 0600); valid {args.days} days")
    return 0


def cmd_pki_issue(cfg: ClusterConfig, args: Any) -> int:
    kind: pki.Kind
    if args.node:
        cfg.node(args.node)  # ConfigError naming the known nodes when it is not declared
        kind, cn = "node", args.node
    elif args.client:
        kind, cn = "client", args.client
    else:
        kind, cn = "server", args.server
    key, cert = pki.issue(pki_dir(cfg, args), cn, kind, days=args.days, sans=args.san, force=args.force)
    print(
        f"issued {kind} certificate CN={cn}: {cert} (key {key}, mode 0600), expires "
        f"{pki.iso_utc(pki.cert_expiry(cert))}"
    )
    return 0


def cmd_pki_show(cfg: ClusterConfig, args: Any) -> int:
    rows = pki.list_certs(pki_dir(cfg, args), datetime.now(UTC))
    if args.output == "json":
        print(json.dumps([r.to_dict() for r in rows], indent=2))
    else:
        t = Table(header_style="bold")
        for col in ("NAME", "KIND", "CN", "NOT AFTER", "DAYS LEFT", "STATE"):
            t.add_column(col, justify="right" if col == "DAYS LEFT" else "left")
        for r in rows:
            state = "ok" if r.days_to_expiry >= 30 else "[yellow]renew soon[/yellow]"
            state = "[red]expired[/red]" if r.expired else state
            t.add_row(r.name, r.kind, r.cn, r.not_after, str(r.days_to_expiry), state)
        (Console() if sys.stdout.isatty() else Console(width=200)).print(t)
    return 1 if any(r.expired for r in rows) else 0


#: entries for meshems.cli.HANDLERS: (cmd, sub) -> handler(cfg, args) -> exit code
PKI_HANDLERS = {
    ("pki", "init"): cmd_pki_init,
    ("pki", "issue"): cmd_pki_issue,
    ("pki", "show"): cmd_pki_show,
}
