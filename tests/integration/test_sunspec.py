"""SunSpec end to end against simulated devices that serve real model chains (pysunspec2's
encoding, from 40000): `meshems sunspec scan` lists the chain of a PV inverter, a battery
and a meter; `profile: sunspec` devices are configured from their scanned chain, read with
scale factors applied and written through their enables (the simulator, like a real device,
ignores a control that is not enabled); a device that is away at start uses its cached chain,
and one never seen is left out with its error."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from meshems.adapters.sunspec_device import cache_path, scan_profiles
from meshems.core.config import NodeConfig
from meshems.core.node_events import Write
from meshems.node.field import FieldService
from tests.conftest import free_ports
from tests.integration.conftest import meshems_cli, sim_process
from tests.integration.test_field import run, until

pytestmark = pytest.mark.integration

UNITS = {1: "meter", 2: "battery", 3: "pv"}
PV_RATED_KW = 60.0


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, int]]:
    """A `meshems sim` process: (Modbus port, control port)."""
    folder = tmp_path_factory.mktemp("sunspec")
    port, control = free_ports(2)
    site = {
        "site": {"seed": 5, "start_h": 12, "pv_rated_kw": PV_RATED_KW, "battery_kw": 50, "battery_kwh": 100},
        "servers": [{"id": "a", "type": "tcp", "host": "127.0.0.1", "port": port}],
        "devices": [
            {"server": "a", "unit_id": u, "model": m, "profile": "sunspec"} for u, m in UNITS.items()
        ],
        "control": {"host": "127.0.0.1", "port": control},
    }
    with sim_process(folder, site):
        yield port, control


def scan(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return meshems_cli("sunspec", "scan", "--host", "127.0.0.1", "--port", str(port), *args, timeout=60)


def models(res: subprocess.CompletedProcess[str]) -> dict[int, dict[str, Any]]:
    assert res.returncode == 0, res.stderr
    body = json.loads(res.stdout)
    assert body["base"] == 40000
    return {m["id"]: {**m, "values": {p["name"]: p["value"] for p in m["points"]}} for m in body["models"]}


def test_scan_lists_each_chain_with_scale_factors_applied(sim: tuple[int, int]) -> None:
    port, _ = sim
    pv = models(scan(port, "--unit", "3", "-o", "json"))
    assert list(pv) == [1, 103, 120, 123]
    assert pv[1]["values"]["Md"] == "sim-pv" and pv[1]["values"]["SN"] == "SIM003"
    assert pv[120]["values"]["WRtg"] == pytest.approx(PV_RATED_KW * 1000)  # 6000 * 10 ** 1
    assert 0 < pv[103]["values"]["W"] <= PV_RATED_KW * 1000  # noon: producing
    assert pv[123]["address"] == pv[120]["address"] + 2 + pv[120]["length"]
    battery = models(scan(port, "--unit", "2", "-o", "json"))
    assert list(battery) == [1, 103, 120, 124, 704, 713]
    assert battery[713]["values"]["WHRtg"] == pytest.approx(100_000)
    meter = models(scan(port, "--unit", "1", "-o", "json"))
    assert list(meter) == [1, 203] and 200 < meter[203]["values"]["PhV"] < 260
    text = scan(port, "--unit", "3")
    assert text.returncode == 0 and "SunSpec base 40000, 4 models: 1, 103, 120, 123" in text.stdout


def test_scan_names_what_it_found_where_there_is_no_sunspec(sim: tuple[int, int]) -> None:
    port, _ = sim
    wrong = scan(port, "--unit", "3", "--base", "40070")  # a model's address, not the marker
    assert wrong.returncode != 0 and "E_SUNSPEC" in wrong.stderr
    (dead,) = free_ports(1)
    res = meshems_cli(
        "sunspec", "scan", "--host", "127.0.0.1", "--port", str(dead), "--unit", "1", timeout=60
    )
    assert res.returncode != 0 and "E_SUNSPEC_NOT_FOUND" in res.stderr and "E_CONNECT" in res.stderr


def node(port: int, *units: int) -> NodeConfig:
    devices = [
        {"id": f"ss-{UNITS[u]}", "kind": UNITS[u], "bus": "a", "unit_id": u, "profile": "sunspec",
         "poll_interval_s": 0.2, "min_kw": -50 if UNITS[u] == "battery" else 0,
         "max_kw": 50 if UNITS[u] == "battery" else 0}
        for u in units
    ]  # fmt: skip
    bus = {"id": "a", "type": "tcp", "host": "127.0.0.1", "port": port, "timeout_s": 0.5}
    body = {
        "id": "n1",
        "address": "127.0.0.1",
        "raft_port": 1,
        "api_port": 2,
        "buses": [bus],
        "devices": devices,
    }
    return NodeConfig.model_validate(body)


class Logged:
    def __init__(self) -> None:
        self.lines: list[tuple[str, str, str]] = []

    def __call__(self, level: str, code: str, message: str, **_: Any) -> None:
        self.lines.append((level, code, message))

    def codes(self) -> list[str]:
        return [code for _, code, _ in self.lines]


def test_profile_sunspec_devices_read_and_write_through_their_chain(
    sim: tuple[int, int], tmp_path: Path
) -> None:
    port, _ = sim
    cfg = node(port, 1, 2, 3)
    log = Logged()

    async def body() -> None:
        profiles = await scan_profiles({"a": cfg.buses[0]}, list(cfg.devices), tmp_path, log)
        assert sorted(profiles) == ["ss-battery", "ss-meter", "ss-pv"], log.lines
        assert log.codes().count("I_SUNSPEC_SCANNED") == 3
        assert profiles["ss-pv"].roles["limit_pct"] == "123.WMaxLimPct"
        assert profiles["ss-battery"].enables["setpoint_kw"] == (("704.WSetEna", 1), ("704.WSetMod", 1))
        readings: list[Any] = []
        field = FieldService(cfg, profiles, readings.append)
        await field.start()
        try:
            poller = field.poller

            def values(dev: str) -> dict[str, float]:
                return poller.device_status(poller.devices[dev])["values"]  # type: ignore[no-any-return]

            await until(lambda: all(poller.devices[d].counters["ok"] >= 2 for d in profiles), what="polled")
            pv = poller.device_status(poller.devices["ss-pv"])["values"]
            assert 0 < pv["power_kw"] <= PV_RATED_KW and pv["rated_kw"] == pytest.approx(PV_RATED_KW)
            assert pv["limit_pct"] == pytest.approx(100.0)
            meter = poller.device_status(poller.devices["ss-meter"])["values"]
            assert 200 < meter["voltage_v"] < 260 and meter["frequency_hz"] == pytest.approx(50.0, abs=0.5)
            # a setpoint written straight to WSet, not enabled: the device ignores it
            res = await poller.write("ss-battery", "704.WSet", -20.0)
            assert not res["ok"], res
            # through the field service: WSetEna and WSetMod first, then WSet in watts
            done = await field.write_now(
                Write("ss-battery", "ss-battery", "setpoint_kw", -20.0, None, "test")
            )
            assert done.ok, done
            await until(lambda: poller.point_values("ss-battery")["704.WSetEna"] == 1, what="WSetEna polled")
            await until(
                lambda: values("ss-battery")["power_kw"] < -15,
                what="the battery charging at the setpoint",
            )
            done = await field.write_now(Write("ss-pv", "ss-pv", "limit_pct", 40.0, None, "test"))
            assert done.ok, done
            await until(
                lambda: poller.point_values("ss-pv")["123.WMaxLim_Ena"] == 1, what="WMaxLim_Ena polled"
            )
            await until(
                lambda: values("ss-pv")["power_kw"] <= 0.41 * PV_RATED_KW, what="PV curtailed to 40 %"
            )
        finally:
            await field.stop()
        # back to a full limit and no setpoint for the other tests of this module
        field = FieldService(cfg, profiles, readings.append)
        await field.start()
        try:
            await until(
                lambda: all(field.poller.devices[d].counters["ok"] >= 1 for d in profiles), what="polled"
            )
            assert (await field.write_now(Write("ss-pv", "ss-pv", "limit_pct", 100.0, None, "test"))).ok
            assert (
                await field.write_now(Write("ss-battery", "ss-battery", "setpoint_kw", 0.0, None, "test"))
            ).ok
        finally:
            await field.stop()

    run(body)
    assert json.loads(cache_path(tmp_path, "ss-pv").read_text())["models"][0] == {
        "id": 1, "address": 40002, "length": 66}  # fmt: skip


def test_a_device_away_at_start_uses_its_cached_chain_and_one_never_seen_is_left_out(
    sim: tuple[int, int], tmp_path: Path
) -> None:
    port, _ = sim
    live = node(port, 3)
    (dead,) = free_ports(1)
    away = node(dead, 3)
    log = Logged()

    async def body() -> None:
        first = await scan_profiles({"a": live.buses[0]}, list(live.devices), tmp_path, log)
        again = await scan_profiles({"a": away.buses[0]}, list(away.devices), tmp_path, log)
        assert again["ss-pv"].points == first["ss-pv"].points
        assert "W_SUNSPEC_CACHED" in log.codes()
        never = await scan_profiles({"a": away.buses[0]}, list(away.devices), tmp_path / "fresh", log)
        assert never == {}
        level, code, message = log.lines[-1]
        assert level == "error" and code == "E_SUNSPEC_NOT_FOUND"
        assert "ss-pv" in message and "bus a" in message and "no cached chain" in message

    run(body)


def test_a_cluster_of_sunspec_sites_dispatches_through_the_chains(make_cluster: Any, tmp_path: Path) -> None:
    """Real node processes whose meter, battery and PV are `profile: sunspec`: each node scans
    its devices at start (the factory waits until every device is declared), caches the
    chains, and a committed battery setpoint reaches the simulated battery through 704."""
    from tests.integration.test_cluster import wait_until
    from tests.integration.test_control import sim as site_of

    c = make_cluster(
        nodes=3, wired=True, profiles={"meter": "sunspec", "battery": "sunspec", "pv": "sunspec"}
    )
    c.wait_leader()
    assert cache_path(c.cfg.data_dir("n2"), "n2-bat").exists()
    out = meshems_cli("setpoint", "set", "--config", c.config_path, "n2-bat", "-12")
    assert out.returncode == 0, out.stderr
    wait_until(
        lambda: site_of(c, "n2")["battery_kw"] < -10, timeout_s=20, what="n2's battery charging at -12 kW"
    )
