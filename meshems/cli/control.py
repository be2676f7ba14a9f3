"""`meshems policy set/get/prices | explain`: the zone's control. The policy the leader dispatches
to, and why a device has its setpoint (`meshems forecast` is `cli.forecast`).

Owns these commands' arguments, policy values on the command line (`KEY=VALUE`) and their
output; control itself lives in the core and runs in the node daemons.
"""

from __future__ import annotations

from typing import Any

from meshems.cli.args import add_command, add_group, add_output
from meshems.cli.output import fail, print_json

EXAMPLES = {
    "policy set": "meshems policy set --config cluster-configs/local-3.yaml import_limit_kw=40 "
    "shed_order=n1-relays:4,n2-relays:4 days_off=2026-12-24,2026-12-25 soc_targets=07:00@80",
    "policy get": "meshems policy get --config cluster-configs/local-3.yaml -o json",
    "policy prices": "meshems policy prices --config cluster-configs/local-3.yaml --csv day-ahead.csv",
    "explain": "meshems explain --config cluster-configs/local-3.yaml n1-bat",
}
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


def add_parsers(sub: Any) -> None:
    """Add `policy` and `explain` to the top-level subparsers."""
    pol = add_group(sub, "policy", "show or change the zone policy (committed through Raft)")
    s = add_command(
        pol, "set", "change zone policy fields (KEY=VALUE; lists comma-separated)", EXAMPLES["policy set"]
    )
    s.add_argument("values", nargs="+", metavar="KEY=VALUE")
    s.set_defaults(run=cmd_policy_set)
    s = add_command(
        pol,
        "prices",
        "commit dated quarter-hour prices (a dynamic tariff) from a CSV: time,import[,export]",
        EXAMPLES["policy prices"],
    )
    s.add_argument("--csv", required=True, metavar="FILE",
                   help="rows time,import[,export] per kWh; times unix s or ISO 8601 with an offset; "
                        "a quarter-hour or an hour apart; at most two days")  # fmt: skip
    s.add_argument("--dry-run", action="store_true", help="parse and show, commit nothing")
    s.set_defaults(run=cmd_policy_prices)
    s = add_command(
        pol, "get", "show the committed zone policy, envelopes and last dispatch", EXAMPLES["policy get"]
    )
    add_output(s)
    s.set_defaults(run=cmd_policy_get)

    s = add_command(
        sub,
        "explain",
        "why a device has its setpoint, or a load its relay state: override, cycle, term, controller, inputs",
        EXAMPLES["explain"],
    )
    s.add_argument("device_id", metavar="DEVICE_ID", help="a device id, or a load RELAY_DEVICE:CHANNEL")
    add_output(s)
    s.set_defaults(run=cmd_explain)


def parse_policy_values(items: list[str]) -> dict[str, Any]:
    """`KEY=VALUE` items as policy changes: numbers; `mode` a word; `shed_order`, `days_off`
    (YYYY-MM-DD) and `import_price` / `export_price` (24 or 96 numbers) comma-separated lists;
    `soc_targets` as HH:MM@PCT items (`07:00@80,17:00@50`); `reserve_forecast` a boolean word.
    ConfigError for an unknown key or a bad value (the zone checks the values themselves)."""
    from meshems.core.errors import ConfigError
    from meshems.core.policy import Policy

    defaults = Policy()
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not hasattr(defaults, key):
            raise ConfigError(
                f"policy: {item!r} is not KEY=VALUE with a known key ({', '.join(defaults.to_dict())})"
            )
        if key in ("shed_order", "days_off"):
            out[key] = [x.strip() for x in raw.split(",") if x.strip()]
        elif key == "mode":
            out[key] = raw
        elif key in ("import_price", "export_price"):
            try:
                out[key] = [float(x) for x in raw.split(",") if x.strip()]
            except ValueError:
                raise ConfigError(f"policy: {key} needs comma-separated numbers, got {raw!r}") from None
        elif key == "soc_targets":
            targets = []
            for part in (x.strip() for x in raw.split(",") if x.strip()):
                at, at_sep, pct = part.partition("@")
                try:
                    targets.append({"at": at, "pct": float(pct)})
                except ValueError:
                    at_sep = ""
                if not at_sep:
                    raise ConfigError(f"policy: soc_targets items are HH:MM@PCT (07:00@80), got {part!r}")
            out[key] = targets
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


def cmd_policy_set(args: Any) -> int:
    from meshems.cli.api import client_for, new_rid, view
    from meshems.core import commands

    cfg = view(args)
    values = parse_policy_values(args.values)
    res = client_for(cfg, args).propose(commands.encode("set_policy", new_rid(), values=values))
    if res.get("ok"):
        print(f"policy committed at term {res['term']}, index {res['index']}: {values}")
        return 0
    return fail(res.get("code"), res.get("message"))


def price_values(path: str) -> tuple[dict[str, Any], str]:
    """The policy values of a prices CSV and a one-line summary; ConfigError naming the file
    and line when it cannot be read."""
    from datetime import UTC, datetime

    from meshems.core.errors import ConfigError
    from meshems.core.price_series import MAX_CSV_BYTES, PriceCsvError, parse_csv

    try:
        with open(path, encoding="utf-8") as f:
            text = f.read(MAX_CSV_BYTES + 1)
        start, imp, exp = parse_csv(text)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror or e}") from None
    except (PriceCsvError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from None
    values: dict[str, Any] = {"price_series_start_s": start, "import_price_series": list(imp),
                              "export_price_series": list(exp)}  # fmt: skip
    when = datetime.fromtimestamp(start, UTC).strftime("%Y-%m-%d %H:%M UTC")
    summary = f"{len(imp)} quarter-hours from {when}: import {min(imp):g}-{max(imp):g} per kWh"
    summary += f", export {min(exp):g}-{max(exp):g}" if exp else " (no export prices)"
    return values, summary


def cmd_policy_prices(args: Any) -> int:
    from meshems.cli.api import client_for, new_rid, view
    from meshems.core import commands

    values, summary = price_values(args.csv)
    if args.dry_run:
        print(f"{args.csv}: {summary} (dry run: nothing committed)")
        return 0
    cfg = view(args)
    res = client_for(cfg, args).propose(commands.encode("set_policy", new_rid(), values=values))
    if res.get("ok"):
        print(f"prices committed at term {res['term']}, index {res['index']}: {summary}")
        return 0
    return fail(res.get("code"), res.get("message"))


def cmd_policy_get(args: Any) -> int:
    from meshems.cli.api import connect, first_answer

    _, client = connect(args)
    _, body = first_answer(client, None, "/v1/control")
    if args.output == "json":
        print_json(body)
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


def cmd_explain(args: Any) -> int:
    import time
    from urllib.parse import quote

    from meshems.cli.api import connect, first_answer

    _, client = connect(args)
    code, body = first_answer(client, None, f"/v1/explain?device={quote(args.device_id)}")
    if code != 200:
        return fail(body.get("code"), body.get("message"))
    if args.output == "json":
        print_json(body)
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
    override = body.get("override")
    if override:
        until = override["until_s"]
        when = (
            "until cleared"
            if until is None
            else "until " + time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(until))
        )
        print(
            f"held {'on' if override['closed'] else 'off'} by an override of {override['source']} {when} "
            f"(term {override['term']}, index {override['index']}): dispatch, shedding and restore leave it"
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
