"""`meshems cloud keygen | send`: the cloud's signing key for downlink commands, and a signed
command to one zone (`policy set KEY=VALUE...`), with the zone leader's answer on `--wait`.
Owns these commands' arguments and output; the work is `meshems.cloud.downlink`'s.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Any

from meshems.cli.args import add_command

if TYPE_CHECKING:
    from meshems.core.cloud_config import CloudIngestConfig

EXAMPLES = {
    "keygen": "meshems cloud keygen --config cloud.yaml  (then pin the printed key in cloud.command_keys)",
    "send": "meshems cloud send --config cloud.yaml --zone zone-a --expires 10m --wait policy set "
    "import_limit_kw=40",
}
CLOUD_CONFIG_HELP = "cloud config (YAML): broker, client certificate, topic_prefix, command_key_file"


def add_parsers(cloud: Any) -> None:
    """Add `cloud keygen` and `cloud send` to the `cloud` group."""
    s = add_command(cloud, "keygen", "make the cloud's Ed25519 key for signed commands (command_key_file)",
                    EXAMPLES["keygen"], config=False)  # fmt: skip
    s.add_argument("--config", "-c", required=True, help=CLOUD_CONFIG_HELP)
    s.add_argument(
        "--force", action="store_true", help="replace an existing key (zones must pin the new one)"
    )
    s.set_defaults(run=cmd_keygen)
    s = add_command(cloud, "send", "sign a command for one zone and publish it on PREFIX/ZONE/commands",
                    EXAMPLES["send"], config=False)  # fmt: skip
    s.add_argument("--config", "-c", required=True, help=CLOUD_CONFIG_HELP)
    s.add_argument("--zone", required=True, help="the zone (its cluster config's zone)")
    s.add_argument(
        "--expires", default="10m", help="the zone refuses it after, e.g. 90s, 10m, 2h (default 10m)"
    )
    s.add_argument("--wait", action="store_true", help="wait for the leader's answer on PREFIX/ZONE/results")
    s.add_argument("--timeout", type=float, default=30.0, help="how long --wait waits (s, default 30)")
    s.add_argument("command", nargs="+", metavar="ARG", help="what to do: policy set KEY=VALUE ...")
    s.set_defaults(run=cmd_send)


def load(path: str) -> CloudIngestConfig:
    from meshems.adapters.config_file import load_yaml
    from meshems.core.cloud_config import parse_cloud_config

    return parse_cloud_config(load_yaml(path), path)


def cmd_keygen(args: Any) -> int:
    from meshems.adapters.payload_bundle import keygen

    cfg = load(args.config)
    pub, key = keygen(cfg.path(cfg.command_key_file), force=args.force)
    print(f"wrote {cfg.path(cfg.command_key_file)} (0600) and {pub}")
    print(f"pin it in each zone's cluster config:\n  cloud:\n    command_keys: [{key}]")
    return 0


def cmd_send(args: Any) -> int:
    from meshems.cli.control import parse_policy_values
    from meshems.cli.relay import duration_s
    from meshems.cloud.downlink import send

    if args.command[:2] != ["policy", "set"] or len(args.command) < 3:
        print("error E_USAGE: the command is: policy set KEY=VALUE [KEY=VALUE ...]", file=sys.stderr)
        return 2
    try:
        expires_s = duration_s(args.expires)
    except ValueError as exc:
        print(f"error E_USAGE: --expires: {exc}", file=sys.stderr)
        return 2
    values = parse_policy_values(args.command[2:])
    record, answer = send(load(args.config), args.zone, "set_policy", {"values": values}, expires_s,
                          args.timeout if args.wait else None)  # fmt: skip
    print(f"sent command {record.command_id} seq {record.seq} to {args.zone}: policy set {values}")
    if not args.wait:
        return 0
    if answer is None:
        print(f"error E_TIMEOUT: no answer from {args.zone} within {args.timeout:g} s (it stays queued "
              "for the zone until it expires)", file=sys.stderr)  # fmt: skip
        return 1
    if answer.get("ok"):
        again = " (already applied: a repeat)" if answer.get("duplicate") else ""
        where = f"term {answer.get('term')}, index {answer.get('index')}"
        print(f"applied by {answer.get('node')} at {where}{again}")
        return 0
    print(f"error {answer.get('code')}: {answer.get('message')}", file=sys.stderr)
    return 1
