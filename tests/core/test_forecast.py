"""Unit tests for `meshems.core.forecast`: fit, predict and the peak energy of a forecast.

The fitted model is deterministic, so tests compare exact bytes where they can. Synthetic
years start on a Thursday so that their day 0 is Unix time 0 (tests/core/conftest.py).
"""

from __future__ import annotations

import numpy as np
import pytest

from meshems.core import forecast as fc
from meshems.core.forecast_arrays import model_digest
from meshems.core.forecast_model import DEFAULT_LAGS, ForecastModel, feature_names
from tests.core.forecast_series import DAY, STEP_S, WEEK


def weekly_pattern(weeks: int) -> np.ndarray:
    """A noiseless series with a different shape on each weekday, repeated every week."""
    t = np.arange(weeks * WEEK)
    tod = (t % DAY) / DAY
    day = (t // DAY) % 7
    return 10.0 + 5.0 * np.sin(2 * np.pi * tod) ** 2 * (1.0 + 0.3 * day) + 2.0 * (day == 4) * (tod > 0.5)


# --- fit and predict ---------------------------------------------------------------------


def test_shapes_and_metadata(model: ForecastModel, office: np.ndarray) -> None:
    n_features = len(feature_names(DEFAULT_LAGS))
    assert model.weights.shape == model.mean.shape == model.scale.shape == (96, n_features)
    assert model.profile.shape == (3, 96)
    assert (model.version, model.step_s, model.horizon_steps, model.lags) == (7, 900.0, 96, DEFAULT_LAGS)
    assert model.fitted_on == 56 * DAY
    assert 0.0 < model.mae_kw < 5.0
    n = 56 * DAY - 1
    forecast_kw = fc.predict(model, office[n + 1 - WEEK : n + 1], n * STEP_S)
    assert forecast_kw.shape == (96,)
    assert np.all(np.isfinite(forecast_kw)) and forecast_kw.min() >= 0.0


def test_predict_tracks_the_actual_load(model: ForecastModel, office: np.ndarray) -> None:
    n = 60 * DAY + 4 * 10 - 1  # a Thursday-based year: day 60 is a Saturday; issue at 10:00
    forecast_kw = fc.predict(model, office[: n + 1], n * STEP_S)
    actual = office[n + 1 : n + 97]
    assert np.mean(np.abs(forecast_kw - actual)) < 0.1 * actual.mean()


def test_fit_is_deterministic(office: np.ndarray, model: ForecastModel) -> None:
    again = fc.fit(office[: 56 * DAY], t0_s=0.0, version=7)
    assert again.weights.tobytes() == model.weights.tobytes()
    assert again.profile.tobytes() == model.profile.tobytes()
    assert model_digest(again) == model_digest(model)


@pytest.mark.parametrize("lags", [(1, 2, 3, 4, 96, 672), (1, 672), (96, 672)])
def test_exact_recovery_on_a_noiseless_weekly_pattern(lags: tuple[int, ...]) -> None:
    series = weekly_pattern(5)
    m = fc.fit(series[: 4 * WEEK], t0_s=0.0, lags=lags, ridge_lambda=1e-6)
    assert m.mae_kw < 1e-3
    for n in (4 * WEEK - 1, 4 * WEEK + 37, 4 * WEEK + 3 * DAY + 95):
        forecast_kw = fc.predict(m, series[: n + 1], n * STEP_S)
        assert np.max(np.abs(forecast_kw - series[n + 1 : n + 97])) < 1e-2


def test_short_lags_and_horizon_on_two_weekdays(office: np.ndarray) -> None:
    start = 4 * DAY  # a Monday; two working days of history, no weekend seen
    m = fc.fit(office[start : start + 2 * DAY], t0_s=start * STEP_S, horizon_steps=4, lags=(1, 2, 3, 4))
    assert m.profile.shape == (3, 96)
    assert np.array_equal(m.profile[1], m.profile[0]) and np.array_equal(m.profile[2], m.profile[0])
    n = start + 2 * DAY + 40
    forecast_kw = fc.predict(m, office[n - 3 : n + 1], n * STEP_S)
    assert forecast_kw.shape == (4,)
    assert np.mean(np.abs(forecast_kw - office[n + 1 : n + 5])) < 0.1 * office[n + 1 : n + 5].mean()


def test_a_constant_load_is_forecast_constant() -> None:
    m = fc.fit(np.full(3 * WEEK, 12.5), t0_s=0.0)
    assert np.allclose(fc.predict(m, np.full(WEEK, 12.5), 123 * STEP_S), 12.5)
    zero = fc.fit(np.zeros(3 * WEEK), t0_s=0.0)
    assert np.allclose(fc.predict(zero, np.zeros(WEEK), 0.0), 0.0)


def test_nan_gaps_are_tolerated(office: np.ndarray, model: ForecastModel) -> None:
    history = office[: 56 * DAY].copy()
    history[np.random.default_rng(5).random(history.size) < 0.03] = np.nan
    history[20 * DAY : 21 * DAY] = np.nan  # a whole day lost
    m = fc.fit(history, t0_s=0.0)
    assert m.fitted_on == int(np.isfinite(history).sum())
    assert np.all(np.isfinite(m.weights)) and np.all(np.isfinite(m.profile))
    recent = history[-WEEK:].copy()
    recent[-3:] = np.nan  # the last readings are missing too
    forecast_kw = fc.predict(m, recent, (history.size - 1) * STEP_S)
    assert np.all(np.isfinite(forecast_kw))
    clean_kw = fc.predict(model, office[: 56 * DAY], (history.size - 1) * STEP_S)
    assert np.mean(np.abs(forecast_kw - clean_kw)) < 2.0  # kW, on a 60 kW peak


def test_too_short_history_is_refused_with_the_numbers() -> None:
    with pytest.raises(
        ValueError, match=r"history too short to fit: 700 samples, need at least 864 .*max lag 672"
    ):
        fc.fit(np.ones(700), t0_s=0.0)
    with pytest.raises(ValueError, match="too gappy"):
        fc.fit(np.full(2 * WEEK, np.nan), t0_s=0.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"lags": ()}, "lags must be"),
        ({"lags": (96, 1)}, "lags must be"),
        ({"lags": (0, 1)}, "lags must be"),
        ({"ridge_lambda": 0.0}, "ridge_lambda"),
        ({"horizon_steps": 0}, "horizon_steps"),
        ({"step_s": -1.0}, "step_s"),
    ],
)
def test_bad_fit_arguments(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        fc.fit(np.ones(3 * WEEK), t0_s=0.0, **kwargs)  # type: ignore[arg-type]


def test_predict_needs_a_full_lag_window(model: ForecastModel) -> None:
    with pytest.raises(ValueError, match="at least max\\(lags\\) = 672 recent values, got 671"):
        fc.predict(model, np.ones(671), 0.0)
    with pytest.raises(ValueError, match="all missing"):
        fc.predict(model, np.full(WEEK, np.nan), 0.0)


# --- the peak energy of a forecast -------------------------------------------------------


@pytest.mark.parametrize(
    ("forecast_kw", "limit_kw", "step_s", "kwh"),
    [
        ([10, 20, 30], 50, 900, 0.0),
        ([10, 60, 70], 50, 900, 7.5),  # (10 + 20) kW x 0.25 h
        ([60, 60], 50, 3600, 20.0),
        ([55, np.nan, 55], 50, 1800, 5.0),
        ([], 0, 900, 0.0),
        ([1, 2], -1, 900, 1.25),
    ],
)
def test_peak_energy_above(forecast_kw: list[float], limit_kw: float, step_s: float, kwh: float) -> None:
    assert fc.peak_energy_above(np.array(forecast_kw, float), limit_kw, step_s) == pytest.approx(kwh)


def test_peak_energy_above_refuses_bad_arguments() -> None:
    with pytest.raises(ValueError, match="step_s"):
        fc.peak_energy_above(np.ones(3), 0.0, 0.0)
    with pytest.raises(ValueError, match="limit_kw"):
        fc.peak_energy_above(np.ones(3), float("nan"), 900.0)
