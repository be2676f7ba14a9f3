"""`meshems forecast show` against real node processes: each node answers `GET /v1/forecast`
with its own coming day (96 quarter-hours from the current step) and the basis its reserve
uses: its fitted model, the same time yesterday, or nothing yet."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest

from meshems.adapters.forecast_store import save, save_history
from meshems.core.forecast import fit
from meshems.core.load_history import LoadHistory
from meshems.sim.load_data import synthetic_year
from tests.integration.conftest import meshems_cli

pytestmark = pytest.mark.integration


def show(config: str, node: str, *extra: str) -> dict:
    out = meshems_cli("forecast", "show", "--config", config, "--node", node, "-o", "json", *extra)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_forecast_show_gives_each_nodes_day_and_its_basis(make_cluster) -> None:
    year = synthetic_year(seed=1)
    c = make_cluster(nodes=3, start=False)
    step_now = math.floor(time.time() / 900) * 900
    for node, days in (("n1", 8), ("n2", 2)):  # history up to the current step; n3 has none
        folder = c.cfg.data_dir(node)
        folder.mkdir(parents=True, exist_ok=True)
        values = [float(v) for v in year[96 * 60 : 96 * (60 + days)]]
        save_history(
            LoadHistory(t0_s=step_now - 900.0 * len(values), values=values), folder / "load_history.npz"
        )
    save(fit(year[: 96 * 56], 0.0, version=2), c.cfg.data_dir("n1") / "forecast.npz")
    c.start_all()
    for n in c.cfg.nodes:
        c.wait_api(n.id)

    bodies = {n: show(c.config_path, n) for n in ("n1", "n2", "n3")}
    for node, body in bodies.items():
        assert body["node_id"] == node and body["step_s"] == 900 and len(body["kw"]) == 96
        assert body["start_s"] % 900 == 0 and 0 <= body["start_s"] - step_now <= 2 * 900  # the current step
    assert bodies["n1"]["basis"] == "model v2"
    assert all(v is not None and v >= 0 for v in bodies["n1"]["kw"])
    n2 = bodies["n2"]
    assert n2["basis"] == "same time yesterday"
    if n2["start_s"] == step_now:  # no step boundary passed since the history was written
        assert n2["kw"] == pytest.approx(np.round(year[96 * 61 : 96 * 62], 3).tolist(), abs=1e-3)
    assert bodies["n3"]["basis"] == "no history yet" and bodies["n3"]["kw"] == [None] * 96

    assert len(show(c.config_path, "n2", "--hours", "6")["kw"]) == 24
    out = meshems_cli("forecast", "show", "--config", c.config_path, "--node", "n2")
    assert out.returncode == 0, out.stderr
    assert "basis: same time yesterday" in out.stdout and "kW ┤" in out.stdout and "max " in out.stdout
