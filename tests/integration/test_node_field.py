"""Nodes with wired devices (real node processes, simulated sites over Modbus TCP): readings
in `meshems devices` and `status`, measurement summaries replicated through Raft, committed
setpoints actuated on the device and refreshed before its revert timeout."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from meshems.ops.supervisor import LocalCluster
from tests.integration.conftest import meshems_cli
from tests.integration.test_cluster import set_sp, status_of, wait_until

pytestmark = pytest.mark.integration


def devices(cluster: LocalCluster, node_id: str) -> dict[str, dict[str, Any]]:
    _, body = cluster.client.request(cluster.cfg.node(node_id), "GET", "/v1/devices")
    return {d["id"]: d for d in body["devices"]}


@pytest.fixture(scope="module")
def wired(tmp_path_factory: pytest.TempPathFactory):
    from tests.integration.conftest import ClusterFactory

    factory = ClusterFactory(tmp_path_factory.mktemp("wired"))
    try:
        yield factory(wired=True)
    finally:
        factory.close()


def test_devices_are_polled_and_shown(wired: LocalCluster) -> None:
    wait_until(lambda: all(d["state"] == "ok" for d in devices(wired, "n1").values()), what="n1 devices ok")
    out = meshems_cli("devices", "--config", wired.config_path, "-o", "json")
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert {r["id"] for r in rows} >= {"n1-meter", "n1-bat", "n1-pv", "n1-relays", "n2-bat", "n3-bat"}
    bat = next(r for r in rows if r["id"] == "n1-bat")
    for key in ("state", "age_s", "rate_hz", "timeouts", "crc_errors", "exceptions", "values"):
        assert key in bat
    assert bat["values"]["capacity_kwh"] == pytest.approx(100.0)
    table = meshems_cli("devices", "--config", wired.config_path, "--node", "n2")
    assert table.returncode == 0 and "n2-meter" in table.stdout and "n1-meter" not in table.stdout
    status = json.loads(meshems_cli("status", "--config", wired.config_path, "-o", "json").stdout)
    assert status[0]["readings"]["n1-meter"]["state"] == "ok"
    assert "power_kw" in status[0]["readings"]["n1-meter"]["values"]


def test_summaries_are_replicated_about_once_per_second(wired: LocalCluster) -> None:
    def reports() -> dict[str, Any]:
        return status_of(wired, "n3")["zone_reports"]

    wait_until(lambda: set(reports()) == {"n1", "n2", "n3"}, what="reports from every node")
    first = reports()["n1"]["seq"]
    time.sleep(3.0)
    later = reports()
    assert 1 <= later["n1"]["seq"] - first <= 5  # about 1 Hz, not every register
    assert later["n1"]["devices"] == 4


def test_committed_setpoint_is_actuated_and_refreshed(wired: LocalCluster) -> None:
    res = set_sp(wired, "n2-bat", -12.0, via="n1")  # written through another node
    assert res["ok"], res

    def bat() -> dict[str, Any]:
        return devices(wired, "n2")["n2-bat"]

    wait_until(lambda: bat()["values"].get("setpoint_kw") == pytest.approx(-12.0), what="actuated")
    wait_until(
        lambda: bat()["values"].get("power_kw") == pytest.approx(-12.0, abs=0.01), what="battery follows"
    )
    # the device reverts an unrefreshed setpoint after 3 s; the node refreshes it in time
    time.sleep(7.0)
    assert bat()["values"]["setpoint_kw"] == pytest.approx(-12.0)
    _, body = wired.client.request(wired.cfg.node("n2"), "GET", "/v1/devices")
    assert body["actuation"]["applied"]["n2-bat"] == [res["term"], res["index"]]
    assert body["actuation"]["refused_stale"] == 0
    assert sum(1 for w in body["actuation"]["last_writes"] if w["device"] == "n2-bat") >= 2


def test_pv_setpoint_becomes_a_percent_limit(wired: LocalCluster) -> None:
    assert set_sp(wired, "n3-pv", 10.0)["ok"]
    wait_until(
        lambda: devices(wired, "n3")["n3-pv"]["values"].get("limit_pct") == pytest.approx(25.0),
        what="pv limited to 10 of 40 kW",
    )


def test_a_fitted_forecaster_is_replicated_to_peers(make_cluster) -> None:
    from meshems.adapters.forecast_store import save
    from meshems.core.forecast import fit
    from meshems.sim.load_data import synthetic_year

    c = make_cluster(wired=True, start=False)
    model = fit(synthetic_year(seed=1)[: 96 * 56], 0.0, version=7)
    path = c.cfg.data_dir("n1") / "forecast.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    digest = save(model, path)
    c.start_sims()
    c.start_all()
    c.wait_leader()
    for node in ("n2", "n3"):  # a loaded machine brings an API up after the leader is known
        c.wait_api(node)
    wait_until(
        lambda: status_of(c, "n3").get("forecasts", {}).get("n1", {}).get("version") == 7,
        timeout_s=30,
        what="n1's model on n3",
    )
    rec = status_of(c, "n2")["forecasts"]["n1"]
    assert rec["digest"] == digest[:16] and rec["bytes"] > 1000
