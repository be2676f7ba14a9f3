"""The harness and the daemon run the same rules: one scenario, through the deterministic
harness and through three real node processes with simulated sites on loopback, gives the
same sequence of committed dispatch decisions and the same modes.

Inputs are held comparable: flat loads at night (no PV), the same seeds, the same policy.
The scenario: peak shaving under 60 kW; an operator lifts the limit to 200 kW (the
batteries go idle); two gateways die, so the third runs in survival; they come back; the
limit returns to 60 kW. Compared: the distinct consecutive decision sets of dispatches that
cover every battery (partial ones come and go with timing), and n3's modes.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from meshems.core import commands
from meshems.core.policy import Policy
from meshems.ops.supervisor import LocalCluster
from meshems.sim.harness import Harness
from tests.integration.test_cluster import wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]
SITE = {"load_shape": "flat", "start_h": 23}
BATTERIES = {"n1-bat", "n2-bat", "n3-bat"}
SCRIPT = [(6.0, "policy", 200.0), (10.0, "kill", None), (16.0, "restart", None), (22.0, "policy", 60.0)]
END_S = 28.0


def full_sets(decisions: list[dict[str, str]]) -> list[dict[str, str]]:
    """Distinct consecutive decision sets of the dispatches that decided every battery."""
    out: list[dict[str, str]] = []
    for d in decisions:
        mine = {k: v for k, v in d.items() if not k.endswith("-relays")}
        if set(mine) >= BATTERIES and (not out or out[-1] != mine):
            out.append(mine)
    return out


def dedup(seq: list[str]) -> list[str]:
    return [m for i, m in enumerate(seq) if i == 0 or seq[i - 1] != m]


def run_harness() -> tuple[list[dict[str, str]], list[str]]:
    h = Harness(policy=Policy(import_limit_kw=60.0), load_shape="flat", start_h=23)
    lines = []
    for t, verb, value in SCRIPT:
        if verb == "policy":
            lines.append(f"at {t} policy import_limit_kw={value}")
        else:
            lines += [f"at {t} {verb} n1", f"at {t} {verb} n2"]
    h.run_script("\n".join([*lines, f"check {END_S}"]))
    modes = ["normal"] + ["survival" if "n3 survival" in x else "normal" for x in h.trace
                          if "n3 survival" in x or "n3 back" in x]  # fmt: skip
    return full_sets([d for _, d in h.dispatch_decisions()]), dedup(modes)


class Observer:
    """Polls the cluster: every committed dispatch's decisions (by cycle) and n3's mode."""

    def __init__(self, c: LocalCluster) -> None:
        self.c, self.decisions, self.modes = c, {}, []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set():
            for n in ("n1", "n2", "n3"):
                try:
                    _, ctl = self.c.client.request(self.c.cfg.node(n), "GET", "/v1/control", timeout_s=0.5)
                except Exception:
                    continue
                rec = ctl.get("last_dispatch")
                if rec is not None:
                    self.decisions[rec["cycle"]] = {k: v["controller"] for k, v in rec["decisions"].items()}
                if n == "n3":
                    self.modes.append(ctl["mode"])
            time.sleep(0.1)


def test_the_harness_and_real_nodes_decide_the_same(make_cluster: Any) -> None:
    want_sets, want_modes = run_harness()
    assert len(want_sets) == 3 and want_modes == ["normal", "survival", "normal"]  # the scenario bites
    c = make_cluster(wired=True, policy={"import_limit_kw": 60}, site=SITE)
    obs = Observer(c)
    obs.thread.start()
    try:
        wait_until(lambda: full_sets(list(obs.decisions.values())), 30, "a dispatch of every battery")
        t0 = time.monotonic()
        for t, verb, value in SCRIPT:
            time.sleep(max(0.0, t0 + t - time.monotonic()))
            if verb == "policy":
                data = commands.encode("set_policy", f"op-{t}", values={"import_limit_kw": value})
                assert c.client.propose(data, prefer="n3")["ok"]
            elif verb == "kill":
                c.kill("n1")
                c.kill("n2")
            else:
                c.start("n1")
                c.start("n2")
        time.sleep(max(0.0, t0 + END_S - time.monotonic()))
    finally:
        obs.stop.set()
        obs.thread.join(timeout=5)
    got_sets = full_sets([obs.decisions[k] for k in sorted(obs.decisions)])
    assert got_sets == want_sets
    assert dedup(obs.modes) == want_modes
