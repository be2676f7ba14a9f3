"""Samples the lab's simulated sites during a fault run: every site's grid meter and battery
from its sim's control API (GET /v1/site on the gateway's underlay address, reachable from
the root namespace whatever the WireGuard faults do), twice a second, on a thread.

Owns the sampling and the zone's import limit as committed; must not judge the samples
(lab.limits does) nor make faults.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from meshems.core.errors import UnreachableError
from meshems.lab.gateways import Lab
from meshems.lab.labconfig import SIM_CONTROL_PORT
from meshems.lab.limits import NO_LIMIT_KW, LimitSample, site_headroom_kw


def read_site(address: str, timeout_s: float = 0.4) -> dict[str, Any]:
    with urllib.request.urlopen(f"http://{address}:{SIM_CONTROL_PORT}/v1/site", timeout=timeout_s) as r:
        return json.loads(r.read())


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
        imp = headroom = controllable = 0.0
        all_up = True
        for n, site in zip(nodes, sites, strict=True):
            imp += float(site["site"]["grid_kw"])
            room = site_headroom_kw(site)
            headroom += room
            if self.lab.running(n):  # a paused gateway counts: it runs, and must be covered for
                controllable += room
            else:
                all_up = False
        self.rounds.append((t, imp, headroom, controllable, all_up))

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
        """The rounds as JSON lines (t_s, import_kw, headroom_kw, controllable_kw, all_up)."""
        keys = ("t_s", "import_kw", "headroom_kw", "controllable_kw", "all_up")
        path.write_text("".join(json.dumps(dict(zip(keys, r, strict=True))) + "\n" for r in self.rounds))

    def samples(self, limit_kw: float) -> list[LimitSample]:
        return [
            LimitSample(t, imp, limit_kw, room, None if up else ctl) for t, imp, room, ctl, up in self.rounds
        ]
