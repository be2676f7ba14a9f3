"""Unit tests for `meshems.core.forecast_eval`: the seasonal-naive baseline and the
rolling-origin score of the model against it."""

from __future__ import annotations

import numpy as np
import pytest

from meshems.core.forecast_eval import evaluate, seasonal_naive
from meshems.sim.load_data import synthetic_year
from tests.core.forecast_series import DAY, STEP_S, THURSDAY, WEEK

# --- the baseline ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("recent", "horizon", "season", "expected"),
    [
        ([1, 2, 3, 4], 4, 4, [1, 2, 3, 4]),
        ([1, 2, 3, 4], 2, 4, [1, 2]),
        ([1, 2, 3, 4], 6, 4, [1, 2, 3, 4, 1, 2]),
        ([9, 9, 1, 2, 3], 3, 3, [1, 2, 3]),
        ([5, 6], 3, 1, [6, 6, 6]),
    ],
)
def test_seasonal_naive(recent: list[float], horizon: int, season: int, expected: list[float]) -> None:
    assert seasonal_naive(np.array(recent, float), horizon, season).tolist() == expected


def test_seasonal_naive_default_is_same_time_last_week(office: np.ndarray) -> None:
    n = 30 * DAY + 11
    assert np.array_equal(seasonal_naive(office[: n + 1], 96), office[n + 1 - WEEK : n + 97 - WEEK])
    with pytest.raises(ValueError, match="at least season_steps"):
        seasonal_naive(np.ones(10), 4)


# --- scoring -----------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["office", "household"])
def test_model_beats_seasonal_naive(shape: str) -> None:
    series = synthetic_year(seed=2, shape=shape, start_weekday=THURSDAY)
    result = evaluate(series, 0.0, STEP_S, train_days=56, test_days=14)
    assert result["n_forecasts"] == 53 and result["n_fits"] == 1
    assert result["ratio"] == pytest.approx(result["mae_model_kw"] / result["mae_naive_kw"])
    assert result["ratio"] < 0.9


def test_evaluate_with_refits_and_a_too_short_test(office: np.ndarray) -> None:
    result = evaluate(office[: 80 * DAY], 0.0, STEP_S, train_days=56, test_days=14, refit_every_days=7)
    assert result["n_fits"] == 2
    assert result["ratio"] < 1.0
    with pytest.raises(ValueError, match="test window too short"):
        evaluate(office, 0.0, STEP_S, train_days=56, test_days=0.5)
