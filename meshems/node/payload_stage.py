"""The data payloads each node holds for itself (`core.data_handlers.held`): the newest
forecast-model deployment verified here replaces the node's forecaster at once (saved as
DATA/forecast.npz, the model the node starts with, and swapped into the running machine,
which publishes it to the zone), once per deployment (DATA/payloads/forecast-applied names
the last one), so a rollback, a newer deployment, applies the older file again and a later
`forecast fit` is not undone. Profiles payloads are listed for the next start
(`adapters.payload_profiles`): a device re-reads its profile only when its node starts.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from meshems.adapters.atomic_write import write_atomic
from meshems.adapters.forecast_store import load as load_model
from meshems.adapters.forecast_store import save as save_model
from meshems.adapters.payload_profiles import write_held
from meshems.adapters.payload_store import PayloadStore
from meshems.core.cluster import ZoneState
from meshems.core.data_handlers import held
from meshems.core.deploy_records import Deployment
from meshems.core.forecast_model import ForecastModel
from meshems.core.node import Node
from meshems.core.node_spec import forecast_spec
from meshems.logs import log
from meshems.node.payload_data import entry_file, repeat

MARKER = "forecast-applied"


def swap_forecast(machine: Node, model: ForecastModel) -> None:
    """Make `model` the running node's forecaster; it publishes it as it does at start."""
    machine.spec = replace(machine.spec, forecast=forecast_spec(model))
    machine.forecast_done, machine.forecast_tries = False, 0


class PayloadStage:
    def __init__(
        self,
        node_id: str,
        data_dir: Path,
        store: PayloadStore,
        state: Callable[[], ZoneState],
        swap: Callable[[ForecastModel], None] | None = None,
    ) -> None:
        self.node_id, self.data_dir, self.store, self.state, self.swap = node_id, data_dir, store, state, swap

    async def loop(self) -> None:
        await repeat(self.step)

    async def step(self) -> str | None:
        """List the profiles held here; apply a forecast model not applied yet (its deployment id)."""
        state = self.state()
        stored = self.store.digests()
        mine = held(state, self.node_id, "profiles")
        profiles = {n: {"id": d.id, "version": d.version, "digest": d.digest}
                    for n, d in mine.items() if d.digest in stored}  # fmt: skip
        if await asyncio.to_thread(write_held, self.data_dir, profiles):
            names = ", ".join(f"{n} {p['version']}" for n, p in sorted(profiles.items())) or "none"
            log("info", "I_PROFILES_HELD", f"device profiles for the next start: {names}")
        models = held(state, self.node_id, "forecast-model").values()
        dep = max((d for d in models if d.digest in stored), key=lambda d: d.index, default=None)
        if dep is None or self._applied() == dep.id:
            return None
        model = await asyncio.to_thread(self._install, dep)
        if self.swap is not None:
            self.swap(model)
        log("info", "I_FORECAST_APPLIED", f"forecast model of {dep.name} {dep.version} in use",
            deployment=dep.id, version=model.version)  # fmt: skip
        return dep.id

    def _applied(self) -> str:
        try:
            return (self.data_dir / "payloads" / MARKER).read_text(encoding="utf-8").strip()
        except OSError:
            return ""

    def _install(self, dep: Deployment) -> ForecastModel:
        installed = next(i for i in self.store.installed() if i.digest == dep.digest)
        model = load_model(installed.path / "files" / entry_file(installed.manifest))
        save_model(model, self.data_dir / "forecast.npz")
        write_atomic(self.data_dir / "payloads" / MARKER, dep.id.encode())
        return model
