"""`meshems token create | revoke | list`: scoped API tokens for monitoring systems and
scripts (read, operate or admin), kept as digests in the replicated state and revoked
zone-wide in one commit. Owns these commands' arguments and output; the token is made here,
on the operator's machine, and printed once: no node ever sees more than its SHA-256.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from meshems.cli.args import add_command, add_group, add_output
from meshems.cli.output import fail, print_json

EXAMPLES = {
    "token create": "meshems token create --config cluster-configs/local-3.yaml --role read "
    "--name prometheus --ttl 90d",
    "token revoke": "meshems token revoke --config cluster-configs/local-3.yaml prometheus",
    "token list": "meshems token list --config cluster-configs/local-3.yaml",
}


def add_parsers(sub: Any) -> None:
    """Add `token create`, `token revoke` and `token list` to the top-level subparsers."""
    group = add_group(sub, "token", "scoped API tokens (read, operate, admin), revocable zone-wide")
    s = add_command(
        group, "create", "create a token and print it once (needs admin)", EXAMPLES["token create"]
    )
    s.add_argument("--role", required=True, choices=["read", "operate", "admin"])
    s.add_argument(
        "--name", required=True, help="who or what uses it, e.g. prometheus (unique among live tokens)"
    )
    s.add_argument(
        "--ttl", default="90d", metavar="DURATION", help="lifetime: 90s, 30m, 12h, 90d (default 90d)"
    )
    add_output(s)
    s.set_defaults(run=cmd_token_create)
    s = add_command(group, "revoke", "revoke a token on every node (needs admin)", EXAMPLES["token revoke"])
    s.add_argument("name", metavar="NAME_OR_ID")
    add_output(s)
    s.set_defaults(run=cmd_token_revoke)
    s = add_command(group, "list", "list the zone's tokens: names, roles, expiry (never the tokens)",
                    EXAMPLES["token list"])  # fmt: skip
    add_output(s)
    s.set_defaults(run=cmd_token_list)


def cmd_token_create(args: Any) -> int:
    import secrets

    from meshems.cli.api import connect, new_rid
    from meshems.cli.relay import duration_s
    from meshems.core import commands
    from meshems.core.access import TOKEN_PREFIX, token_digest

    try:
        ttl_s = duration_s(args.ttl)
    except ValueError as exc:
        print(f"error E_USAGE: --ttl: {exc}", file=sys.stderr)
        return 2
    token_id, secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    expires_s = time.time() + ttl_s
    _, client = connect(args)
    data = commands.encode("token_create", new_rid(), token_id=token_id, name=args.name, role=args.role,
                           digest=token_digest(secret), expires_s=expires_s, by="cli")  # fmt: skip
    res = client.propose(data)
    if not res.get("ok"):
        return fail(res.get("code"), res.get("message"))
    token = f"{TOKEN_PREFIX}{token_id}_{secret}"
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(expires_s))
    if args.output == "json":
        print_json({"ok": True, "name": args.name, "role": args.role, "id": token_id, "token": token,
                    "expires_s": expires_s})  # fmt: skip
    else:
        print(f"token {args.name} ({args.role}, until {when}); shown only now:\n{token}")
        print("use it with: MESHEMS_TOKEN=... meshems status --config C, or Authorization: Bearer ...")
    return 0


def cmd_token_revoke(args: Any) -> int:
    from meshems.cli.api import connect, new_rid
    from meshems.core import commands

    _, client = connect(args)
    res = client.propose(commands.encode("token_revoke", new_rid(), name=args.name))
    if args.output == "json":
        print_json(res)
    elif res.get("ok"):
        print(f"{res.get('message')} (term {res['term']}, index {res['index']})")
    else:
        fail(res.get("code"), res.get("message"))
    return 0 if res.get("ok") else 1


def cmd_token_list(args: Any) -> int:
    from meshems.cli.api import connect, first_answer

    _, client = connect(args)
    status, body = first_answer(client, None, "/v1/tokens")
    if status != 200:
        return fail(body.get("code"), body.get("message"))
    if args.output == "json":
        print_json(body["tokens"])
        return 0
    from meshems.cli.output import out_console, table

    t = table("NAME", "ID", "ROLE", "EXPIRES", "STATE", "CREATED BY")
    now = time.time()
    for row in body["tokens"]:
        state = "revoked" if row["revoked"] else "expired" if row["expires_s"] <= now else "live"
        expires = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["expires_s"]))
        t.add_row(row["name"], row["id"], row["role"], expires, state, row["created_by"])
    out_console().print(t)
    return 0
