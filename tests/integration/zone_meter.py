"""A background reader of a local cluster's simulated sites (their control API): the zone
import and the batteries' headroom twice a second, judged by the fault lab's own rule
(`meshems.lab.limits.over_limit`: no coverable excess over the limit for more than 2 s)."""

from __future__ import annotations

import json
import threading
import time
import urllib.request
from typing import Any

from meshems.lab.limits import TOLERANCE_KW, LimitReport, LimitSample, over_limit, site_headroom_kw
from meshems.ops.supervisor import LocalCluster


def read_site(cluster: LocalCluster, node_id: str) -> dict[str, Any]:
    info = json.loads((cluster.log_dir / f"sim-{node_id}.ready").read_text())
    with urllib.request.urlopen(f"http://127.0.0.1:{info['control']}/v1/site", timeout=1) as resp:
        return dict(json.loads(resp.read()))


class ZoneMeter:
    """`with ZoneMeter(c, limit_kw) as m: ...` then `m.report()`."""

    def __init__(self, cluster: LocalCluster, limit_kw: float, period_s: float = 0.5) -> None:
        self.cluster, self.limit_kw, self.period_s = cluster, limit_kw, period_s
        self.samples: list[LimitSample] = []
        self.missed = 0
        #: gateways the test stopped: their batteries' headroom is not the EMS's to use
        self.down: set[str] = set()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _one(self) -> LimitSample:
        t = time.monotonic()
        imp = head = ctl = 0.0
        down = set(self.down)
        for n in self.cluster.cfg.nodes:
            if not n.initial or not n.sim_site:
                continue
            st = read_site(self.cluster, n.id)
            imp += float(st["site"]["grid_kw"])
            head += site_headroom_kw(st)
            ctl += 0.0 if n.id in down else site_headroom_kw(st)
        return LimitSample(t, imp, self.limit_kw, head, ctl if down else None)

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            try:
                self.samples.append(self._one())
            except OSError:
                self.missed += 1

    def __enter__(self) -> ZoneMeter:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def report(self, tolerance_kw: float = TOLERANCE_KW) -> LimitReport:
        """Judged from the first sample at or under the limit (the zone was under control)."""
        first = next((i for i, s in enumerate(self.samples) if s.import_kw <= s.limit_kw), len(self.samples))
        return over_limit(self.samples[first:], tolerance_kw=tolerance_kw)
