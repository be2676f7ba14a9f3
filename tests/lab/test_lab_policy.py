"""The fault run's zone policy (lab.meters.LAB_POLICY) against the lab's simulated sites
(lab.labconfig) and its workload (lab.faults.Workload): the import limit is one dispatch
must work to hold and the batteries can hold, and the workload's writes never move the
import. Pure: the sites' physics stepped in memory; no root, no processes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import yaml

from meshems.adapters.config_file import load_config
from meshems.core.config import ClusterConfig
from meshems.core.fencing import pv_limit_pct
from meshems.core.policy import Policy, policy_problems, with_changes
from meshems.lab.faults import Workload
from meshems.lab.labconfig import write_lab_config
from meshems.lab.meters import LAB_POLICY
from meshems.lab.netlab import NetPlan
from meshems.sim.physics import Site
from meshems.sim.sitefile import parse_site

#: the longest run the limit must stay holdable for (the issue's `lab faults --long 30m`)
RUN_S = 1800.0


def _lab(tmp_path: Path) -> ClusterConfig:
    return load_config(write_lab_config(tmp_path, NetPlan.make("t0", 1, ["n1", "n2", "n3"]), sims=True))


def _sites(tmp_path: Path, cfg: ClusterConfig) -> list[Site]:
    """Each gateway's site as its sim builds it (`sim.sim_site.SimSite`)."""
    out = []
    for n in cfg.nodes:
        assert n.sim_site is not None
        p = parse_site(yaml.safe_load((tmp_path / n.sim_site).read_text()), n.sim_site).site
        out.append(Site.demo(p.seed, p.peak_load_kw, p.pv_rated_kw, p.battery_kwh, p.battery_kw, p.loads,
                             t_s=p.start_h * 3600, soc_pct=p.soc_pct, load_shape=p.load_shape,
                             cloudiness=p.cloudiness))  # fmt: skip
    return out


def test_the_limit_is_below_the_sites_base_import_and_one_battery_can_hold_it(tmp_path: Path) -> None:
    assert not policy_problems(LAB_POLICY)
    policy = with_changes(Policy(), LAB_POLICY)
    assert policy.mode == "reactive" and policy.export_limit_kw >= 1e9  # no curtailment (the workload)
    sites = _sites(tmp_path, _lab(tmp_path))
    bases = []
    for _ in range(int(RUN_S / 10)):
        sites = [s.step(10.0) for s in sites]
        bases.append(sum(s.load_kw - s.pv_kw for s in sites))  # the zone import, batteries at 0
    need_kw = max(bases) - (policy.import_limit_kw - policy.margin_kw)
    # dispatch has real work: without it the import is 20 kW over the limit, all run long
    assert min(bases) - policy.import_limit_kw > 15.0, (min(bases), max(bases))
    one = sites[0].battery
    assert one is not None and all(s.battery is not None for s in sites)
    # any one battery covers it (so two do with a gateway down) ...
    assert need_kw < 0.6 * one.max_discharge_kw, need_kw
    # ... and the three hold it through the run from their energy above the SoC floor
    stored_kwh = sum((s.battery.soc_pct - policy.soc_floor_pct) / 100 * s.battery.capacity_kwh
                     for s in sites if s.battery is not None)  # fmt: skip
    assert need_kw * RUN_S / 3600 < 0.5 * stored_kwh


def test_the_workload_writes_no_battery_and_every_pv_at_full_rating(tmp_path: Path) -> None:
    cfg = _lab(tmp_path)
    work = Workload(SimpleNamespace(cfg=cfg), seed=1)  # type: ignore[arg-type]
    kinds = {d.id: d for n in cfg.nodes for d in n.devices}
    assert {dev for dev, _ in work.devices} == {d for d, x in kinds.items() if x.kind == "pv"}
    for dev, kw in work.devices:
        # 100 %: the inverter's own cap, so whatever the sun does the PV makes what it would
        # anyway (dispatch's "no curtailment needed" value, with no export limit)
        assert pv_limit_pct(kw, kinds[dev].rated_kw or 0.0) == 100.0
