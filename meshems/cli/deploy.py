"""`meshems deploy [status | history | rollback | abort]`: push a signed, built payload bundle to the zone
(upload to one node, `PUT /v1/payloads`, then the deployment record through the same node; a
folder is refused with the build hint) and follow it. Owns these commands' arguments and
output; every check is the nodes' (trusted keys, every file's SHA-256) and the zone's.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

from meshems.cli.args import add_command, add_output
from meshems.cli.output import fail, print_json

C = "cluster-configs/local-3.yaml"
EXAMPLES = {
    "deploy": f"meshems deploy --config {C} --manifest peak-guard-1.0.0.mpkg --zone --shadow-cycles 30",
    "deploy status": f"meshems deploy status --config {C} -o json",
    "deploy history": f"meshems deploy history --config {C}",
    "deploy abort": f"meshems deploy abort --config {C} peak-guard-1.0.0-3f2a1c",
    "deploy rollback": f"meshems deploy rollback --config {C} --to 1.0.0",
}


def add_parsers(sub: Any) -> None:
    """Add `deploy` and its `status`, `history` and `abort` to the top-level subparsers."""
    what = "deploy a signed payload bundle (.mpkg from meshems payload build) to nodes (needs admin)"
    s = add_command(sub, "deploy", what, EXAMPLES["deploy"])
    if isinstance(s._actions, list):  # the real parser, not the stand-in that lists it
        next(a for a in s._actions if a.dest == "config").required = False  # subcommands take it too
    s.add_argument("--manifest", type=Path, metavar="FILE", help="the built bundle (.mpkg)")
    where = s.add_mutually_exclusive_group()
    where.add_argument("--target-node", action="append", metavar="NODE", help="a target node (repeatable)")
    where.add_argument("--zone", action="store_true", help="every member of the zone (the default)")
    s.add_argument("--strategy", choices=["rolling", "all-at-once"], default="rolling")
    for phase, when in (("shadow", "beside the active one, not applied"), ("watch", "once promoted")):
        s.add_argument(f"--{phase}-cycles", type=int, metavar="N",
                       help=f"a controller's cycles in {phase} ({when}) on each node before its verdict "
                            f"(default: the manifest's health.{phase}_cycles)")  # fmt: skip
    s.add_argument("--id", metavar="ID", help="deployment id (default NAME-VERSION-RANDOM)")
    s.add_argument("--via", metavar="NODE", help="the node to upload to (default: the first that answers)")
    add_output(s)
    s.set_defaults(run=cmd_deploy)
    group = s.add_subparsers(dest="sub", required=False, metavar="SUBCOMMAND")
    t = add_command(
        group, "status", "each open deployment's state on each target node", EXAMPLES["deploy status"]
    )
    add_output(t)
    t.set_defaults(run=cmd_deploy_status, history=False)
    t = add_command(
        group, "history", "every deployment the zone keeps, oldest first", EXAMPLES["deploy history"]
    )
    add_output(t)
    t.set_defaults(run=cmd_deploy_status, history=True)
    t = add_command(
        group, "abort", "end a deployment on every node (always possible)", EXAMPLES["deploy abort"]
    )
    t.add_argument("id", metavar="ID")
    add_output(t)
    t.set_defaults(run=cmd_deploy_abort)
    what = "roll the zone back to a version of a payload (a controller, a policy) that was active before"
    t = add_command(group, "rollback", what, EXAMPLES["deploy rollback"])
    t.add_argument(
        "--to", metavar="VERSION", default="", help="default: the newest one older than the active"
    )
    t.add_argument(
        "--name", metavar="PAYLOAD", help="default: the payload of the latest deployment that ended done"
    )
    t.add_argument("--id", metavar="ID", help="deployment id (default NAME-rollback-RANDOM)")
    add_output(t)
    t.set_defaults(run=cmd_deploy_rollback)


def bundle_head(path: Path) -> tuple[bytes, bytes]:
    """(manifest.json, manifest.sig) of a bundle: its first two members, read as hostile input."""
    import tarfile

    from meshems.core.errors import PayloadBundleError
    from meshems.core.payload_checks import MAX_SIG_BYTES
    from meshems.core.payload_manifest import MAX_MANIFEST_BYTES

    out = []
    try:
        with tarfile.open(path, mode="r|") as tar:
            for want, cap in (("manifest.json", MAX_MANIFEST_BYTES), ("manifest.sig", MAX_SIG_BYTES)):
                m = tar.next()
                if m is None or m.name != want or not m.isreg() or m.size > cap:
                    raise PayloadBundleError(
                        f"{path}: {want} must come next (build it with meshems payload build)"
                    )
                src = tar.extractfile(m)
                assert src is not None
                out.append(src.read(m.size))
    except (OSError, tarfile.TarError) as exc:
        raise PayloadBundleError(f"{path}: not a readable bundle: {exc}") from None
    return out[0], out[1]


def _answer(client: Any, node: Any, method: str, path: str, body: bytes, timeout_s: float) -> dict[str, Any]:
    """One request, retried on the same node while the zone says it may be (its bundle is there)."""
    from meshems.core.errors import RETRYABLE_CODES

    end = time.monotonic() + 15
    while True:
        _, res = client.request(node, method, path, body, timeout_s=timeout_s)
        if res.get("ok") or res.get("code") not in RETRYABLE_CODES or time.monotonic() > end:
            return res
        time.sleep(0.2)


def cmd_deploy(args: Any) -> int:
    from meshems.cli.api import connect
    from meshems.core.errors import ConfigError
    from meshems.core.payload_manifest import from_canonical

    if args.config is None or args.manifest is None:
        raise ConfigError("meshems deploy needs --config and --manifest FILE.mpkg (or a subcommand)")
    if args.manifest.is_dir():
        raise ConfigError(f"{args.manifest} is a folder: build and sign it first (meshems payload build "
                          f"{args.manifest} --key release.key -o X.mpkg), then deploy X.mpkg")  # fmt: skip
    cycles = cycle_overrides(args, from_canonical(bundle_head(args.manifest)[0]).kind)
    cfg, client = connect(args)
    res = push(client, cfg.raft.commit_timeout_s, args.manifest, targets=args.target_node or (),
               strategy=args.strategy, dep_id=args.id, via=args.via, **cycles)  # fmt: skip
    if not res.get("ok"):
        return fail(res.get("code"), res.get("message"))
    if args.output == "json":
        print_json(
            {k: res.get(k) for k in ("ok", "deployment_id", "digest", "via", "name", "version", "index")}
        )
    else:
        what = f"deployment {res['deployment_id']}: {res['name']} {res['version']}"
        print(f"{what} uploaded to {res['via']} and committed; "
              f"follow it with: meshems deploy status --config {args.config}")  # fmt: skip
    return 0


def push(client: Any, commit_timeout_s: float, bundle: Path, targets: Any = (), strategy: str = "rolling",
         dep_id: str | None = None, via: str | None = None, **cycles: int) -> dict[str, Any]:  # fmt: skip
    """Upload `bundle` to the first node that takes it (`via` first) and commit its deployment
    through that node. The commit's answer with deployment_id, digest, via, name and version;
    `ok` false with the refusal's code and message otherwise."""
    from meshems.core import commands
    from meshems.core.errors import MeshemsError
    from meshems.core.payload_manifest import from_canonical, manifest_digest

    canonical, sigs = bundle_head(bundle)
    manifest = from_canonical(canonical)
    data = bundle.read_bytes()
    res: dict[str, Any] = {}
    for node in client.ordered_nodes(via):
        try:
            res = _answer(client, node, "PUT", "/v1/payloads", data, 120.0)
        except MeshemsError as exc:
            res = {"ok": False, "code": exc.code, "message": exc.message}
            continue
        break
    if not res.get("ok"):
        return res
    dep_id = dep_id or f"{manifest.name[:40]}-{manifest.version}-{secrets.token_hex(3)}"
    digest = manifest_digest(canonical)
    cmd = commands.encode("deploy", f"cli-{secrets.token_hex(16)}", deployment_id=dep_id, manifest=canonical,
                          signatures=sigs, digest=digest, size=len(data), targets=sorted(set(targets)),
                          strategy=strategy, by="cli", origin=node.id, **cycles)  # fmt: skip
    res = _answer(client, node, "POST", "/v1/propose", cmd, commit_timeout_s + 2)
    return {**res, "deployment_id": dep_id, "digest": digest, "via": node.id, "name": manifest.name,
            "version": str(manifest.version)}  # fmt: skip


def cycle_overrides(args: Any, kind: str) -> dict[str, int]:
    """--shadow-cycles / --watch-cycles as deploy fields, each checked with the manifest's bounds
    (a usage error, exit 2, names the flag)."""
    from meshems.core.errors import ConfigError
    from meshems.core.payload_manifest import CYCLE_BOUNDS

    out = {}
    for key, (lo, hi) in CYCLE_BOUNDS.items():
        value = getattr(args, key, None)
        if value is None:
            continue
        flag = "--" + key.replace("_", "-")
        if not lo <= value <= hi:
            raise ConfigError(f"{flag} {value}: a count of cycles from {lo} to {hi}")
        if kind != "controller":
            raise ConfigError(f"{flag}: {args.manifest} is a {kind} payload, which has no shadow or watch "
                              "phase (it is done once every target verified it)")  # fmt: skip
        out[key] = value
    return out


def cmd_deploy_status(args: Any) -> int:
    from meshems.cli.api import connect, first_answer

    _, client = connect(args)
    code, body = first_answer(client, None, "/v1/deployments")
    if code != 200:
        return fail(body.get("code"), body.get("message"))
    rows = body["deployments"]
    if not args.history:
        open_ = [d for d in rows if d["state"] == "active"]
        rows = open_ or rows[-1:]
    if args.output == "json":
        print_json({"ok": True, "deployments": rows})
        return 0
    from meshems.cli.output import out_console, table

    t = table("DEPLOYMENT", "PAYLOAD", "STATE", "STRATEGY", "NODE", "COPY", "PHASE", "HEALTH", "WHY")
    for d in rows:
        for i, (node, copy) in enumerate(d["nodes"].items()):
            head = [d["id"], f"{d['name']} {d['version']}", d["state"], d["strategy"]] if i == 0 else [""] * 4
            why = f"{copy['code']}: {copy['message']}" if copy["status"] == "failed" else ""
            if copy.get("phase") in ("failed", "rolled_back"):
                why = f"{copy['phase_code']}: {copy['reason']}"
            data = d.get("kind", "controller") != "controller"
            phase = effect(d, copy) if data else copy.get("phase", "").replace("_", " ")
            if d.get("applied", "").startswith("E_") and not why:
                why = d["applied"]
            t.add_row(*head, node, copy["status"], phase, health(copy), why)
    out_console().print(t) if rows else print("no deployments")
    return 0


def effect(d: dict[str, Any], copy: dict[str, Any]) -> str:
    """What a verified copy of a data payload does: a policy is the zone's once applied (by
    the leader, through Raft); a forecast model is the node's at once; device profiles are
    read when the node starts."""
    if d.get("kind") == "policy":
        applied = d.get("applied", "")
        if applied:
            return "applied" if applied == "OK" else "refused"
        return "applying" if d["state"] == "done" else ""
    if copy["status"] != "verified" or d["state"] == "aborted":
        return ""
    return "at next start" if d.get("kind") == "profiles" else "applied"


def health(copy: dict[str, Any]) -> str:
    """A node's health figures in a few words: cycles, failures, p99 round trip."""
    f = copy.get("figures") or {}
    if not f:
        return ""
    bad = [f"{int(f[k])} {k}" for k in ("errors", "timeouts", "crashes", "refused") if f.get(k)]
    return ", ".join([f"{int(f.get('cycles', 0))} cycles", *bad, f"p99 {f.get('p99_ms', 0):.1f} ms"])


def cmd_deploy_rollback(args: Any) -> int:
    from meshems.cli.api import connect, first_answer, new_rid
    from meshems.core import commands

    _, client = connect(args)
    name = args.name
    if name is None:
        code, body = first_answer(client, None, "/v1/deployments")
        if code != 200:
            return fail(body.get("code"), body.get("message"))
        done = [d for d in body["deployments"] if d["state"] == "done"]
        if not done:
            return fail("E_PAYLOAD_ROLLBACK", "no payload is active in this zone: nothing to roll back")
        name = done[-1]["name"]
    dep_id = args.id or f"{name[:40]}-rollback-{secrets.token_hex(3)}"
    res = client.propose(commands.encode("deploy_rollback", new_rid(), deployment_id=dep_id, name=name,
                                         to_version=args.to, by="cli"))  # fmt: skip
    if not res.get("ok"):
        return fail(res.get("code"), res.get("message"))
    print_json({**res, "deployment_id": dep_id}) if args.output == "json" else print(
        f"deployment {dep_id}: {res.get('message')}; follow it with: meshems deploy status"
    )
    return 0


def cmd_deploy_abort(args: Any) -> int:
    from meshems.cli.api import connect, new_rid
    from meshems.core import commands

    _, client = connect(args)
    res = client.propose(commands.encode("deploy_abort", new_rid(), deployment_id=args.id, by="cli"))
    if not res.get("ok"):
        return fail(res.get("code"), res.get("message"))
    print_json(res) if args.output == "json" else print(f"deployment {args.id}: {res.get('message')}")
    return 0
