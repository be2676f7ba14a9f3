"""Rollouts on a real 3-node zone: the example controller payload (with a small shadow and
watch count) rolls out node by node to all three, ends done and then drives the leader's
dispatch, and the same version again is refused (E_PAYLOAD_ROLLBACK); a payload that crashes
fails its first shadow, the rollout ends failed and the built-in controllers keep dispatching."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from meshems.adapters import payload_bundle as pb
from meshems.ops.supervisor import LocalCluster
from tests.integration.conftest import ClusterFactory, meshems_cli
from tests.integration.test_deploy import EXAMPLE, deployments, start_trusting
from tests.integration.zone_meter import ZoneMeter

pytestmark = pytest.mark.integration
POLICY = {"import_limit_kw": 30.0, "cycle_s": 0.5}
CRASHING = "def decide(image, policy):\n    import os\n\n    os._exit(3)\n"


def payload(tmp_path: Path, name: str, controller: str | None = None) -> Path:
    """The example folder with 2 shadow and 2 watch cycles and a roomy budget (a busy test
    machine), optionally with another controller.py."""
    folder = tmp_path / name
    shutil.copytree(EXAMPLE, folder)
    manifest = (folder / "manifest.yaml").read_text()
    manifest = re.sub(
        r"health: \{.*\}", "health: {shadow_cycles: 2, watch_cycles: 2, max_timeouts: 0}", manifest
    )
    manifest = re.sub(r"cycle_budget_ms: \d+", "cycle_budget_ms: 1000", manifest)
    (folder / "manifest.yaml").write_text(manifest)
    if controller is not None:
        (folder / "controller.py").write_text(controller)
    return folder


def zone(make_cluster: ClusterFactory, tmp_path: Path, folder: Path) -> tuple[LocalCluster, Path]:
    _, key = pb.keygen(tmp_path / "release.key")
    built = pb.build(folder, [tmp_path / "release.key"], tmp_path / f"{folder.name}.mpkg", time.time())
    cluster = make_cluster(wired=True, policy=POLICY, start=False)
    start_trusting(cluster, key, sims=True)
    return cluster, built.path


def deploy(cluster: LocalCluster, bundle: Path, dep_id: str, *more: str) -> None:
    ok = meshems_cli("deploy", "--config", cluster.config_path, "--manifest", str(bundle), "--zone",
                     "--strategy", "rolling", "--id", dep_id, *more)  # fmt: skip
    assert ok.returncode == 0, ok.stderr


def the_deployment(cluster: LocalCluster) -> dict[str, Any]:
    """The one deployment as the leader tells it (a node that just returned may lag behind)."""
    end = time.monotonic() + 15
    while True:
        try:
            leader = cluster.wait_leader()
            _, body = cluster.client.request(
                cluster.cfg.node(leader), "GET", "/v1/deployments", timeout_s=1.0
            )
            [dep] = body["deployments"]
            return dep
        except Exception:
            if time.monotonic() > end:
                raise
            time.sleep(0.1)


def ended(cluster: LocalCluster, timeout_s: float) -> tuple[dict[str, Any], list[dict[str, str]]]:
    """The deployment once it ended, and every distinct set of phases seen on the way."""
    seen: list[dict[str, str]] = []
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        dep = the_deployment(cluster)
        phases = {n: c["phase"] for n, c in dep["nodes"].items()}
        if not seen or seen[-1] != phases:
            seen.append(phases)
        if dep["state"] != "active":
            return dep, seen
        time.sleep(0.1)
    raise AssertionError(f"the rollout did not end within {timeout_s} s: {seen[-1:]}")


def controllers(cluster: LocalCluster) -> set[str]:
    """The controllers of the last committed dispatch, by the leader's view."""
    _, body = cluster.client.request(cluster.cfg.node(cluster.wait_leader()), "GET", "/v1/control")
    return {d["controller"] for d in (body.get("last_dispatch") or {}).get("decisions", {}).values()}


def test_the_example_payload_rolls_out_node_by_node_to_all_three(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster, bundle = zone(make_cluster, tmp_path, payload(tmp_path, "peak-guard"))
    with ZoneMeter(cluster, POLICY["import_limit_kw"]) as meter:
        deploy(cluster, bundle, "pg-1")
        dep, seen = ended(cluster, 25)
    assert dep["state"] == "done", (dep, seen)
    # throughout the rollout the zone stayed under its import limit (none over it > 2 s that
    # the batteries could have covered), judged by the fault lab's rule with the 1 kW the
    # other control tests allow (the example payload aims at the limit itself, not inside it)
    limits = meter.report(tolerance_kw=1.0)
    assert limits.samples >= 6 and meter.missed <= 2, (limits.samples, meter.missed)
    assert limits.ok, (limits.violations, limits.peak_import_kw)
    assert {n: c["phase"] for n, c in dep["nodes"].items()} == dict.fromkeys(("n1", "n2", "n3"), "active")
    for c in dep["nodes"].values():
        assert c["figures"]["cycles"] >= 2 and c["figures"]["crashes"] == 0
    # rolling: never two nodes in shadow or watch at once, and in target order
    for phases in seen:
        assert sum(p in ("shadow", "healthy", "watch") for p in phases.values()) <= 1, seen
    # (on a quick machine n1's promotion and n2's shadow can fall between the same two samples)
    assert [p["n1"] for p in seen].index("active") <= [p["n2"] for p in seen].index("shadow")
    # the leader now dispatches the batteries by the payload
    end = time.monotonic() + 5
    while time.monotonic() < end and not any(
        c.startswith("payload:peak-guard") for c in controllers(cluster)
    ):
        time.sleep(0.2)
    assert any(c.startswith("payload:peak-guard") for c in controllers(cluster)), controllers(cluster)
    status = meshems_cli("deploy", "history", "--config", cluster.config_path, "-o", "json")
    [row] = json.loads(status.stdout)["deployments"]
    assert row["nodes"]["n3"]["phase"] == "active"
    again = meshems_cli("deploy", "--config", cluster.config_path, "--manifest", str(bundle), "--zone",
                        "--id", "pg-again")  # fmt: skip
    assert again.returncode == 0, again.stderr
    deps = {d["id"]: d for d in deployments(cluster)}
    end = time.monotonic() + 10
    while deps["pg-again"]["state"] == "active" and time.monotonic() < end:
        time.sleep(0.2)
        deps = {d["id"]: d for d in deployments(cluster)}
    assert deps["pg-again"]["state"] == "failed" and deps["pg-again"]["code"] == "E_PAYLOAD_ROLLBACK"


def test_a_crashing_payload_fails_its_shadow_and_the_builtin_controller_keeps_dispatching(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster, bundle = zone(make_cluster, tmp_path, payload(tmp_path, "crasher", CRASHING))
    deploy(cluster, bundle, "crash-1")
    dep, _ = ended(cluster, 20)
    assert dep["state"] == "failed" and dep["code"] == "E_PAYLOAD_CRASH", dep
    assert dep["nodes"]["n1"]["phase"] == "failed" and dep["nodes"]["n1"]["figures"]["crashes"] >= 1
    assert {dep["nodes"][n]["phase"] for n in ("n2", "n3")} == {"waiting"}
    leader = cluster.wait_leader()
    _, before = cluster.client.request(cluster.cfg.node(leader), "GET", "/v1/control")
    time.sleep(1.5)
    _, after = cluster.client.request(cluster.cfg.node(leader), "GET", "/v1/control")
    assert after["last_dispatch"]["cycle"] > before["last_dispatch"]["cycle"]
    assert not any(c.startswith("payload") for c in controllers(cluster)), controllers(cluster)
    table = meshems_cli("deploy", "status", "--config", cluster.config_path)
    assert "failed" in table.stdout and "E_PAYLOAD_CRASH" in table.stdout, table.stdout


def test_a_rolling_deploy_resumes_and_completes_after_the_leader_is_killed_in_the_middle(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster, bundle = zone(make_cluster, tmp_path, payload(tmp_path, "peak-guard"))
    # the signed manifest says 2 and 2; the deployment's own counts win (--shadow-cycles)
    deploy(cluster, bundle, "pg-1", "--shadow-cycles", "3", "--watch-cycles", "1")
    end = time.monotonic() + 15
    while time.monotonic() < end:  # the middle: a node is active, the others are not yet
        phases = {n: c["phase"] for n, c in the_deployment(cluster)["nodes"].items()}
        if "active" in phases.values():
            break
        time.sleep(0.1)
    assert list(phases.values()).count("active") == 1 and the_deployment(cluster)["state"] == "active", phases
    first = next(n for n, p in phases.items() if p == "active")
    old = cluster.wait_leader()
    cluster.kill(old)
    new = cluster.wait_leader(exclude={old})
    cluster.start(old)  # back as a follower: a target of the rollout too
    dep, seen = ended(cluster, 30)
    assert dep["state"] == "done", (dep, seen)
    assert {n: c["phase"] for n, c in dep["nodes"].items()} == dict.fromkeys(("n1", "n2", "n3"), "active")
    assert all(p[first] == "active" for p in seen), seen  # nothing done before the kill was undone
    for c in dep["nodes"].values():
        assert c["figures"]["cycles"] >= 1 and c["figures"]["crashes"] == 0
    assert dep["shadow_cycles"] == 3 and dep["watch_cycles"] == 1 and new != old


def test_a_gateway_offline_during_the_deploy_gets_it_when_it_returns(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    cluster, bundle = zone(make_cluster, tmp_path, payload(tmp_path, "peak-guard"))
    leader = cluster.wait_leader()
    away = next(n for n in ("n3", "n2") if n != leader)  # a follower: the zone keeps its quorum
    cluster.kill(away)
    deploy(cluster, bundle, "pg-1", "--shadow-cycles", "1", "--watch-cycles", "1")
    end = time.monotonic() + 15
    while time.monotonic() < end:  # the rollout goes as far as it can without it
        dep = the_deployment(cluster)
        before = [t for t in dep["targets"] if t < away]
        if all(dep["nodes"][t]["phase"] == "active" for t in before):
            break
        time.sleep(0.1)
    time.sleep(1.0)
    dep = the_deployment(cluster)
    assert dep["state"] == "active" and dep["nodes"][away]["status"] == "pending", dep
    assert dep["nodes"][away]["phase"] == "waiting"
    stored = cluster.cfg.data_dir(away) / "payloads" / dep["digest"] / "bundle.mpkg"
    assert not stored.exists()
    cluster.start(away)
    dep, seen = ended(cluster, 30)
    assert dep["state"] == "done", (dep, seen)
    assert dep["nodes"][away]["status"] == "verified" and dep["nodes"][away]["phase"] == "active"
    assert stored.read_bytes() == bundle.read_bytes()
