"""`meshems forecast fit | show`: a load forecaster fitted on a CSV (offline, or into a node's
data folder) and a node's forecast for the coming day with its basis and a chart.

Owns these commands' arguments, reading the CSV file (its format is `core.load_csv`) and
their output; fitting is `core.forecast`, the node's forecast `core.load_history`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshems.cli.args import CONFIG_HELP, add_command, add_group, add_output
from meshems.cli.output import fail, print_json

if TYPE_CHECKING:
    from datetime import tzinfo

    from meshems.core.load_csv import LoadSeries

EXAMPLES = {
    "forecast fit": "meshems forecast fit --csv load.csv --tz Europe/Berlin -o model.npz  "
    "(or --config cluster-configs/local-3.yaml --node n1 --csv load.csv: into n1's data folder)",
    "forecast show": "meshems forecast show --config cluster-configs/local-3.yaml --node n1",
}
CSV_HELP = (
    "load history, one 'time,power' row per sample: time as unix seconds or ISO 8601 (with an "
    "offset, or local time in --tz), power in kW (or --unit W; empty or nan: a gap); separator ',' "
    "or ';' (then a decimal comma is fine), an optional header row, any step that divides 15 "
    "minutes (averaged to 15-minute means; missing rows are gaps); 8+ weeks. Default with "
    "--config: the history the node recorded itself (DATA_DIR/NODE/load_history.npz)"
)
TZ_HELP = (
    "time zone of ISO times without an offset (default UTC). Across a DST change a skipped local "
    "time is an error; a repeated one is its first pass, or its second when the rows go back in time"
)


def add_parsers(sub: Any) -> None:
    """Add `forecast fit` and `forecast show` to the top-level subparsers."""
    fc = add_group(sub, "forecast", "fit a load forecaster, or show a node's forecast")
    s = add_command(
        fc,
        "fit",
        "fit a load forecaster on a CSV of load history (or a node's own) and print its skill against "
        "the same time last week; save it to -o FILE (no cluster needed), or with --config --node "
        "as DATA_DIR/NODE/forecast.npz, which the node loads at start",
        EXAMPLES["forecast fit"],
        config=False,
    )
    s.add_argument("--csv", metavar="FILE", help=CSV_HELP)
    s.add_argument("--tz", default="UTC", help=TZ_HELP)
    s.add_argument("--unit", choices=["kW", "W"], default="kW", help="unit of the power column (default kW)")
    s.add_argument(
        "-o",
        "--out",
        metavar="FILE",
        help="where to save the model (.npz); default: forecast.npz here, with --config the node's folder",
    )
    s.add_argument("--force", action="store_true", help="replace an existing -o FILE")
    s.add_argument("--config", "-c", help=CONFIG_HELP + "; with --node, fit for that node (optional)")
    s.add_argument("--node", "-n", help="the node whose data folder gets the model (needs --config)")
    s.add_argument(
        "--version",
        type=int,
        default=1,
        help="the model's version (the zone replicates a node's model when it is higher)",
    )
    s.set_defaults(run=cmd_forecast_fit)

    s = add_command(
        fc,
        "show",
        "a node's load forecast for the next 24 h in 15-minute steps, from its own history and "
        "model as its reserve uses it, the basis (model vN, same time yesterday, no history yet) "
        "and a chart",
        EXAMPLES["forecast show"],
    )
    s.add_argument("--node", "-n", required=True, help="the node to ask (each forecasts its own load)")
    s.add_argument("--hours", type=float, default=24.0, help="how much of the day to show (0.25 .. 24)")
    add_output(s)
    s.set_defaults(run=cmd_forecast_show)


def time_zone(name: str) -> tzinfo:
    """`--tz` as a tzinfo (ConfigError for a name the tz database lacks)."""
    from datetime import UTC

    from meshems.core.errors import ConfigError

    if name.upper() == "UTC":
        return UTC
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"--tz {name!r} is not in the tz database (e.g. Europe/Berlin, UTC)") from None


def read_load_csv(path: str, tz: tzinfo, unit: str) -> LoadSeries:
    """The file at `path` as 15-minute means (LoadCsvError, exit code 2, naming the file and line)."""
    from meshems.core.load_csv import LoadCsvError, parse_load_csv

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise LoadCsvError(f"{path}: cannot read it: {exc.strerror or exc}", file=path) from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        problem = f"{path}:{line}: not UTF-8 text (byte {exc.start}); save it as UTF-8"
        raise LoadCsvError(problem, file=path, line=line) from None
    return parse_load_csv(text, path, tz, unit)


def _when(t_s: float) -> str:
    import time

    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t_s))


def describe(path: str, s: LoadSeries, tz_name: str) -> str:
    """One line on what was read: rows, their step, the span, the 15-minute steps and gaps."""
    step = f"{s.source_step_s / 60:g}-minute" if s.source_step_s >= 60 else f"{s.source_step_s:g}-second"
    text = (
        f"read {path}: {s.rows} rows at {step} steps{' after a header' if s.header else ''}, "
        f"{_when(s.first_s)} .. {_when(s.last_s)}; {s.kw.size} 15-minute steps, {s.missing_steps} "
        "without data"
    )
    if s.repeated_hour_rows:
        n = s.repeated_hour_rows
        text += f"; {n} rows read as the second pass of a repeated DST hour ({tz_name})"
    return text


def cmd_forecast_fit(args: Any) -> int:
    from meshems.adapters.forecast_store import save
    from meshems.core.errors import ConfigError, MeshemsError
    from meshems.core.forecast import fit
    from meshems.core.forecast_eval import evaluate

    if args.config is None and args.node:
        raise ConfigError("--node names a node of --config: give both, or neither (the model goes to -o)")
    if args.config is None and not args.csv:
        raise ConfigError("without --config, --csv FILE is needed (a node's own history: --config --node)")
    if args.config is not None and not args.node:
        raise ConfigError("--config needs --node N, the node whose model this is")
    out = Path(args.out) if args.out else None if args.config else Path("forecast.npz")
    if out is not None and out.exists() and (out.is_dir() or not args.force):
        why = "is a folder" if out.is_dir() else "exists; pass --force to replace it"
        raise ConfigError(f"{out} {why} (nothing was written)")
    tz = time_zone(args.tz)
    cfg = None
    if args.config is not None:
        from meshems.adapters.config_file import load_config

        cfg = load_config(args.config)
        cfg.node(args.node)
    if args.csv:
        series = read_load_csv(args.csv, tz, args.unit)
        print(describe(args.csv, series, args.tz))
        named = series.header_unit()
        if named is not None and named != args.unit:
            print(
                f"warning: {args.csv}'s power column is {series.header[1]!r} but the unit is {args.unit} "
                f"(pass --unit {named} if the values are in {named})",
                file=sys.stderr,
            )
        kw, t0_s, source = series.kw, series.t0_s, args.csv
    else:
        from meshems.adapters.forecast_store import load_history

        assert cfg is not None
        hist_path = cfg.data_dir(args.node) / "load_history.npz"
        history = load_history(hist_path)
        if history.t0_s is None or not history.values:
            raise ConfigError(f"{hist_path}: no recorded history yet; pass --csv")
        kw, t0_s, source = history.series(), history.t0_s, str(hist_path)
    try:
        model = fit(kw, t0_s, step_s=900.0, version=args.version)
        skill = evaluate(kw, t0_s, 900.0, train_days=max(8.0, len(kw) / 96 - 14), test_days=14)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    if out is None:
        assert cfg is not None
        out = cfg.data_dir(args.node) / "forecast.npz"
        out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        digest = save(model, out)
    except OSError as exc:
        raise MeshemsError(f"{out}: cannot write the model: {exc.strerror or exc}") from None
    print(
        f"fitted on {model.fitted_on} steps; MAE {skill['mae_model_kw']:.2f} kW vs same time last week "
        f"{skill['mae_naive_kw']:.2f} kW (ratio {skill['ratio']:.2f}); saved {out} (sha256 {digest[:16]})"
    )
    return 0


def cmd_forecast_show(args: Any) -> int:
    import math
    import shutil
    import time

    from meshems.cli.api import connect
    from meshems.core.errors import ConfigError

    if not 0.25 <= args.hours <= 24:
        raise ConfigError(f"--hours must be 0.25 .. 24 (a node forecasts one day), got {args.hours:g}")
    cfg, client = connect(args)
    code, body = client.request(cfg.node(args.node), "GET", "/v1/forecast")
    if code != 200:
        return fail(body.get("code"), body.get("message"))
    body["kw"] = body["kw"][: math.ceil(args.hours * 3600 / body["step_s"])]
    if args.output == "json":
        print_json(body)
        return 0
    from meshems.cli.chart import bar_chart

    start = time.strftime("%Y-%m-%d %H:%M %Z", time.localtime(body["start_s"]))
    hours = len(body["kw"]) * body["step_s"] / 3600
    print(f"{body['node_id']}: load forecast for {hours:g} h from {start}, basis: {body['basis']}")
    width = max(24, shutil.get_terminal_size((100, 24)).columns - 12)
    lines = bar_chart(body["kw"], body["start_s"], body["step_s"], width=width)
    print("\n".join(lines) if lines else "no load recorded yet: the node forecasts nothing, its reserve is 0")
    return 0
