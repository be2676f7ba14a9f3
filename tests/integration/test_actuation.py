"""The actuator against a real simulated battery (pymodbus): the node's own config is the
final word on its devices' limits, whatever the replicated zone state says.

Found by an attack probe: a forged declaration widened n1-bat to +/-5000 kW in the zone
state, and a 900 kW setpoint was then written (and read back) to a battery configured
for +/-50 kW. The zone state here is built by the real `apply` from such a declaration.
"""

from __future__ import annotations

import asyncio

import pytest

from meshems.actuation import Actuator
from meshems.core import commands
from meshems.core.cluster import ZoneState, apply
from tests.conftest import free_ports
from tests.integration.test_field import node, run, site, started, until

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
        runner, poller = await started(site([{"id": "a", "type": "tcp", "port": port}]), cfg)
        actuator = Actuator(cfg, poller)
        try:
            await until(lambda: poller.devices["a-battery"].last_ok is not None, what="first poll")
            wide, within = zone_with(5000.0, 900.0, 20.0)
            actuator.on_state(wide)
            await actuator.step()
            await asyncio.sleep(0.3)
            assert runner.sim.site.battery.setpoint_kw == 0.0  # 900 kW never reached the wire
            assert actuator.refused_limit == 1 and "a-battery" not in actuator.applied
            await actuator.step()  # refreshing the same committed value: refused, logged once
            assert actuator.refused_limit == 2
            actuator.on_state(within)  # a value inside both limits is written as usual
            await actuator.step()
            assert runner.sim.site.battery.setpoint_kw == pytest.approx(20.0)
            assert actuator.applied["a-battery"] == (within.setpoints["a-battery"].term,
                                                     within.setpoints["a-battery"].index)  # fmt: skip
        finally:
            await poller.stop()
            await runner.stop()

    run(body)
