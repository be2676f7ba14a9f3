"""A `policy` payload on a real 2-node zone: deploying a signed policy bundle makes its file the
zone's policy (the leader proposes it through Raft once every node verified it), a bundle with
an unknown policy key is refused with E_PAYLOAD_DATA naming the file and the key and nothing is
recorded, and `deploy rollback` restores the policy of the version active before."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from meshems.adapters import payload_bundle as pb
from tests.integration.conftest import ClusterFactory, meshems_cli
from tests.integration.test_deploy import start_trusting

pytestmark = pytest.mark.integration


def bundle(tmp_path: Path, version: str, policy: str) -> Path:
    folder = tmp_path / f"site-policy-{version}"
    folder.mkdir()
    (folder / "manifest.yaml").write_text(
        f"name: site-policy\nversion: {version}\nkind: policy\nentry_point: policy.yaml\n"
        "expires_at: 2099-01-01T00:00:00Z\n"
    )
    (folder / "policy.yaml").write_text(policy)
    return pb.build(folder, [tmp_path / "release.key"], tmp_path / f"p-{version}.mpkg", time.time()).path


def wait_deployment(cluster: Any, dep_id: str, state: str) -> dict[str, Any]:
    end = time.monotonic() + 8
    while time.monotonic() < end:
        _, body = cluster.client.request(cluster.cfg.nodes[0], "GET", "/v1/deployments")
        dep = next((d for d in body["deployments"] if d["id"] == dep_id), None)
        if dep is not None and dep["state"] == state and (state != "done" or dep["applied"] == "OK"):
            return dep
        time.sleep(0.1)
    raise AssertionError(f"{dep_id} not {state} within 8 s: {dep}")


def import_limit(cluster: Any) -> float:
    _, body = cluster.client.request(cluster.cfg.nodes[1], "GET", "/v1/control")
    return body["policy"]["import_limit_kw"]


def test_a_policy_bundle_sets_the_zone_policy_and_a_rollback_restores_it(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    _, key = pb.keygen(tmp_path / "release.key")
    cluster = make_cluster(nodes=2, start=False, policy={"import_limit_kw": 50.0})
    start_trusting(cluster, key)
    c = cluster.config_path

    def deploy(version: str, policy: str, dep_id: str) -> None:
        res = meshems_cli("deploy", "--config", c, "--manifest", str(bundle(tmp_path, version, policy)),
                          "--zone", "--strategy", "all-at-once", "--id", dep_id)  # fmt: skip
        assert res.returncode == 0, res.stderr

    deploy("1.0.0", "import_limit_kw: 37\nexport_limit_kw: 12\n", "pol-1")
    wait_deployment(cluster, "pol-1", "done")
    assert import_limit(cluster) == 37.0

    typo = bundle(tmp_path, "1.0.1", "import_limt_kw: 20\n")
    bad = meshems_cli("deploy", "--config", c, "--manifest", str(typo), "--zone", "--id", "pol-bad")
    assert bad.returncode == 1 and "E_PAYLOAD_DATA" in bad.stderr, bad.stderr
    assert "files/policy.yaml: import_limt_kw: unknown policy field" in bad.stderr
    _, body = cluster.client.request(cluster.cfg.nodes[0], "GET", "/v1/deployments")
    assert [d["id"] for d in body["deployments"]] == ["pol-1"] and import_limit(cluster) == 37.0

    deploy("1.1.0", "import_limit_kw: 33\nexport_limit_kw: 12\nmargin_kw: 1.5\n", "pol-2")
    wait_deployment(cluster, "pol-2", "done")
    assert import_limit(cluster) == 33.0

    res = meshems_cli("deploy", "rollback", "--config", c, "--name", "site-policy", "--id", "pol-back")
    assert res.returncode == 0, res.stderr
    back = wait_deployment(cluster, "pol-back", "done")
    assert (back["version"], back["rollback"]) == ("1.0.0", True)
    shown = meshems_cli("policy", "get", "--config", c, "-o", "json")
    assert shown.returncode == 0, shown.stderr
    policy = json.loads(shown.stdout)["policy"]
    assert (policy["import_limit_kw"], policy["margin_kw"]) == (37.0, 2.0)  # margin_kw: only 1.1.0 set it
    assert back["applied"] == "OK" and {n["status"] for n in back["nodes"].values()} == {"verified"}
