"""`meshems plan show`: the zone plan the leader committed, per quarter-hour the target import
and each battery's power and SoC, the planned peak and cost, the plan's age and the forecasts
it used, and a chart of the target import against the limit.

Owns the command's arguments and output; the plan is `core.planner` / `core.plan_records`.
"""

from __future__ import annotations

import time
from typing import Any

from meshems.cli.args import add_command, add_group, add_output
from meshems.cli.output import fail, print_json

EXAMPLES = {"plan show": "meshems plan show --config cluster-configs/local-3.yaml [--steps 16] [-o json]"}


def add_parsers(sub: Any) -> None:
    """Add `plan show` to the top-level subparsers."""
    grp = add_group(sub, "plan", "the zone plan the leader dispatches to")
    s = add_command(
        grp,
        "show",
        "the committed zone plan: mode and status, planned peak and cost, its age and the forecasts it "
        "used; per 15 minutes the target import and each battery's power and SoC; a chart of import "
        "against the limit. Exit 1 with E_NO_PLAN while there is none (the reactive rules run then)",
        EXAMPLES["plan show"],
    )
    s.add_argument("--node", "-n", help="ask this node (default: the first that answers)")
    s.add_argument("--steps", type=int, default=16, help="table rows: quarter-hours from now (default 16)")
    add_output(s)
    s.set_defaults(run=cmd_plan_show)


def _hhmm(t_s: float) -> str:
    return time.strftime("%H:%M", time.gmtime(t_s))


def cmd_plan_show(args: Any) -> int:
    import shutil

    from meshems.cli.api import connect
    from meshems.cli.chart import bar_chart
    from meshems.core.errors import ConfigError

    if args.steps < 1:
        raise ConfigError(f"--steps must be at least 1, got {args.steps}")
    cfg, client = connect(args)
    nodes = [cfg.node(args.node)] if args.node else list(cfg.nodes)
    code, body = 0, {}
    for node in nodes:
        code, body = client.request(node, "GET", "/v1/plan")
        if code in (200, 404):
            break
    if code != 200:
        return fail(body.get("code"), body.get("message"))
    if args.output == "json":
        print_json(body)
        return 0
    track = body.get("tracking") or {}
    limit = body.get("import_limit_kw") or 1e9
    ceiling = track.get("ceiling_kw")
    print(
        f"plan v{body['version']} ({body['mode']}, {body['status']}), made {body['age_s']:.0f} s ago "
        f"from {_hhmm(body['start_s'])} UTC for {len(body['import_kw']) * body['step_s'] / 3600:g} h: "
        f"peak {body['peak_kw']:.1f} kW, cost {body['cost']:.2f}"
        + (f", import limit {limit:g} kW" if limit < 1e9 else "")
    )
    print(f"  {body['reason']}")
    print(f"  forecasts: {body['basis']}")
    if ceiling is not None:
        print(f"  now: holding zone import under {ceiling:.1f} kW")
    else:
        print("  now: " + ("following the schedule" if track else "stale: dispatch runs the reactive rules"))
    now = time.time()
    first = max(0, int((now - body["start_s"]) // body["step_s"]))
    rows = range(first, min(len(body["import_kw"]), first + args.steps))
    bats = body["batteries"]
    print(f"{'UTC':>6} {'import kW':>10}" + "".join(f" {b['id'][:14]:>15}" for b in bats))
    for i in rows:
        cells = "".join(f" {b['kw'][i]:>7.1f}kW {b['soc_pct'][i + 1]:>3.0f}%" for b in bats)
        print(f"{_hhmm(body['start_s'] + i * body['step_s']):>6} {body['import_kw'][i]:>10.1f}{cells}")
    width = max(24, shutil.get_terminal_size((100, 24)).columns - 12)
    print("target import:")
    print(
        "\n".join(
            bar_chart(body["import_kw"], body["start_s"], body["step_s"], width=width, clock=time.gmtime)
        )
    )
    return 0
