"""A node's load history, its forecast of the coming day and the battery reserve that asks for."""

from __future__ import annotations

import math

import numpy as np
import pytest

from meshems.core.forecast import fit, peak_energy_above, predict
from meshems.core.load_history import LoadHistory, forecast_reserve_kwh, load_forecast
from meshems.sim.load_data import synthetic_year


def test_samples_average_into_steps_and_gaps_stay_gaps() -> None:
    h = LoadHistory(step_s=900)
    for t in range(0, 900, 60):
        h.add(t, 10.0)
    for t in range(900, 1800, 60):
        h.add(t, 20.0)
    h.add(3 * 900 + 1, 5.0)  # step 2 had no samples
    assert h.values[:2] == [10.0, 20.0]
    assert math.isnan(h.values[2])
    h.add(3 * 900 + 2, float("nan"))  # non-finite samples are ignored
    assert len(h.values) == 3


def test_history_keeps_a_bounded_window() -> None:
    h = LoadHistory(step_s=60, keep_steps=10)
    for t in range(0, 60 * 30, 60):
        h.add(t, float(t))
    assert len(h.values) == 10
    assert h.values[-1] == 60 * 28  # the last completed step
    assert h.t0_s == (29 - 10) * 60


@pytest.mark.parametrize(("hours", "want"), [(0, 0.0), (23, 0.0)])
def test_no_reserve_without_a_day_of_history(hours: int, want: float) -> None:
    h = LoadHistory()
    for t in range(0, hours * 3600, 60):
        h.add(t, 50.0)
    assert forecast_reserve_kwh(h, hours * 3600, 20.0) == (want, "no history yet")


def test_same_time_yesterday_gives_the_energy_above_the_limit() -> None:
    h = LoadHistory()
    for t in range(0, 2 * 86400, 60):
        h.add(t, 30.0 if 17 * 3600 <= t % 86400 < 19 * 3600 else 10.0)
    reserve, how = forecast_reserve_kwh(h, 2 * 86400, 20.0)
    assert how == "same time yesterday"
    assert reserve == pytest.approx(20.0, abs=0.5)  # 2 h x 10 kW above the limit


def test_a_fitted_model_is_used_when_history_allows() -> None:
    year = synthetic_year(seed=1, shape="office", start_weekday=3)
    model = fit(year[: 96 * 56], 0.0)
    h = LoadHistory()
    for i, kw in enumerate(year[96 * 56 - 96 * 8 : 96 * 56]):
        h.add((96 * 56 - 96 * 8 + i) * 900.0 + 1, float(kw))
    reserve, how = forecast_reserve_kwh(h, 96 * 56 * 900.0, float(np.percentile(year, 90)), model)
    assert how == "model v1"
    assert reserve >= 0.0


def test_the_forecast_starts_at_the_current_step_and_names_its_basis() -> None:
    empty = load_forecast(LoadHistory(), 1000.0)
    assert (empty.start_s, empty.basis, empty.kw.size) == (900.0, "no history yet", 96)
    assert np.isnan(empty.kw).all()
    h = LoadHistory()
    for t in range(0, 2 * 86400, 60):
        h.add(t, float(t // 900 % 96))
    now = 2 * 86400 - 60 + 30.0  # the last sample opened step 191; steps up to 190 are closed
    f = load_forecast(h, now)
    assert (f.start_s, f.step_s, f.basis) == (191 * 900.0, 900.0, "same time yesterday")
    assert f.kw.tolist() == h.series()[-96:].tolist()
    later = load_forecast(h, now + 3600)  # a node restarted an hour later: the missed steps are gaps
    assert later.start_s == 195 * 900.0
    assert np.isnan(later.kw[-4:]).all() and later.kw[:-4].tolist() == f.kw[4:].tolist()


def test_the_model_forecast_is_issued_at_the_last_completed_step_and_sets_the_reserve() -> None:
    year = synthetic_year(seed=1, shape="office", start_weekday=3)
    model = fit(year[: 96 * 56], 0.0)
    h = LoadHistory()
    first = 96 * 56 - 96 * 8
    for i, kw in enumerate(year[first : 96 * 56 + 1]):
        h.add((first + i) * 900.0 + 1, float(kw))
    now = 96 * 56 * 900.0 + 400
    f = load_forecast(h, now, model)
    assert (f.basis, f.start_s, f.kw.size) == ("model v1", 96 * 56 * 900.0, 96)
    assert f.kw.tolist() == predict(model, h.series(), f.start_s - 900.0).tolist()
    limit = float(np.percentile(year, 90))
    assert forecast_reserve_kwh(h, now, limit, model) == (peak_energy_above(f.kw, limit, 900.0), "model v1")
