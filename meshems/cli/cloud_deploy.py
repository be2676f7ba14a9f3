"""`meshems cloud deploy`: a signed payload bundle sent to one zone as a signed cloud command
(`deploy`, the bundle in the command), with the zone leader's answer on `--wait`: the
deployment it committed, or the refusal's code. Owns the command's arguments and output; the
signing and publishing are `meshems.cloud.downlink`'s, every trust check the zone's.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from meshems.cli.args import add_command

EXAMPLE = ("meshems cloud deploy --config cloud.yaml --zone zone-a --manifest peak-guard-1.0.0.mpkg "
           "--strategy rolling --shadow-cycles 30 --wait")  # fmt: skip
CLOUD_CONFIG_HELP = "cloud config (YAML): broker, client certificate, topic_prefix, command_key_file"


def add_parsers(cloud: Any) -> None:
    """Add `cloud deploy` to the `cloud` group."""
    what = "send a signed payload bundle to one zone (a signed command on PREFIX/ZONE/commands)"
    s = add_command(cloud, "deploy", what, EXAMPLE, config=False)
    s.add_argument("--config", "-c", required=True, help=CLOUD_CONFIG_HELP)
    s.add_argument("--zone", required=True, help="the zone (its cluster config's zone)")
    s.add_argument("--manifest", required=True, type=Path, metavar="BUNDLE_OR_DIR",
                   help="a built bundle (.mpkg, at most 4 MiB), or a folder with --release-key")  # fmt: skip
    s.add_argument("--release-key", action="append", type=Path, metavar="KEY",
                   help="build and sign a folder with this release key first (repeatable)")  # fmt: skip
    s.add_argument("--target-node", action="append", metavar="NODE", help="a target node (repeatable; "
                   "default: every member of the zone)")  # fmt: skip
    s.add_argument("--strategy", choices=["rolling", "all-at-once"], default="rolling")
    for phase in ("shadow", "watch"):
        s.add_argument(f"--{phase}-cycles", type=int, metavar="N", help=f"a controller's cycles in {phase} "
                       f"on each node (default: the manifest's health.{phase}_cycles)")  # fmt: skip
    s.add_argument("--expires", default="10m", help="the zone refuses it after, e.g. 90s, 10m (default 10m)")
    s.add_argument("--wait", action="store_true", help="wait for the leader's answer on PREFIX/ZONE/results")
    s.add_argument("--timeout", type=float, default=30.0, help="how long --wait waits (s, default 30)")
    s.set_defaults(run=cmd_deploy)


def bundle_file(args: Any, tmp: Path) -> Path:
    """The bundle to send: the file, or the folder built and signed into `tmp`. Raises
    ConfigError (a folder without --release-key) and PayloadError (the build)."""
    from meshems.core.errors import ConfigError

    path: Path = args.manifest
    if path.is_dir():
        if not args.release_key:
            raise ConfigError(f"{path} is a folder: build it (meshems payload build {path} --key release.key "
                              "-o X.mpkg) and send X.mpkg, or give --release-key KEY")  # fmt: skip
        import time

        from meshems.adapters.payload_bundle import build

        path = build(path, args.release_key, tmp / f"{path.name}.mpkg", time.time()).path
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read it ({exc.strerror})") from None
    from meshems.core.downlink_deploy import MAX_CLOUD_BUNDLE_BYTES, too_large

    if size > MAX_CLOUD_BUNDLE_BYTES:
        raise BundleTooLarge(too_large(str(args.manifest), size))
    return path


class BundleTooLarge(Exception):
    """A bundle over MAX_CLOUD_BUNDLE_BYTES (E_CMD_TOO_LARGE, exit 1)."""


def cmd_deploy(args: Any) -> int:
    import tempfile

    from meshems.cli.cloud_send import load
    from meshems.cli.deploy import bundle_head, cycle_overrides
    from meshems.cli.output import fail
    from meshems.cli.relay import duration_s
    from meshems.cloud.downlink import send
    from meshems.core.payload_manifest import from_canonical

    try:
        expires_s = duration_s(args.expires)
    except ValueError as exc:
        print(f"error E_USAGE: --expires: {exc}", file=sys.stderr)
        return 2
    cfg = load(args.config)
    with tempfile.TemporaryDirectory(prefix="meshems-cloud-deploy-") as tmp:
        try:
            path = bundle_file(args, Path(tmp))
        except BundleTooLarge as exc:
            return fail("E_CMD_TOO_LARGE", exc)
        data = path.read_bytes()
        manifest = from_canonical(bundle_head(path)[0])
    cycles = cycle_overrides(args, manifest.kind)
    what = {
        "bundle": data,
        "strategy": args.strategy,
        "targets": sorted(set(args.target_node or ())),
        **cycles,
    }
    record, answer = send(cfg, args.zone, "deploy", what, expires_s, args.timeout if args.wait else None)
    print(f"sent command {record.command_id} seq {record.seq} to {args.zone}: deploy {manifest.name} "
          f"{manifest.version} ({len(data)} bytes, {args.strategy})")  # fmt: skip
    if not args.wait:
        return 0
    if answer is None:
        return fail("E_TIMEOUT", f"no answer from {args.zone} within {args.timeout:g} s (it stays queued "
                    "for the zone until it expires)")  # fmt: skip
    if answer.get("ok"):
        again = " (already applied: a repeat)" if answer.get("duplicate") else ""
        dep = answer.get("deployment_id") or "?"
        print(f"deployment {dep}: {manifest.name} {manifest.version} committed by {answer.get('node')} at "
              f"term {answer.get('term')}, index {answer.get('index')}{again}; follow it with: "
              "meshems deploy status --config ZONE.yaml")  # fmt: skip
        return 0
    return fail(answer.get("code"), answer.get("message"))
