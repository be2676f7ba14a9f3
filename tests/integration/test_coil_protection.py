"""Protection trips relays that are coils, end to end: an Eastron SDM630 (input registers)
reports an import above the node's limit, the node's state machine (`core.node.Node`) sheds
the loads of a Waveshare relay board (coils), and the field service (`node.field`) switches
each coil with function 05, reads it back and verifies it, against real pymodbus servers."""

from __future__ import annotations

import asyncio
import time

import pytest

from meshems.adapters.profiles import device_profiles
from meshems.core.config import NodeConfig, parse_config
from meshems.core.node import Node
from meshems.core.node_events import DeviceReading, Log, RaftChanged, Tick, Write, Written
from meshems.core.node_spec import NodeSpec
from meshems.node.field import FieldService
from meshems.sim.server import SimRunner
from meshems.sim.sitefile import parse_site
from tests.conftest import free_ports
from tests.integration.test_field import run, until

pytestmark = pytest.mark.integration


def test_protection_opens_coil_relays_and_verifies_them() -> None:
    (port,) = free_ports(1)
    profiles = device_profiles()
    spec = parse_site(
        {"site": {"seed": 5, "start_h": 12, "pv_rated_kw": 0, "peak_load_kw": 60, "loads": 4},
         "servers": [{"id": "a", "type": "tcp", "port": port}],
         "devices": [{"server": "a", "unit_id": 1, "model": "meter", "profile": "sdm630"},
                     {"server": "a", "unit_id": 4, "model": "relay", "profile": "waveshare-relay-8ch"}]},
        "site",
    )  # fmt: skip
    cfg = NodeConfig.model_validate(
        {"id": "n1", "address": "127.0.0.1", "raft_port": 1, "api_port": 2,
         "protection": {"max_import_kw": 10, "hold_s": 60},
         "buses": [{"id": "a", "type": "tcp", "host": "127.0.0.1", "port": port, "timeout_s": 0.5}],
         "devices": [
             {"id": "n1-meter", "kind": "meter", "bus": "a", "unit_id": 1, "profile": "sdm630",
              "poll_interval_s": 0.2, "inter_frame_delay_s": 0.005},
             {"id": "n1-relays", "kind": "relay", "bus": "a", "unit_id": 4, "profile": "waveshare-relay-8ch",
              "poll_interval_s": 0.2, "timeout_s": 0.3},
         ]}
    )  # fmt: skip
    cluster = parse_config({"cluster": "t", "zone": "z", "raft": {"secret_file": "s"},
                            "nodes": [cfg.model_dump(exclude_none=True)]})  # fmt: skip

    async def body() -> None:
        runner = SimRunner(spec, profiles)
        await runner.start()
        readings: list[DeviceReading] = []
        field = FieldService(cfg, {d.id: profiles[d.profile or ""] for d in cfg.devices}, readings.append)
        await field.start()
        machine = Node(NodeSpec.from_config(cluster, "n1", field.roles()))
        machine.step(RaftChanged("follower", 1, "n2", True, True))
        machine.step(Tick(time.monotonic(), time.time()))
        trips: list[Write] = []
        outcomes: list[Written] = []
        logs: list[Log] = []

        async def step() -> None:
            batch, readings[:] = list(readings), []
            for r in batch:
                for a in machine.step(r):
                    if isinstance(a, Write):
                        trips.append(a)
                        outcome = await field.write_now(a)
                        outcomes.append(outcome)
                        logs.extend(x for x in machine.step(outcome) if isinstance(x, Log))

        try:
            assert runner.sim.site.meter.grid_kw > 30  # noon in an office with no PV: well over 10 kW
            assert all(runner.sim.site.relays.is_closed(ch) for ch in range(1, 5))
            end = time.monotonic() + 20
            while len(outcomes) < 4 and time.monotonic() < end:
                await step()
                await asyncio.sleep(0.05)
            assert sorted(w.role for w in trips) == ["relay_1", "relay_2", "relay_3", "relay_4"]
            assert all(
                w.device_id == "n1-relays" and w.value == 0.0 and w.source == "protection" for w in trips
            )
            assert all(o.ok and o.code == "OK" for o in outcomes), (
                outcomes
            )  # written with 05, read back with 01
            assert not any(runner.sim.site.relays.is_closed(ch) for ch in range(1, 5))
            assert any(log.code == "I_PROTECTION_TRIP" for log in logs)
            rt = field.poller.devices["n1-relays"]
            polls = rt.counters["ok"]
            await until(lambda: rt.counters["ok"] >= polls + 2, what="relays polled again")
            assert [rt.role_values()[f"relay_{i}"] for i in range(1, 5)] == [0.0] * 4
            assert [rt.role_values()[f"input_{i}"] for i in range(1, 5)] == [0.0] * 4  # auxiliary contacts
            assert rt.counters["writes"] == 4 and rt.counters["write_mismatches"] == 0
            await step()  # the loads stay shed: nothing closed is left to trip
            assert len(trips) == 4
        finally:
            await field.stop()
            await runner.stop()

    run(body)
