"""The part of the payload benchmark that needs a real zone: a 3-node local cluster (node
processes, simulated sites, a policy cycle), the example controller padded with a 1 MiB table
built into a bundle, uploaded to the leader and deployed rolling with the given shadow and watch
cycles (`meshems deploy`'s own `push`). Measures the rollout from the commit of the deployment
until it is done, when each node verified its copy and became active, and the bytes each node
received: the upload on the node it went to, the chunks fetched from peers on the others (the
nodes' I_PAYLOAD_FETCHED log records). Used by payload_bench.py; never asserts on time.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from meshems.adapters import payload_bundle as pb
from meshems.adapters.config_file import load_config
from meshems.adapters.secret import init_secret, read_secret
from meshems.cli.deploy import push
from meshems.ops.supervisor import LocalCluster
from tests.conftest import write_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "cluster-configs/payloads/peak-guard"
PAD_BYTES = 1024 * 1024


def padded_bundle(work: Path, key: Path) -> pb.Built:
    """The example controller with a 1 MiB table beside it (random bytes: nothing compresses)."""
    folder = work / "peak-guard-1mb"
    shutil.copytree(EXAMPLE, folder)
    (folder / "table.bin").write_bytes(os.urandom(PAD_BYTES))
    return pb.build(folder, [key], work / "peak-guard-1mb.mpkg", time.time())


def _leader_deployment(c: LocalCluster) -> dict[str, Any] | None:
    try:
        leader = c.wait_leader(timeout_s=5)
        _, body = c.client.request(c.cfg.node(leader), "GET", "/v1/deployments", timeout_s=1.0)
    except Exception:
        return None
    rows = body.get("deployments") or []
    return rows[-1] if rows else None


def _received(c: LocalCluster, via: str, size: int) -> dict[str, int]:
    """Bytes each node received for the bundle: the upload on `via`, fetched chunks elsewhere."""
    out = {}
    for n in c.cfg.nodes:
        fetched = 0
        for line in c.log_text(n.id).splitlines():
            if line.startswith("{") and '"I_PAYLOAD_FETCHED"' in line:
                fetched += int(json.loads(line).get("bytes", 0))
        out[n.id] = fetched + (size if n.id == via else 0)
    return out


def measure_rollout(
    work: Path, key: Path, public: str, shadow: int, watch: int, cycle_s: float, sites: bool = True
) -> dict[str, Any]:
    """`sites`: each node with its simulated site (the payload decides on real readings);
    without, the nodes have no devices (a quicker start for a smoke test)."""
    built = padded_bundle(work, key)
    folder = work / "zone"
    folder.mkdir()
    path = write_config(folder, wired=sites, policy={"import_limit_kw": 30.0, "cycle_s": cycle_s})
    doc = yaml.safe_load(path.read_text())
    doc["payloads"] = {"trusted_keys": [public], "threshold": 1}
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path)
    init_secret(cfg.secret_path)
    c = LocalCluster(cfg, str(path), read_secret(cfg.secret_path), folder / "logs")
    verified: dict[str, float] = {}
    active: dict[str, float] = {}
    dep: dict[str, Any] | None = None
    try:
        if sites:
            c.start_sims()
        c.start_all()
        for n in cfg.nodes:
            c.wait_api(n.id)
        leader = c.wait_members()  # the deploy targets the zone's members when it commits
        t0 = time.monotonic()
        res = push(c.client, cfg.raft.commit_timeout_s, built.path, via=leader, shadow_cycles=shadow,
                   watch_cycles=watch)  # fmt: skip
        if not res.get("ok"):
            raise RuntimeError(f"deploy refused: {res.get('code')}: {res.get('message')}")
        committed_s = time.monotonic() - t0
        end = t0 + 3 * (shadow + watch) * cycle_s * 4 + 60
        while time.monotonic() < end:
            dep = _leader_deployment(c) or dep
            now = time.monotonic() - t0
            for node, copy in (dep or {}).get("nodes", {}).items():
                if copy["status"] == "verified":
                    verified.setdefault(node, now)
                if copy["phase"] == "active":
                    active.setdefault(node, now)
            if dep is not None and dep["state"] != "active":
                break
            time.sleep(0.1)
        done_s = time.monotonic() - t0
        received = _received(c, res["via"], built.size)
    finally:
        for node_id in list(c.procs):  # all at once: each one's shutdown in parallel
            c.signal(node_id, signal.SIGTERM)
        c.stop_all()
    ideal_s = len(cfg.nodes) * (shadow + watch) * cycle_s
    return {
        "rollout_state": dep["state"] if dep else "unknown", "rollout_s": round(done_s, 2),
        "rollout_commit_s": round(committed_s, 3), "rollout_nodes": len(cfg.nodes),
        "rollout_sites": sites, "rollout_shadow_cycles": shadow, "rollout_watch_cycles": watch,
        "rollout_cycle_s": cycle_s,
        "rollout_cycles_s": round(ideal_s, 2), "rollout_ratio": round(done_s / ideal_s, 2),
        "rollout_all_verified_s": round(max(verified.values()), 2) if len(verified) == 3 else None,
        "rollout_active_s": {n: round(active[n], 2) for n in sorted(active)},
        "bundle_1mb_bytes": built.size, "bytes_per_node": received,
        "bytes_per_node_max": max(received.values()),
        "bytes_ratio_max": round(max(received.values()) / built.size, 3),
    }  # fmt: skip
