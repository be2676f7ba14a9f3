"""`meshems doctor`: a checklist of what breaks a gateway (the config, file modes of secrets
and keys, certificates, peers' ports and round trips, Modbus devices, the data folder,
the broker, clocks), one line each with ✓ / ! / ✗ and a hint; exit 1 when a check failed.
Owns the command's arguments, the order of the checks and their output; the probes are
`ops.doctor` / `ops.doctor_field`, the rules `core.diagnosis`.
"""

from __future__ import annotations

import sys
from typing import Any

from meshems.cli.args import add_command, add_output

EXAMPLES = {"doctor": "meshems doctor --config cluster-configs/local-3.yaml --node n1"}


def add_parsers(sub: Any) -> None:
    """Add `doctor` to the top-level subparsers."""
    s = add_command(
        sub,
        "doctor",
        "check this gateway and the zone: config, key modes, certificates, peers, devices, data "
        "folder, broker, clocks (exit 1 when a check failed)",
        EXAMPLES["doctor"],
    )
    s.add_argument(
        "--node", "-n", help="this gateway's node id (default: every node whose devices answer here)"
    )
    s.add_argument(
        "--skip",
        action="append",
        default=[],
        choices=["peers", "devices", "broker", "time"],
        help="leave a group of checks out (repeatable)",
    )
    s.add_argument(
        "--broker-wait", type=float, default=5.0, metavar="S", help="seconds to wait for a telemetry message"
    )
    add_output(s)
    s.set_defaults(run=cmd_doctor)


def _client(cfg: Any, args: Any) -> tuple[Any, str]:
    """A NodeClient with the caller's credentials, or None and why not."""
    from meshems.cli.api import client_for
    from meshems.core.errors import MeshemsError

    try:
        return client_for(cfg, args), ""
    except MeshemsError as exc:
        return None, exc.message


def _guarded(name: str, probe: Any, *args: Any) -> list[Any]:
    """`probe(*args)`'s checks; a probe that crashes is one failed check, not a crash of
    the whole checklist."""
    from meshems.core import diagnosis as dx

    try:
        return list(probe(*args))
    except Exception as exc:  # a bug or an unforeseen state: say it and go on
        return [dx.fail(name, f"the check itself failed: {type(exc).__name__}: {exc}", "report it (a bug)")]


def collect(args: Any) -> list[Any]:
    """Every check in order; a failed config stops the list there."""
    from meshems.core import diagnosis as dx
    from meshems.core.errors import MeshemsError
    from meshems.ops import doctor, doctor_field

    cfg, first = doctor.check_config(args.config)
    checks = [first]
    if cfg is None:
        return checks
    try:
        nodes = doctor.targets(cfg, args.node)
    except MeshemsError as exc:
        return [*checks, dx.fail("node", exc.message, "pass a node id of the config")]
    checks += _guarded("modes", doctor.check_modes, cfg)
    checks += _guarded("certificates", doctor.check_certs, cfg, nodes, doctor.now_utc())
    if args.node and cfg.overlay is not None:
        checks += _guarded("overlay", doctor.check_overlay, cfg, args.node)
    rows: list[dict[str, Any]] = []
    if "peers" not in args.skip:
        client, why = _client(cfg, args)
        if client is None:
            checks.append(dx.warn("api credentials", why, "pass --token or --cert/--key, or fix the secret"))
        try:
            peers, rows = doctor.check_peers(cfg, client)
        except Exception as exc:  # as in _guarded
            peers = [dx.fail("peers", f"the check itself failed: {type(exc).__name__}: {exc}", "report it")]
        checks += peers
        if client is not None:
            checks += _guarded("counters", doctor.check_node_counters, client, nodes, rows)
    if "devices" not in args.skip:
        checks += _guarded("devices", doctor_field.check_devices, cfg, nodes, bool(args.node))
    checks += _guarded("data", doctor.check_data_dirs, cfg, nodes)
    if "broker" not in args.skip and cfg.cloud is not None:
        node_id = doctor_field.default_cert_node(cfg, args.node)
        if node_id is None:
            checks.append(
                dx.fail(
                    "broker", "no node certificate in cloud.cert_dir", "meshems pki issue NODE --kind node"
                )
            )
        else:
            checks += _guarded("broker", doctor_field.check_broker, cfg, node_id, args.broker_wait)
    if "time" not in args.skip:
        checks += _guarded("clocks", doctor.check_clock_offsets, rows)
        checks += _guarded("time sync", doctor.check_time_sync)
    return checks


def cmd_doctor(args: Any) -> int:
    from meshems.core import diagnosis as dx
    from meshems.ops.doctor import as_json

    if args.broker_wait <= 0 or args.broker_wait > 60:
        print("error E_USAGE: --broker-wait must be above 0 and at most 60 s", file=sys.stderr)
        return 2
    checks = collect(args)
    if args.output == "json":
        print(as_json(checks))
    else:
        print("\n".join(dx.render(checks)))
    return dx.exit_code(checks)
