"""`meshems cloud deploy` to a real 3-node zone through a real mosquitto (TLS 1.3, client
certificates): a bundle signed by an untrusted release key is refused by the leader with
E_PAYLOAD_UNTRUSTED_KEY on PREFIX/ZONE/results and recorded nowhere; a bundle signed by the
zone's trusted release key becomes a deployment that every node fetches and verifies, shown by
`meshems deploy status`. The cloud key authorises the command, the release key the code."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshems.adapters import payload_bundle as pb
from meshems.adapters import pki
from meshems.adapters.config_file import load_config
from meshems.adapters.secret import init_secret, read_secret
from meshems.cli import main
from meshems.core import downlink
from meshems.ops.supervisor import LocalCluster
from tests.conftest import write_config
from tests.integration.test_deploy import EXAMPLE
from tests.integration.test_downlink import _session_held, wait
from tests.mqtt_broker import MosquittoBroker, Subscriber

pytestmark = pytest.mark.integration
ZONE = "zone-t"


@contextmanager
def zone(
    tmp_path: Path, broker: MosquittoBroker, release_key: str
) -> Iterator[tuple[LocalCluster, Path, Subscriber]]:
    """The zone of tests/integration/test_downlink.py, trusting `release_key` for payloads."""
    _, public = pb.keygen(tmp_path / "cloud" / "command.key")
    crt, key = broker.client_files("cloud")
    cloud_yaml = tmp_path / "cloud" / "cloud.yaml"
    cloud_yaml.write_text(yaml.safe_dump({
        "broker_host": broker.host, "broker_port": broker.port, "ca_file": str(broker.ca_file),
        "cert_file": str(crt), "key_file": str(key), "client_id": "cloud",
    }))  # fmt: skip
    path = write_config(tmp_path, nodes=3)
    doc = yaml.safe_load(path.read_text())
    for n in doc["nodes"]:
        pki.issue(broker.pki_folder, n["id"], "node")
    doc["zone"] = ZONE
    doc["cloud"] = {"broker_host": broker.host, "broker_port": broker.port,
                    "ca_file": str(broker.pki_folder / "ca.crt"), "cert_dir": str(broker.pki_folder),
                    "outbox_dir": "outbox", "reconnect_min_s": 0.2, "reconnect_max_s": 1.0,
                    "command_keys": [public]}  # fmt: skip
    doc["payloads"] = {"trusted_keys": [release_key], "threshold": 1}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    cfg = load_config(path)
    init_secret(cfg.secret_path)
    lc = LocalCluster(cfg, str(path), read_secret(cfg.secret_path), tmp_path / "logs")
    try:
        with broker.subscribe(downlink.results_topic("meshems", ZONE)) as results:
            lc.start_all()
            yield lc, cloud_yaml, results
    finally:
        lc.stop_all()


def results_of(results: Subscriber) -> list[dict[str, Any]]:
    return [json.loads(m.payload) for m in list(results.messages)]


def test_a_cloud_deploy_becomes_a_deployment_and_an_untrusted_bundle_is_refused(
    tmp_path: Path, broker: MosquittoBroker, capsys: pytest.CaptureFixture[str]
) -> None:
    _, trusted = pb.keygen(tmp_path / "release.key")
    pb.keygen(tmp_path / "rogue.key")
    good = pb.build(EXAMPLE, [tmp_path / "release.key"], tmp_path / "peak-guard.mpkg", time.time())
    rogue = pb.build(EXAMPLE, [tmp_path / "rogue.key"], tmp_path / "rogue.mpkg", time.time())
    with zone(tmp_path, broker, trusted) as (lc, cloud_yaml, results):
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
