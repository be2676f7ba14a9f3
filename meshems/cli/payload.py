"""`meshems payload keygen | build | verify`: signed logic payload bundles, offline on the
operator's machine (no node is asked). Owns these commands' arguments and output; keys,
bundles and every check are `adapters.payload_bundle` and the pure `core.payload_*`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from meshems.cli.args import CONFIG_HELP, add_command, add_group, add_output
from meshems.cli.output import print_json

EXAMPLES = {
    "payload keygen": "meshems payload keygen --out release.key",
    "payload build": "meshems payload build cluster-configs/payloads/peak-guard --key release.key "
    "-o peak-guard-1.0.0.mpkg",
    "payload verify": "meshems payload verify peak-guard-1.0.0.mpkg --trusted-key release.pub -o json",
}


def add_parsers(sub: Any) -> None:
    """Add `payload keygen`, `payload build` and `payload verify` to the top-level subparsers."""
    group = add_group(sub, "payload", "signed logic payload bundles: release keys, build, verify")
    s = add_command(group, "keygen", "make an Ed25519 release key: KEY (0600) and its public key KEY.pub",
                    EXAMPLES["payload keygen"], config=False)  # fmt: skip
    s.add_argument(
        "--out", required=True, type=Path, metavar="KEY", help="private key file, e.g. release.key"
    )
    s.add_argument(
        "--force", action="store_true", help="replace an existing key (its bundles stay signed by it)"
    )
    s.set_defaults(run=cmd_payload_keygen)
    s = add_command(group, "build", "build a signed bundle (.mpkg) from a folder with a manifest.yaml",
                    EXAMPLES["payload build"], config=False)  # fmt: skip
    s.add_argument("dir", type=Path, metavar="DIR", help="the payload folder: manifest.yaml and its files")
    s.add_argument(
        "--key", required=True, action="append", type=Path, help="release key to sign with (repeatable)"
    )
    s.add_argument("-o", "--out", required=True, type=Path, metavar="FILE", help="the bundle to write")
    s.set_defaults(run=cmd_payload_build)
    what = "check a bundle: archive, signatures, manifest, expiry, every file's SHA-256; say what is wrong"
    s = add_command(group, "verify", what, EXAMPLES["payload verify"], config=False)
    s.add_argument("file", type=Path, metavar="FILE", help="the bundle (.mpkg)")
    trust = s.add_mutually_exclusive_group(required=True)
    trust.add_argument("--config", "-c", help=CONFIG_HELP + ": its payloads.trusted_keys and threshold")
    trust.add_argument("--trusted-key", action="append", metavar="KEY",
                       help="a trusted public key: 64 hex digits or a .pub file (repeatable)")  # fmt: skip
    s.add_argument(
        "--threshold", type=int, metavar="N", help="with --trusted-key: signatures needed (default 1)"
    )
    s.add_argument("--active", metavar="VERSION", help="refuse a version not newer than this one (rollback)")
    add_output(s)
    s.set_defaults(run=cmd_payload_verify)


def cmd_payload_keygen(args: Any) -> int:
    from meshems.adapters.payload_bundle import keygen

    pub, key = keygen(args.out, force=args.force)
    print(f"wrote {args.out} (private, mode 0600; keep it off the gateways) and {pub}:\n{key}")
    print(f"pin it in the cluster config:  payloads: {{trusted_keys: [{key}], threshold: 1}}")
    return 0


def cmd_payload_build(args: Any) -> int:
    from meshems.adapters.payload_bundle import build
    from meshems.cli.output import size

    built = build(args.dir, args.key, args.out, time.time())
    m = built.manifest
    what = f"{m.name} {m.version} ({m.kind}), {len(m.files)} file(s), {size(m.total_bytes)}"
    print(f"built {built.path}: {what}, signed by {len(set(args.key))} key(s), expires {m.expires_at}")
    print(f"manifest sha256 {built.digest}")
    return 0


def _checks(args: Any) -> Any:
    """The trusted keys and threshold from --config or --trusted-key (usage errors exit 2)."""
    import meshems
    from meshems.adapters.payload_bundle import Checks, trusted_key
    from meshems.core.errors import ConfigError, PayloadManifestError
    from meshems.core.payload_manifest import parse_version

    if args.config:
        from meshems.adapters.config_file import load_config

        if args.threshold is not None:
            raise ConfigError("--threshold goes with --trusted-key; with --config it is payloads.threshold")
        cfg = load_config(args.config)
        keys, threshold = frozenset(cfg.payloads.trusted_keys), cfg.payloads.threshold
        if not keys:
            raise ConfigError(
                f"{args.config}: payloads.trusted_keys: empty; pin the release keys' .pub lines"
            )
    else:
        keys, threshold = frozenset(trusted_key(k) for k in args.trusted_key), args.threshold or 1
    if not 1 <= threshold <= len(keys):
        raise ConfigError(f"--threshold {threshold}: between 1 and the {len(keys)} distinct trusted keys")
    try:
        active = None if args.active is None else parse_version(args.active, "--active")
    except PayloadManifestError as exc:
        raise ConfigError(exc.message) from None
    return Checks(keys, threshold, time.time(), meshems.__version__, active)


def cmd_payload_verify(args: Any) -> int:
    from meshems.adapters.payload_bundle import verify
    from meshems.core.errors import PayloadError
    from meshems.core.payload_checks import key_id

    checks = _checks(args)
    try:
        v = verify(args.file, checks)
    except PayloadError as exc:
        if args.output != "json":
            raise
        print_json({"ok": False, "code": exc.code, "message": exc.message, **exc.context})
        return exc.exit_code
    m = v.manifest
    if args.output == "json":
        print_json({"ok": True, "digest": v.digest, "signers": list(v.signers), "threshold": checks.threshold,
                    "total_bytes": m.total_bytes, **m.as_doc()})  # fmt: skip
        return 0
    from meshems.cli.output import out_console, size, table

    signers = ", ".join(map(key_id, v.signers))
    print(f"ok: {m.name} {m.version} ({m.kind}), signed by {len(v.signers)} trusted key(s), "
          f"{checks.threshold} needed ({signers}); expires {m.expires_at}")  # fmt: skip
    print(f"manifest sha256 {v.digest}")
    t = table("FILE", "SIZE", "SHA-256", right=("SIZE",))
    for f in m.files:
        t.add_row(f.path + (" (entry point)" if f.path == m.entry_point else ""), size(f.size), f.sha256)
    out_console().print(t)
    print(f"limits: {m.limits.memory_mb} MB, {m.limits.cpu_pct} % CPU; cycle budget {m.cycle_budget_ms} ms; "
          f"health: {m.health.shadow_cycles} shadow, {m.health.watch_cycles} watched cycles, at most "
          f"{m.health.max_timeouts} timeouts; rollout within {m.deadline_s} s; needs meshems "
          f"{m.min_meshems_version}")  # fmt: skip
    return 0
