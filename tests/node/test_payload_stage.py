"""The data payloads a node holds for itself: a forecast-model deployment verified here becomes
the node's forecaster (DATA/forecast.npz and the running machine) once, a newer one replaces
it and a rollback brings the older file back; a profiles payload is listed for the next start
and a device naming `payload:NAME` reads NAME.yaml from it, until it is aborted."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from meshems.adapters import payload_bundle as pb
from meshems.adapters.forecast_store import load as load_model
from meshems.adapters.forecast_store import save as save_model
from meshems.adapters.payload_profiles import load_device_profile
from meshems.adapters.payload_store import Installed, PayloadStore
from meshems.core import forecast as fc
from meshems.core.cluster import ZoneState
from meshems.core.errors import ConfigError
from meshems.core.forecast_arrays import model_digest
from meshems.node.payload_stage import PayloadStage
from tests.core.test_data_handlers import run, verified, zone

METER = Path(__file__).resolve().parents[2] / "meshems" / "profiles" / "meter.yaml"


def installed(
    tmp_path: Path, store: PayloadStore, name: str, version: str, kind: str, files: dict[str, Any]
) -> Installed:
    folder = tmp_path / f"{name}-{version}"
    folder.mkdir()
    entry = f"entry_point: {next(iter(files))}\n" if kind == "forecast-model" else ""
    (folder / "manifest.yaml").write_text(
        f"name: {name}\nversion: {version}\nkind: {kind}\n{entry}expires_at: 2099-01-01T00:00:00Z\n"
    )
    for rel, data in files.items():
        if isinstance(data, fc.ForecastModel):
            save_model(data, folder / rel)
        else:
            (folder / rel).write_bytes(data)
    key = tmp_path / "release.key"
    if not key.exists():
        pb.keygen(key)
    pub = (tmp_path / "release.pub").read_text().strip()
    built = pb.build(folder, [key], tmp_path / f"{name}-{version}.mpkg", time.time())
    return store.install(built.path, pb.Checks(frozenset({pub}), 1, time.time()))


def deployed(state: ZoneState, dep_id: str, i: Installed) -> ZoneState:
    m, sigs = (i.path / "manifest.json").read_bytes(), (i.path / "manifest.sig").read_bytes()
    state, res = run(state, "deploy", deployment_id=dep_id, manifest=m, signatures=sigs, digest=i.digest,
                     size=4096, targets=[], strategy="all-at-once", by="alice", origin="n1")  # fmt: skip
    assert res.ok, res
    return verified(state, dep_id)


def model(level_kw: float, version: int) -> fc.ForecastModel:
    return fc.fit(np.full(3 * 672, level_kw), t0_s=0.0, horizon_steps=4, lags=(1, 2, 3, 4), version=version)


def test_a_forecast_model_payload_replaces_the_forecaster_and_a_rollback_restores_it(tmp_path: Path) -> None:
    store, data = PayloadStore(tmp_path / "data"), tmp_path / "data"
    a, b = model(12.5, 5), model(30.0, 6)
    v1 = installed(tmp_path, store, "site-model", "1.0.0", "forecast-model", {"model.npz": a})
    v2 = installed(tmp_path, store, "site-model", "1.1.0", "forecast-model", {"model.npz": b})
    zone_state = {"state": zone()}
    swapped: list[fc.ForecastModel] = []
    stage = PayloadStage("n1", data, store, lambda: zone_state["state"], swapped.append)
    assert asyncio.run(stage.step()) is None and not (data / "forecast.npz").exists()

    zone_state["state"] = deployed(zone_state["state"], "f1", v1)
    assert asyncio.run(stage.step()) == "f1"
    assert model_digest(load_model(data / "forecast.npz")) == model_digest(a) == model_digest(swapped[-1])
    assert asyncio.run(stage.step()) is None and len(swapped) == 1  # once per deployment
    zone_state["state"] = deployed(zone_state["state"], "f2", v2)
    assert asyncio.run(stage.step()) == "f2"
    assert model_digest(load_model(data / "forecast.npz")) == model_digest(b)

    state, res = run(zone_state["state"], "deploy_rollback", deployment_id="f3", name="site-model",
                     to_version="", by="cli")  # fmt: skip
    assert res.ok, res
    zone_state["state"] = verified(state, "f3")
    restarted = PayloadStage("n1", data, store, lambda: zone_state["state"], swapped.append)
    assert asyncio.run(restarted.step()) == "f3"
    assert model_digest(load_model(data / "forecast.npz")) == model_digest(a) == model_digest(swapped[-1])


def test_a_profiles_payload_is_read_by_devices_that_name_it_at_the_next_start(tmp_path: Path) -> None:
    store, data = PayloadStore(tmp_path / "data"), tmp_path / "data"
    p = installed(
        tmp_path, store, "site-profiles", "1.0.0", "profiles", {"grid-custom.yaml": METER.read_bytes()}
    )
    zone_state = {"state": deployed(zone(), "pr1", p)}
    stage = PayloadStage("n1", data, store, lambda: zone_state["state"])
    with pytest.raises(ConfigError, match="held: none"):
        load_device_profile("payload:grid-custom", None, data)
    asyncio.run(stage.step())
    assert load_device_profile("payload:grid-custom", None, data).name == "grid-meter"
    assert load_device_profile("meter", None, data).name == "grid-meter"  # the built-ins as before
    with pytest.raises(ConfigError, match=r"holds sdm9\.yaml \(held: site-profiles 1\.0\.0"):
        load_device_profile("payload:sdm9", None, data)
    state, res = run(zone_state["state"], "deploy_abort", deployment_id="pr1", by="cli")
    assert res.ok
    zone_state["state"] = state
    asyncio.run(stage.step())
    with pytest.raises(ConfigError, match="held: none"):
        load_device_profile("payload:grid-custom", None, data)
