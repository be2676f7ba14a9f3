"""Fixtures of the forecaster's tests (test_forecast*.py): a synthetic office year whose day 0
is Unix time 0, and the model fitted on its first 8 weeks (both read-only, built once)."""

from __future__ import annotations

import numpy as np
import pytest

from meshems.core.forecast import fit
from meshems.core.forecast_model import ForecastModel
from meshems.sim.load_data import synthetic_year
from tests.core.forecast_series import DAY, THURSDAY


@pytest.fixture(scope="session")
def office() -> np.ndarray:
    return synthetic_year(seed=1, shape="office", start_weekday=THURSDAY)


@pytest.fixture(scope="session")
def model(office: np.ndarray) -> ForecastModel:
    return fit(office[: 56 * DAY], t0_s=0.0, version=7)
