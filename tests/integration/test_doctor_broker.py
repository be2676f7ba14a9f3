"""`meshems doctor`'s broker checks against a real mosquitto (TLS 1.3, client certificates)
and a wired 3-node cluster whose leader publishes telemetry: all ✓ while it flows; a topic
prefix that does not match sees no message (✗ with the topic_prefix hint); a stopped
broker fails at TCP (✗ with the nc hint)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from meshems.ops.supervisor import LocalCluster
from tests.integration.test_cloud_sync import cloud_cluster
from tests.integration.test_doctor import doctor, failures
from tests.mqtt_broker import MosquittoBroker

pytestmark = pytest.mark.integration


def wait_published(lc: LocalCluster, timeout_s: float = 20.0) -> None:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        for r in lc.client.status_all(timeout_s=1.0):
            if (
                r.get("reachable")
                and r.get("role") == "leader"
                and (r.get("cloud") or {}).get("acknowledged")
            ):
                return
        time.sleep(0.2)
    raise AssertionError(f"the leader published nothing within {timeout_s} s")


def with_prefix(config: str, prefix: str) -> Path:
    doc: dict[str, Any] = yaml.safe_load(Path(config).read_text())
    doc["cloud"]["topic_prefix"] = prefix
    path = Path(config).with_name("other-prefix.yaml")
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_the_broker_checks_catch_a_topic_mismatch_and_a_stopped_broker(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    (tmp_path / "zone").mkdir()
    with cloud_cluster(tmp_path / "zone", broker) as lc:
        lc.wait_leader()
        wait_published(lc)
        code, checks, table = doctor(lc.config_path, "--node", "n1", "--skip", "devices")
        assert code == 0, table
        for name in ("broker tcp", "broker tls", "broker topic"):
            assert checks[name]["status"] == "ok", table
        assert "TLSv1.3 as n1" in checks["broker tls"]["detail"]
        assert checks["broker topic"]["detail"].startswith("meshems/zone-t/")
        assert checks["outbox"]["status"] == "ok"

        code, checks, table = doctor(with_prefix(lc.config_path, "cloud-ems"), "--node", "n1", "--skip",
                                     "devices", "--broker-wait", "3")  # fmt: skip
        assert code == 1
        assert failures(checks) == ["broker topic"], table
        assert "cloud-ems/zone-t/#" in checks["broker topic"]["detail"]
        assert "topic_prefix" in checks["broker topic"]["hint"]

        broker.stop()
        code, checks, table = doctor(lc.config_path, "--node", "n1", "--skip", "devices")
        assert code == 1
        assert failures(checks) == ["broker tcp"], table
        assert "nc -zv" in checks["broker tcp"]["hint"]
