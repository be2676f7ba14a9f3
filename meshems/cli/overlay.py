"""`meshems overlay keygen | render | up | down | status`: the WireGuard overlay between the
gateways on the command line.

Owns these commands' arguments and output; keys, configs and interfaces are made by
`adapters.wireguard`. Must not print a private key.
"""

from __future__ import annotations

from typing import Any

from meshems.cli.args import add_command, add_group, add_output
from meshems.cli.output import print_json

EXAMPLES = {
    "overlay keygen": "meshems overlay keygen --config cluster-configs/local-3.yaml",
    "overlay render": "meshems overlay render --config cluster-configs/local-3.yaml --node n1",
    "overlay up": "meshems overlay up --config cluster-configs/local-3.yaml --node n1",
    "overlay down": "meshems overlay down --config cluster-configs/local-3.yaml --node n1",
    "overlay status": "meshems overlay status --config cluster-configs/local-3.yaml --node n1 -o json",
}


def add_parsers(sub: Any) -> None:
    """Add `overlay` and its subcommands to the top-level subparsers."""
    ov = add_group(sub, "overlay", "WireGuard overlay keys and configs")
    s = add_command(
        ov,
        "keygen",
        "create WireGuard keys (X25519; private key 0600) for the nodes",
        EXAMPLES["overlay keygen"],
    )
    s.add_argument("--node", "-n", help="only this node (default: every node without keys)")
    s.add_argument("--force", action="store_true", help="replace existing keys")
    s.set_defaults(run=cmd_overlay_keygen)
    s = add_command(
        ov, "render", "print a node's wg-quick config with every peer", EXAMPLES["overlay render"]
    )
    s.add_argument("--node", "-n", required=True)
    s.set_defaults(run=cmd_overlay_render)
    for verb, text, run in (
        ("up", "bring this gateway's overlay interface up (idempotent; root)", cmd_overlay_up),
        ("down", "remove this gateway's overlay interface (root)", cmd_overlay_down),
        ("status", "per-peer handshake age and transfer counters", cmd_overlay_status),
    ):
        s = add_command(ov, verb, text, EXAMPLES[f"overlay {verb}"])
        s.add_argument("--node", "-n", required=True)
        if verb == "status":
            add_output(s)
        s.set_defaults(run=run)


def cmd_overlay_keygen(args: Any) -> int:
    from meshems.adapters.config_file import load_config
    from meshems.adapters.wireguard import key_paths, keygen
    from meshems.core.errors import ConfigError

    cfg = load_config(args.config)
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


def cmd_overlay_render(args: Any) -> int:
    from meshems.adapters.config_file import load_config
    from meshems.adapters.wireguard import render

    print(render(load_config(args.config), args.node), end="")
    return 0


def cmd_overlay_up(args: Any) -> int:
    from meshems.adapters.config_file import load_config
    from meshems.adapters.wireguard import interface_name, up

    cfg = load_config(args.config)
    how = up(cfg, args.node)
    address = cfg.node(args.node).overlay_address
    print(f"{interface_name(cfg, args.node)} is up ({how}) with address {address}")
    return 0


def cmd_overlay_down(args: Any) -> int:
    from meshems.adapters.config_file import load_config
    from meshems.adapters.wireguard import down, interface_name

    cfg = load_config(args.config)
    print(f"{interface_name(cfg, args.node)} {'removed' if down(cfg, args.node) else 'was not there'}")
    return 0


def cmd_overlay_status(args: Any) -> int:
    from meshems.adapters.config_file import load_config
    from meshems.adapters.wireguard import peer_status

    rows = peer_status(load_config(args.config), args.node)
    if args.output == "json":
        print_json(rows)
    else:
        for r in rows:
            age = "never" if r["handshake_age_s"] is None else f"{r['handshake_age_s']:.0f} s ago"
            flag = "  STALE" if r["stale"] else ""
            print(
                f"{r['peer']:>8}  {r['endpoint']:<24} handshake {age:<12} "
                f"rx {r['rx_bytes']} tx {r['tx_bytes']}{flag}"
            )
    return 1 if any(r["stale"] for r in rows) else 0
