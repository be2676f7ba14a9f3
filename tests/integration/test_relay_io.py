"""Manual I/O with real node processes and simulated sites, through the `meshems` CLI: an
operator's `relay set` holds a load through a leader kill, `relay clear` and `--for` hand
it back to control, and `io read` reports what `mbpoll` (a Modbus master we did not write)
put into a device."""

from __future__ import annotations

import json
import re
import subprocess
import time

import pytest

from meshems.ops.supervisor import LocalCluster
from tests.integration.conftest import meshems_cli
from tests.integration.test_cluster import wait_until
from tests.integration.test_control import control, sim

pytestmark = [pytest.mark.integration, pytest.mark.slow]
#: a limit no site reaches: restore may switch every load back on
POLICY = {"import_limit_kw": 500.0, "shed_order": ["n1-relays:4", "n2-relays:4", "n3-relays:4"]}


def cli(c: LocalCluster, *args: str) -> subprocess.CompletedProcess[str]:
    res = meshems_cli(*args, "--config", c.config_path)
    assert res.returncode == 0, res.stderr
    return res


def cycle(c: LocalCluster, node: str) -> int:
    return (control(c, node).get("last_dispatch") or {}).get("cycle", 0)


def test_relay_set_holds_a_load_through_a_leader_kill_until_cleared_or_expired(make_cluster) -> None:
    c = make_cluster(wired=True, policy=POLICY)
    leader = c.wait_leader()
    wait_until(lambda: cycle(c, leader) >= 2, timeout_s=30, what="dispatch running")
    site = next(n for n in ("n1", "n2", "n3") if n != leader)  # its relays outlive the kill
    load = f"{site}-relays:4"
    assert sim(c, site)["shed"] == 0
    out = cli(c, "relay", "set", load, "off", "--for", "10m").stdout
    assert "held off by operator until" in out, out
    wait_until(lambda: sim(c, site)["shed"] == 1, timeout_s=10, what="the relay opened")
    explained = json.loads(cli(c, "explain", load, "-o", "json").stdout)
    assert explained["override"]["closed"] is False and explained["override"]["source"] == "operator"
    assert explained["relay"]["controller"] == "override"

    c.kill(leader)
    new = c.wait_leader(exclude={leader}, timeout_s=20)
    start = cycle(c, new)
    wait_until(lambda: cycle(c, new) >= start + 3, timeout_s=30, what="dispatch under the new leader")
    assert sim(c, site)["shed"] == 1  # restore had headroom for it, and left it off
    assert control(c, new)["overrides"][load]["closed"] is False

    out = cli(c, "relay", "clear", load).stdout
    assert "override cleared" in out, out
    wait_until(lambda: sim(c, site)["shed"] == 0, timeout_s=15, what="restore switched it back on")
    assert load not in control(c, new)["overrides"]

    cli(c, "relay", "set", load, "off", "--for", "3s")
    wait_until(lambda: sim(c, site)["shed"] == 1, timeout_s=10, what="the relay opened again")
    wait_until(lambda: sim(c, site)["shed"] == 0, timeout_s=20, what="the override expired")
    assert "I_OVERRIDE_EXPIRED" in c.log_text(new)


def test_a_relay_override_of_no_relay_load_is_refused_with_the_relays_named(make_cluster) -> None:
    c = make_cluster(wired=True)
    res = meshems_cli("relay", "set", "n1-bat:1", "off", "--config", c.config_path)
    assert res.returncode == 1
    assert "E_UNKNOWN_DEVICE" in res.stderr and "n1-relays" in res.stderr, res.stderr
    res = meshems_cli("relay", "set", "n1-relays:1", "off", "--for", "soon", "--config", c.config_path)
    assert res.returncode == 2 and "--for" in res.stderr


def test_io_read_reports_what_mbpoll_wrote(make_cluster) -> None:
    c = make_cluster(nodes=1, wired=True)
    port = c.cfg.node("n1").buses[0].port
    before = json.loads(cli(c, "io", "read", "n1-relays", "Relay3", "-o", "json").stdout)
    assert before["points"][0]["value"] == 1.0 and before["points"][0]["role"] == "relay_3"
    # 0-based PDU address 40072 (-0), unit 4, one holding register, written once (-1)
    mb = subprocess.run(
        ["mbpoll", "-m", "tcp", "-p", str(port), "-a", "4", "-t", "4", "-0", "-r", "40072", "-1",
         "127.0.0.1", "0"],
        capture_output=True, text=True, timeout=20,
    )  # fmt: skip
    assert mb.returncode == 0, mb.stdout + mb.stderr
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        after = json.loads(cli(c, "io", "read", "n1-relays", "Relay3", "Load3W", "-o", "json").stdout)
        if after["points"][0]["value"] == 0.0:
            break
    assert after["points"][0]["value"] == 0.0 and after["fresh"], after
    table = cli(c, "io", "read", "n1-relays").stdout
    assert re.search(r"Relay3\s.*\b0\b.*relay_3", table), table
    res = meshems_cli("io", "read", "n1-relays", "Relay9", "--config", c.config_path)
    assert res.returncode == 1 and "E_UNKNOWN_POINT" in res.stderr and "Relay3" in res.stderr
    res = meshems_cli("io", "read", "n7-meter", "--config", c.config_path)
    assert res.returncode == 1 and "E_UNKNOWN_DEVICE" in res.stderr and "n1" in res.stderr
