"""`meshems firewall render | apply | check`: a gateway's nftables allow-list (`table inet
meshems`) from the cluster config. Owns these commands' arguments and output; the rules are
`core.firewall`'s, nft runs in `adapters.nft` (root or CAP_NET_ADMIN for apply and check).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from meshems.cli.args import add_command, add_group, add_output
from meshems.cli.output import print_json

if TYPE_CHECKING:
    from meshems.core.firewall import Ruleset

EXAMPLES = {
    "firewall render": "meshems firewall render --config cluster-configs/local-3.yaml --node n1",
    "firewall apply": "meshems firewall apply --config /etc/meshems/cluster.yaml --node n1",
    "firewall check": "meshems firewall check --config /etc/meshems/cluster.yaml --node n1 -o json",
}


def add_parsers(sub: Any) -> None:
    """Add `firewall` and its subcommands to the top-level subparsers."""
    fw = add_group(sub, "firewall", "the gateway's nftables allow-list (table inet meshems)")
    s = add_command(
        fw,
        "render",
        "print the node's nftables ruleset (input policy drop; Modbus and MQTT only to the configured hosts)",
        EXAMPLES["firewall render"],
    )
    s.add_argument("--node", "-n", required=True)
    s.add_argument("--file", help="write the ruleset to this file instead of stdout")
    s.set_defaults(run=cmd_firewall_render)
    s = add_command(
        fw,
        "apply",
        "check the ruleset with nft -c, then load it atomically (idempotent; root or CAP_NET_ADMIN)",
        EXAMPLES["firewall apply"],
    )
    s.add_argument("--node", "-n", required=True)
    s.add_argument("--netns", help="in this network namespace (ip netns exec NAME nft ...)")
    s.set_defaults(run=cmd_firewall_apply)
    s = add_command(
        fw,
        "check",
        "compare the loaded table inet meshems with the rendered ruleset (exit 1 on drift)",
        EXAMPLES["firewall check"],
    )
    s.add_argument("--node", "-n", required=True)
    s.add_argument("--netns", help="in this network namespace (ip netns exec NAME nft ...)")
    add_output(s)
    s.set_defaults(run=cmd_firewall_check)


def _ruleset(args: Any) -> Ruleset:
    from meshems.adapters import nft
    from meshems.adapters.config_file import load_config
    from meshems.core import firewall

    cfg = load_config(args.config)
    cfg.node(args.node)  # an unknown node is named before any lookup
    return firewall.render(cfg, args.node, nft.resolve(firewall.hostnames(cfg, args.node)))


def cmd_firewall_render(args: Any) -> int:
    ruleset = _ruleset(args)
    if args.file is None:
        print(ruleset.text, end="")
        return 0
    from pathlib import Path

    from meshems.adapters.atomic_write import write_atomic

    write_atomic(Path(args.file), ruleset.text.encode(), 0o644)
    for note in ruleset.notes:
        print(f"note: {note}", file=sys.stderr)
    print(f"{args.node}: ruleset written to {args.file} (load it with: nft -f {args.file})")
    return 0


def _where(args: Any) -> str:
    return f" in network namespace {args.netns}" if args.netns else ""


def cmd_firewall_apply(args: Any) -> int:
    from meshems.adapters import nft
    from meshems.core import firewall

    ruleset = _ruleset(args)
    shown = f"ruleset of {args.node}"
    nft.check(ruleset.text, args.netns, shown)
    nft.apply(ruleset.text, args.netns, shown)
    loaded = nft.list_table(args.netns)
    differences = firewall.drift(ruleset.rules, firewall.normalize(loaded or ""))
    chains = ", ".join(f"{name} {len(lines) - 1} rules" for name, lines in ruleset.rules.items())
    print(f"{args.node}: table {firewall.TABLE} loaded{_where(args)} ({chains}); input policy drop")
    for note in ruleset.notes:
        print(f"note: {note}")
    if differences:
        print("the loaded table differs from the ruleset just applied (nft listed it otherwise):")
        print("\n".join(f"  {d}" for d in differences))
        return 1
    return 0


def cmd_firewall_check(args: Any) -> int:
    from meshems.adapters import nft
    from meshems.core import firewall

    ruleset = _ruleset(args)
    loaded = nft.list_table(args.netns)
    differences = (
        ["- table inet meshems is not loaded"]
        if loaded is None
        else firewall.drift(ruleset.rules, firewall.normalize(loaded))
    )
    if args.output == "json":
        print_json(
            {
                "node": args.node,
                "netns": args.netns,
                "loaded": loaded is not None,
                "in_sync": not differences,
                "missing": [d[2:] for d in differences if d.startswith("-")],
                "unexpected": [d[2:] for d in differences if d.startswith("+")],
            }
        )
    elif differences:
        hint = f"meshems firewall apply --config {args.config} --node {args.node}"
        print(f"{args.node}: table {firewall.TABLE}{_where(args)} drifts from the rendered ruleset")
        print("  (- rendered, not loaded; + loaded, not rendered)")
        print("\n".join(f"  {d}" for d in differences))
        print(f"  to load the rendered ruleset: {hint}")
    else:
        count = sum(len(lines) - 1 for lines in ruleset.rules.values())
        print(
            f"{args.node}: table {firewall.TABLE}{_where(args)} matches the rendered ruleset ({count} rules)"
        )
    return 1 if differences else 0
