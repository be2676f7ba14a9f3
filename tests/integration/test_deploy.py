"""Payload distribution on a real 3-node zone: `meshems deploy` uploads the example bundle to
one node, the deployment is committed, every node fetches the bytes from a peer over the node
API, verifies them against its own trusted key and reports verified; a tampered bundle is
refused at upload with E_PAYLOAD_HASH and nothing is recorded."""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshems.adapters import payload_bundle as pb
from meshems.ops.supervisor import LocalCluster
from tests.integration.conftest import ClusterFactory, meshems_cli

pytestmark = pytest.mark.integration
EXAMPLE = Path(__file__).resolve().parents[2] / "cluster-configs" / "payloads" / "peak-guard"


def start_trusting(cluster: LocalCluster, key: str, sims: bool = False) -> None:
    """Start a cluster made with `start=False` whose config pins the release key `key`
    (threshold 1), its sims first with `sims`; back once every API is up, a leader leads and
    every node is a member of the zone."""
    doc = yaml.safe_load(Path(cluster.config_path).read_text())
    doc["payloads"] = {"trusted_keys": [key], "threshold": 1}
    Path(cluster.config_path).write_text(yaml.safe_dump(doc))
    if sims:
        cluster.start_sims()
    cluster.start_all()
    for n in cluster.cfg.nodes:
        cluster.wait_api(n.id)
    cluster.wait_members()  # a `--zone` deploy targets the members when it commits


def deployments(cluster: Any) -> list[dict[str, Any]]:
    _, body = cluster.client.request(cluster.cfg.nodes[0], "GET", "/v1/deployments")
    return body["deployments"]


def tampered(bundle: Path, out: Path) -> Path:
    """The bundle with one byte of its controller changed (the manifest and signature kept)."""
    buf = io.BytesIO()
    with tarfile.open(bundle) as src, tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as dst:
        for m in src.getmembers():
            data = src.extractfile(m).read()  # type: ignore[union-attr]
            if m.name == "files/controller.py":
                data = data.replace(b"def ", b"def  ", 1)[: m.size]
            dst.addfile(m, io.BytesIO(data))
    out.write_bytes(buf.getvalue())
    return out


def test_a_deploy_reaches_every_node_and_a_tampered_bundle_is_refused(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    _, key = pb.keygen(tmp_path / "release.key")
    built = pb.build(EXAMPLE, [tmp_path / "release.key"], tmp_path / "peak-guard.mpkg", time.time())
    cluster = make_cluster(start=False)
    start_trusting(cluster, key)

    bad = meshems_cli("deploy", "--config", cluster.config_path, "--manifest",
                      str(tampered(built.path, tmp_path / "bad.mpkg")), "--zone")  # fmt: skip
    assert bad.returncode == 1 and "E_PAYLOAD_HASH" in bad.stderr, bad.stderr
    assert "controller.py" in bad.stderr
    assert deployments(cluster) == []

    ok = meshems_cli("deploy", "--config", cluster.config_path, "--manifest", str(built.path), "--zone",
                     "--strategy", "all-at-once", "--id", "pg-1", "-o", "json")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["digest"] == built.digest
    end = time.monotonic() + 20
    while time.monotonic() < end:
        [dep] = deployments(cluster)
        if all(c["status"] == "verified" for c in dep["nodes"].values()) or dep["state"] != "active":
            break
        time.sleep(0.2)
    assert dep["state"] in ("active", "done"), dep  # a controller's rollout follows (test_rollout.py)
    assert {n: c["status"] for n, c in dep["nodes"].items()} == dict.fromkeys(("n1", "n2", "n3"), "verified")
    for n in cluster.cfg.nodes:
        stored = cluster.cfg.data_dir(n.id) / "payloads" / built.digest
        assert (stored / "bundle.mpkg").read_bytes() == built.path.read_bytes()
        assert (stored / "files" / "controller.py").is_file()
    status = meshems_cli("deploy", "history", "--config", cluster.config_path)
    assert status.returncode == 0 and "pg-1" in status.stdout and "verified" in status.stdout
    aborted = meshems_cli("deploy", "abort", "--config", cluster.config_path, "pg-1")
    assert aborted.returncode == 0, aborted.stderr
    assert deployments(cluster)[0]["state"] == "aborted"
