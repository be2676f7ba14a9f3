"""Bus ownership: a single-master Modbus device two gateways can reach is polled by exactly
one owner recorded in the zone state; when the owner's gateway dies, ownership moves."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from meshems.adapters.config_file import load_config
from meshems.ops.supervisor import LocalCluster
from tests.integration.test_cluster import wait_until

pytestmark = pytest.mark.integration


def shared_pv(path: Path) -> None:
    """n1's PV inverter is also wired to n2 (a second bus to n1's site): shared on both."""
    doc = yaml.safe_load(path.read_text())
    n1, n2 = doc["nodes"][0], doc["nodes"][1]
    pv = next(d for d in n1["devices"] if d["id"] == "n1-pv")
    pv["shared"] = True
    n2["buses"].append({**n1["buses"][0], "id": "n1site"})
    n2["devices"].append({**pv, "bus": "n1site"})
    path.write_text(yaml.safe_dump(doc, sort_keys=False))


def control(c: LocalCluster, node_id: str) -> dict[str, Any]:
    _, body = c.client.request(c.cfg.node(node_id), "GET", "/v1/control")
    return body


def polled_by(c: LocalCluster, node_id: str) -> set[str]:
    _, body = c.client.request(c.cfg.node(node_id), "GET", "/v1/devices")
    return {d["id"] for d in body["devices"] if d["state"] == "ok"}


def test_shared_device_has_one_owner_and_moves_when_it_dies(make_cluster) -> None:
    c = make_cluster(wired=True, start=False)
    shared_pv(Path(c.config_path))
    c.cfg = load_config(c.config_path)
    c.client.cfg = c.cfg
    c.start_sims()
    c.start_all()
    c.wait_leader()

    def shared() -> dict[str, Any]:
        return control(c, "n3").get("shared", {}).get("n1-pv", {})

    wait_until(
        lambda: sorted(shared().get("reachable", [])) == ["n1", "n2"], timeout_s=20, what="both declared"
    )
    owner = shared()["owner"]
    other = "n2" if owner == "n1" else "n1"
    wait_until(lambda: "n1-pv" in polled_by(c, owner), what="owner polls it")
    assert "n1-pv" not in polled_by(c, other)  # exactly one master on the device
    c.kill(owner)
    wait_until(lambda: shared().get("owner") == other, timeout_s=30, what="ownership moves")
    wait_until(lambda: "n1-pv" in polled_by(c, other), timeout_s=15, what="the new owner polls it")
