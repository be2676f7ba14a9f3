"""The node's actuation rules against a real simulated battery (pymodbus), through the field
service: the node's own config is the final word on its devices' limits, whatever the
replicated zone state says.

Found by an attack probe: a forged declaration widened n1-bat to +/-5000 kW in the zone
state, and a 900 kW setpoint was then written (and read back) to a battery configured
for +/-50 kW. The zone state here is built by the real `apply` from such a declaration.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from meshems.adapters.actuation_fence import ActuationFence
from meshems.adapters.profiles import builtin_profiles
from meshems.core import commands
from meshems.core.cluster import ZoneState, apply
from meshems.core.config import parse_config
from meshems.core.node import Node
from meshems.core.node_events import Applied, DeviceReading, Log, RaftChanged, Tick, Write
from meshems.core.node_spec import NodeSpec
from meshems.node.field import FieldService
from meshems.sim.server import SimRunner
from tests.conftest import free_ports
from tests.integration.test_field import node, run, site, until

pytestmark = pytest.mark.integration


def zone_with(bat_limit_kw: float, *setpoints: float) -> list[ZoneState]:
    """Zone states after a declaration of a-battery at +/-bat_limit_kw, then each setpoint."""
    dev = {"id": "a-battery", "kind": "battery", "min_kw": -bat_limit_kw, "max_kw": bat_limit_kw}
    data = commands.encode("declare_node", "d", node_id="n1", raft="h:1", api="h:2", devices=[dev])
    state, res = apply(ZoneState(), data, 1, 1)
    assert res.ok
    out = []
    for i, kw in enumerate(setpoints):
        sp = commands.encode("set_setpoint", f"s{i}", device_id="a-battery", kw=kw, source="operator")
        state, res = apply(state, sp, 1, state.last_index + 1)
        assert res.ok, res  # the (forged) zone limits allow it
        out.append(state)
    return out


def test_a_setpoint_beyond_the_configured_limits_is_never_written() -> None:
    (port,) = free_ports(1)

    async def body() -> None:
        cfg = node([{"id": "a", "type": "tcp", "host": "127.0.0.1", "port": port}], {"a": [2]})
        assert (cfg.devices[0].min_kw, cfg.devices[0].max_kw) == (-50, 50)
        runner = SimRunner(site([{"id": "a", "type": "tcp", "port": port}]), dict(builtin_profiles()))
        await runner.start()
        readings: list[DeviceReading] = []
        field = FieldService(cfg, {d.id: builtin_profiles()[d.profile] for d in cfg.devices}, readings.append)
        await field.start()
        cluster = parse_config({"cluster": "t", "zone": "z", "raft": {"secret_file": "s"},
                                "nodes": [cfg.model_dump(exclude_none=True)]})  # fmt: skip
        machine = Node(NodeSpec.from_config(cluster, "n1", field.roles()))
        machine.step(RaftChanged("follower", 1, "n2", True, True))

        async def step(state: ZoneState) -> list:
            for r in readings:
                machine.step(r)
            readings.clear()
            actions = machine.step(Applied(state)) + machine.step(Tick(machine.now_s + 0.1, 0.0))
            for a in actions:
                if isinstance(a, Write):
                    machine.step(await field.write_now(a))
            return actions

        try:
            await until(lambda: any(r.answered for r in readings), what="first poll")
            wide, within = zone_with(5000.0, 900.0, 20.0)
            actions = await step(wide)
            assert not any(isinstance(a, Write) and a.role == "setpoint_kw" for a in actions)
            assert any(isinstance(a, Log) and a.code == "E_LIMIT" and "900" in a.message for a in actions)
            await asyncio.sleep(0.3)
            assert runner.sim.site.battery.setpoint_kw == 0.0  # 900 kW never reached the wire
            assert machine.actuation.refused_limit >= 1 and "a-battery" not in machine.actuation.applied
            again = await step(wide)  # refreshing the same committed value: refused, not logged again
            assert not any(isinstance(a, Log) and a.code == "E_LIMIT" for a in again)
            await step(within)  # a value inside both limits is written as usual
            assert runner.sim.site.battery.setpoint_kw == pytest.approx(20.0)
            sp = within.setpoints["a-battery"]
            assert machine.actuation.applied["a-battery"] == (sp.term, sp.index)
        finally:
            await field.stop()
            await runner.stop()

    run(body)


def test_a_restarted_node_never_writes_an_older_committed_value(tmp_path: Path) -> None:
    """The fault lab found it: after a restart a node re-applies the log only up to the commit
    index its new leader knows, and wrote (9, 16) after (27, 50). The fence in its data folder
    refuses an older token than any it wrote, also across a restart."""
    (port,) = free_ports(1)
    (tmp_path / "raft.journal").write_bytes(b"j")  # a node with a past

    async def body() -> None:
        cfg = node([{"id": "a", "type": "tcp", "host": "127.0.0.1", "port": port}], {"a": [2]})
        runner = SimRunner(site([{"id": "a", "type": "tcp", "port": port}]), dict(builtin_profiles()))
        await runner.start()
        profiles = {d.id: builtin_profiles()[d.profile] for d in cfg.devices}

        def setpoint(kw: float, token: tuple[int, int]) -> Write:
            return Write("a-battery", "a-battery", "setpoint_kw", kw, token, "committed", kw)

        try:
            field = FieldService(cfg, profiles, lambda r: None, fence=ActuationFence.in_folder(tmp_path))
            await field.start()
            assert (await field.write_now(setpoint(20.0, (27, 50)))).ok
            await field.stop()
            assert runner.sim.site.battery.setpoint_kw == pytest.approx(20.0)
            field = FieldService(cfg, profiles, lambda r: None, fence=ActuationFence.in_folder(tmp_path))
            await field.start()  # the same gateway after a restart
            stale = await field.write_now(setpoint(-10.0, (9, 16)))
            assert not stale.ok and stale.code == "E_STALE_TOKEN" and "(27, 50)" in stale.message
            await asyncio.sleep(0.3)
            assert runner.sim.site.battery.setpoint_kw == pytest.approx(20.0)  # never reached the wire
            assert (await field.write_now(setpoint(15.0, (27, 51)))).ok
            assert runner.sim.site.battery.setpoint_kw == pytest.approx(15.0)
            await field.stop()
        finally:
            await runner.stop()

    run(body)
