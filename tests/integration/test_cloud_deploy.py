"""`meshems cloud deploy` to a real 3-node zone through a real mosquitto (TLS 1.3, client
certificates): a bundle signed by an untrusted release key is refused by the leader with
E_PAYLOAD_UNTRUSTED_KEY on PREFIX/ZONE/results and recorded nowhere; a bundle signed by the
zone's trusted release key becomes a deployment that every node fetches and verifies, shown by
`meshems deploy status`. The cloud key authorises the command, the release key the code."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from meshems.adapters import payload_bundle as pb
from meshems.cli import main
from tests.integration.test_deploy import EXAMPLE
from tests.integration.test_downlink import ZONE, _session_held, wait, zone
from tests.mqtt_broker import MosquittoBroker, Subscriber

pytestmark = pytest.mark.integration


def results_of(results: Subscriber) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in list(results.messages)]


def test_a_cloud_deploy_becomes_a_deployment_and_an_untrusted_bundle_is_refused(
    tmp_path: Path, broker: MosquittoBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    _, trusted = pb.keygen(tmp_path / "release.key")
    pb.keygen(tmp_path / "rogue.key")
    good = pb.build(EXAMPLE, [tmp_path / "release.key"], tmp_path / "peak-guard.mpkg", time.time())
    rogue = pb.build(EXAMPLE, [tmp_path / "rogue.key"], tmp_path / "rogue.mpkg", time.time())
    payloads = {"payloads": {"trusted_keys": [trusted], "threshold": 1}}
    with zone(tmp_path, broker, payloads) as z:
        lc, cloud_yaml, results = z.lc, tmp_path / "cloud" / "cloud.yaml", z.results
        leader = lc.wait_leader(20)
        wait(lambda: _session_held(broker), 5, "the leader holds the zone's command session")

        def cloud_deploy(bundle: Path) -> tuple[int, str, str]:
            capsys.readouterr()
            rc = main(["cloud", "deploy", "--config", str(cloud_yaml), "--zone", ZONE, "--manifest",
                       str(bundle), "--strategy", "all-at-once", "--wait", "--timeout", "10"])  # fmt: skip
            shown = capsys.readouterr()
            return rc, shown.out, shown.err

        rc, _, err = cloud_deploy(rogue.path)
        assert rc == 1 and "E_PAYLOAD_UNTRUSTED_KEY" in err, err
        [refused] = results_of(results)
        assert (refused["code"], refused["ok"], refused["node"]) == ("E_PAYLOAD_UNTRUSTED_KEY", False, leader)

        rc, out, err = cloud_deploy(good.path)
        assert rc == 0, err
        answer = wait(lambda: next((a for a in results_of(results) if a["ok"]), None), 5, "the answer")
        dep_id = answer["deployment_id"]
        assert answer["ok"] and (answer["name"], answer["digest"]) == ("peak-guard", good.digest), answer
        by = answer["node"]  # the leader then (a busy machine may have elected another)
        assert f"deployment {dep_id}: peak-guard {good.manifest.version} committed by {by}" in out, out

        def verified_everywhere() -> dict[str, Any] | None:
            _, body = lc.client.request(lc.cfg.nodes[0], "GET", "/v1/deployments")
            deps = body.get("deployments") or []
            done = [d for d in deps if all(c["status"] == "verified" for c in d["nodes"].values())]
            return done[0] if done and len(deps) == 1 else None

        dep = wait(verified_everywhere, 10, "every node verified the cloud's bundle")
        assert (dep["id"], dep["by"], dep["origin"]) == (dep_id, "cloud", by), dep
        capsys.readouterr()
        assert main(["deploy", "status", "--config", lc.config_path, "-o", "json"]) == 0
        shown = json.loads(capsys.readouterr().out)["deployments"]
        assert [d["id"] for d in shown] == [dep_id], shown
        assert {n: c["status"] for n, c in shown[0]["nodes"].items()} == dict.fromkeys(
            ("n1", "n2", "n3"), "verified"
        )
