"""Samples the lab's simulated sites during a fault run: every site's grid meter and battery
from its sim's control API (GET /v1/site on the gateway's underlay address, reachable from
the root namespace whatever the WireGuard faults do), twice a second, on a thread.

Owns the sampling and the zone's import limit: the one the fault run commits
(`LAB_POLICY`) and the one committed at the end; must not judge the samples (lab.limits
does) nor make faults.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import MappingProxyType
from typing import Any

from meshems.core import commands
from meshems.core.errors import UnreachableError
from meshems.lab.gateways import Lab
from meshems.lab.labconfig import SIM_CONTROL_PORT
from meshems.lab.limits import NO_LIMIT_KW, LimitSample, site_headroom_kw
from meshems.lab.netlab import LabError


def read_site(address: str, timeout_s: float = 0.4) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{address}:{SIM_CONTROL_PORT}/v1/site", timeout=timeout_s) as r:
        return json.loads(r.read())


#: The fault run's zone policy. With their batteries at 0 the lab's three sites import about
#: 50 kW together (each 55 kW of office load less 38.5 kW of PV at the sims' 12:00 start;
#: 50-54 kW over the first 30 minutes), so holding 30 kW takes about 22 kW of discharge
#: (aimed 2 kW inside: margin_kw): under half of ONE battery's 50 kW, so the two batteries
#: left when a gateway is down (or any single one) can hold it, and for hours (3 x 50 kWh
#: above the 10 % floor at the sims' 60 % SoC). Reactive: the rules alone, no planner (no
#: forecast-driven peak below the limit, no LP on the lab's CPUs).
LAB_POLICY: Mapping[str, Any] = MappingProxyType({"import_limit_kw": 30.0, "mode": "reactive"})


def hold_limit(lab: Lab, values: Mapping[str, Any], say: Any = print, timeout_s: float = 20.0) -> None:
    """Commit the zone policy `values` (`set_policy` through any node, retried until
    committed) and wait, bounded, until the zone import is under its limit, so the run's
    samples start with dispatch holding it (if it never gets there, the gate says so)."""
    data = commands.encode("set_policy", f"lab-{lab.plan.tag}-policy", values=dict(values))
    body = lab.client.propose(data, deadline_s=timeout_s)
    if not body.get("ok"):
        raise LabError(f"the lab zone's policy was refused: {body.get('code')}: {body.get('message')}")
    limit = float(values["import_limit_kw"])
    began = time.monotonic()
    imp = zone_import_kw(lab)
    while (imp is None or imp > limit) and time.monotonic() - began < timeout_s:
        time.sleep(0.2)
        imp = zone_import_kw(lab)
    shown = "no reading" if imp is None else f"{imp:.1f} kW"
    say(f"import limit {limit:g} kW committed (index {body.get('index')}); zone import {shown} "
        f"after {time.monotonic() - began:.1f} s")  # fmt: skip


def zone_import_kw(lab: Lab) -> float | None:
    """The sites' grid meters summed now (None when a site does not answer)."""
    try:
        return sum(float(read_site(lab.plan.underlay(n))["site"]["grid_kw"]) for n in lab.plan.nodes)
    except (OSError, ValueError):
        return None


def import_limit_kw(lab: Lab) -> float | None:
    """The zone's committed import limit, asked of each node until one answers; None when
    no policy is committed or its limit is Policy's 1e9 (no limit)."""
    for n in lab.plan.nodes:
        try:
            code, body = lab.client.request(lab.cfg.node(n), "GET", "/v1/control", timeout_s=2.0)
        except UnreachableError:
            continue
        if code == 200:
            limit = (body.get("policy") or {}).get("import_limit_kw")
            return None if limit is None or float(limit) >= NO_LIMIT_KW else float(limit)
    return None


class MeterSampler:
    """Reads every site every `period_s`; a round where a site does not answer is dropped
    (and counted): a zone import without one site's meter would be a made-up figure."""

    def __init__(self, lab: Lab, period_s: float = 0.5) -> None:
        self.lab = lab
        self.period_s = period_s
        self.rounds: list[tuple[float, float, float, float, bool]] = []  # t, import, headroom, ctl, all up
        #: per round, each site's grid import, battery power and whether its battery's setpoint
        #: reverted (its watchdog: no write for its revert timeout): to trace a violation
        self.sites: list[dict[str, tuple[float, float, bool]]] = []
        self.missed = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True, name="meter-sampler")
        self._pool = ThreadPoolExecutor(max_workers=len(lab.plan.nodes), thread_name_prefix="meter")

    def _round(self) -> None:
        nodes = self.lab.plan.nodes
        t = time.time()
        try:
            sites = list(self._pool.map(lambda n: read_site(self.lab.plan.underlay(n)), nodes))
        except (OSError, ValueError):
            self.missed += 1
            return
        headroom = controllable = 0.0
        all_up = True
        seen: dict[str, tuple[float, float, bool]] = {}
        for n, site in zip(nodes, sites, strict=True):
            b = site.get("battery") or {}
            seen[n] = (float(site["site"]["grid_kw"]), float(b.get("power_kw", 0.0)), bool(b.get("reverted")))
            room = site_headroom_kw(site)
            headroom += room
            if self.lab.running(n):  # a paused gateway counts: it runs, and must be covered for
                controllable += room
            else:
                all_up = False
        imp = sum(grid for grid, _, _ in seen.values())
        self.rounds.append((t, imp, headroom, controllable, all_up))
        self.sites.append(seen)

    def _loop(self) -> None:
        while not self._stop.is_set():
            began = time.monotonic()
            self._round()
            self._stop.wait(max(0.0, self.period_s - (time.monotonic() - began)))

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pool.shutdown(wait=False)

    def save(self, path: Path) -> None:
        """The rounds as JSON lines (t_s, import_kw, headroom_kw, controllable_kw, all_up, and
        sites: per node [grid_kw, battery_kw, reverted])."""
        keys = ("t_s", "import_kw", "headroom_kw", "controllable_kw", "all_up")
        path.write_text("".join(
            json.dumps({**dict(zip(keys, r, strict=True)), "sites": s}) + "\n"
            for r, s in zip(self.rounds, self.sites, strict=True)
        ))  # fmt: skip

    def samples(self, limit_kw: float) -> list[LimitSample]:
        return [
            LimitSample(t, imp, limit_kw, room, None if up else ctl) for t, imp, room, ctl, up in self.rounds
        ]
