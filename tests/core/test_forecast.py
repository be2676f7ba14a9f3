"""Unit tests for `meshems.core.forecast`: fit, predict, baselines, array form and scoring.

The fitted model is deterministic, so tests compare exact bytes where they can. "No peeking"
is checked on the design matrix itself: corrupting everything after an issue time must not
change that issue's feature rows, and the rows fit trains on must equal the rows predict
builds. Synthetic years start on a Thursday so that their day 0 is Unix time 0.
"""

from __future__ import annotations

import numpy as np
import pytest

from meshems.core import forecast as fc
from meshems.sim.load_data import synthetic_year

STEP_S = 900.0
DAY = 96
WEEK = 7 * DAY
THURSDAY = 3  # Unix time 0 was a Thursday


@pytest.fixture(scope="module")
def office() -> np.ndarray:
    return synthetic_year(seed=1, shape="office", start_weekday=THURSDAY)


@pytest.fixture(scope="module")
def model(office: np.ndarray) -> fc.ForecastModel:
    return fc.fit(office[: 56 * DAY], t0_s=0.0, version=7)


def weekly_pattern(weeks: int) -> np.ndarray:
    """A noiseless series with a different shape on each weekday, repeated every week."""
    t = np.arange(weeks * WEEK)
    tod = (t % DAY) / DAY
    day = (t // DAY) % 7
    return 10.0 + 5.0 * np.sin(2 * np.pi * tod) ** 2 * (1.0 + 0.3 * day) + 2.0 * (day == 4) * (tod > 0.5)


# --- fit and predict ------------------------------------------------------------------------


def test_shapes_and_metadata(model: fc.ForecastModel, office: np.ndarray) -> None:
    n_features = len(fc.feature_names(fc.DEFAULT_LAGS))
    assert model.weights.shape == model.mean.shape == model.scale.shape == (96, n_features)
    assert model.profile.shape == (3, 96)
    assert (model.version, model.step_s, model.horizon_steps, model.lags) == (7, 900.0, 96, fc.DEFAULT_LAGS)
    assert model.fitted_on == 56 * DAY
    assert 0.0 < model.mae_kw < 5.0
    n = 56 * DAY - 1
    forecast_kw = fc.predict(model, office[n + 1 - WEEK : n + 1], n * STEP_S)
    assert forecast_kw.shape == (96,)
    assert np.all(np.isfinite(forecast_kw)) and forecast_kw.min() >= 0.0


def test_feature_names_are_lags_then_extras_calendar_and_bias() -> None:
    names = fc.feature_names((1, 96))
    assert names[:4] == ("lag1", "lag96", "dev_day", "similar_days")
    assert names[-1] == "bias"
    assert names[4:-1] == (
        "sin_tod",
        "cos_tod",
        "sin_2tod",
        "cos_2tod",
        *(f"dow{d}" for d in range(7)),
        "weekend",
    )


def test_predict_tracks_the_actual_load(model: fc.ForecastModel, office: np.ndarray) -> None:
    n = 60 * DAY + 4 * 10 - 1  # a Thursday-based year: day 60 is a Saturday; issue at 10:00
    forecast_kw = fc.predict(model, office[: n + 1], n * STEP_S)
    actual = office[n + 1 : n + 97]
    assert np.mean(np.abs(forecast_kw - actual)) < 0.1 * actual.mean()


def test_model_is_immutable(model: fc.ForecastModel) -> None:
    with pytest.raises(ValueError):
        model.weights[0, 0] = 1.0
    with pytest.raises(AttributeError):
        model.version = 8  # type: ignore[misc]


def test_fit_is_deterministic(office: np.ndarray, model: fc.ForecastModel) -> None:
    again = fc.fit(office[: 56 * DAY], t0_s=0.0, version=7)
    assert again.weights.tobytes() == model.weights.tobytes()
    assert again.profile.tobytes() == model.profile.tobytes()
    assert fc.model_digest(again) == fc.model_digest(model)


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


def test_nan_gaps_are_tolerated(office: np.ndarray, model: fc.ForecastModel) -> None:
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


def test_predict_needs_a_full_lag_window(model: fc.ForecastModel) -> None:
    with pytest.raises(ValueError, match="at least max\\(lags\\) = 672 recent values, got 671"):
        fc.predict(model, np.ones(671), 0.0)
    with pytest.raises(ValueError, match="all missing"):
        fc.predict(model, np.full(WEEK, np.nan), 0.0)


# --- no peeking ------------------------------------------------------------------------------


@pytest.mark.parametrize("lags", [fc.DEFAULT_LAGS, (1, 5, 100, 700)])
def test_rows_of_an_issue_do_not_depend_on_its_future(office: np.ndarray, lags: tuple[int, ...]) -> None:
    m = fc.fit(office[: 14 * DAY], t0_s=0.0, lags=lags)
    series = office[: 30 * DAY].copy()
    n = 20 * DAY + 17
    corrupted = series.copy()
    corrupted[n + 1 :] = 1e6  # anything after the issue time
    day_steps = 96
    issue = np.full(96, n)
    target = n + np.arange(1, 97)
    rows = [
        fc._rows(fc._prepare(s, 0.0, STEP_S, m.lags, m.profile), issue, target, 96, m.lags, day_steps)
        for s in (series, corrupted)
    ]
    assert np.array_equal(rows[0][0], rows[1][0])  # features
    assert np.array_equal(rows[0][2], rows[1][2])  # kW scale
    assert not np.array_equal(rows[0][1], rows[1][1])  # only the targets changed


def test_training_rows_equal_the_rows_predict_builds(model: fc.ForecastModel, office: np.ndarray) -> None:
    history = office[: 56 * DAY]
    prepared = fc._prepare(history, 0.0, STEP_S, model.lags, model.profile)
    for n in (WEEK - 1, 30 * DAY + 5, 50 * DAY + 77):
        at_issue, _ = fc.features_at(model, history[: n + 1], n * STEP_S)
        for h in (1, 2, 5, 48, 96):
            x, _, _ = fc._rows(prepared, np.array([n]), np.array([n + h]), 96, model.lags, 96)
            assert np.allclose(x[0], at_issue[h - 1], rtol=1e-12, atol=1e-12), (n, h)


def test_lag_rule_short_lags_from_issue_long_lags_from_target() -> None:
    series = np.arange(2 * WEEK, dtype=float) + 1.0
    m = fc.fit(np.ones(3 * WEEK), t0_s=0.0, lags=(1, 3, 96, 672))
    flat = fc.ForecastModel(**{**m.__dict__, "profile": np.ones_like(m.profile)})
    n = WEEK + 10
    x, scale_kw = fc.features_at(flat, series[: n + 1], n * STEP_S)
    level = series[n + 1 - WEEK : n + 1].mean()
    h = np.arange(1, 97)
    assert np.allclose(x[:, 0] * level, series[n])  # lag 1: the latest reading, for every h
    assert np.allclose(x[:, 1] * level, series[n - 2])
    assert np.allclose(x[:, 2] * level, series[n + h - 96])  # lag 96: same time yesterday
    assert np.allclose(x[:, 3] * level, series[n + h - 672])
    assert np.all(n + h - 96 <= n)
    assert np.allclose(scale_kw, level)


def test_calendar_is_unix_utc() -> None:
    cal = fc._calendar(np.array([0.0, 2 * fc.DAY_S, 4 * fc.DAY_S + 6 * 3600.0]))
    dow = cal[:, 4:11].argmax(axis=1)
    assert dow.tolist() == [3, 5, 0]  # Thursday, Saturday, Monday
    assert cal[:, 11].tolist() == [0.0, 1.0, 0.0]
    assert cal[2, 0] == pytest.approx(1.0) and cal[2, 1] == pytest.approx(0.0, abs=1e-12)  # 06:00


# --- baselines -------------------------------------------------------------------------------


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
    assert fc.seasonal_naive(np.array(recent, float), horizon, season).tolist() == expected


def test_seasonal_naive_default_is_same_time_last_week(office: np.ndarray) -> None:
    n = 30 * DAY + 11
    assert np.array_equal(fc.seasonal_naive(office[: n + 1], 96), office[n + 1 - WEEK : n + 97 - WEEK])
    with pytest.raises(ValueError, match="at least season_steps"):
        fc.seasonal_naive(np.ones(10), 4)


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


# --- array form and digest -------------------------------------------------------------------


def test_arrays_round_trip(model: fc.ForecastModel, office: np.ndarray) -> None:
    back = fc.from_arrays(fc.to_arrays(model))
    assert fc.model_digest(back) == fc.model_digest(model)
    assert (back.version, back.lags, back.fitted_on, back.mae_kw) == (
        model.version,
        model.lags,
        model.fitted_on,
        model.mae_kw,
    )
    n = 58 * DAY + 3
    assert np.array_equal(
        fc.predict(back, office[: n + 1], n * STEP_S), fc.predict(model, office[: n + 1], n * STEP_S)
    )


def test_digest_changes_with_any_content(model: fc.ForecastModel) -> None:
    arrays = fc.to_arrays(model)
    base = fc.model_digest(model)
    assert len(base) == 64
    bumped = fc.from_arrays({**arrays, "version": np.array(8)})
    nudged_weights = arrays["weights"].copy()
    nudged_weights[3, 2] += 1e-12
    nudged = fc.from_arrays({**arrays, "weights": nudged_weights})
    assert len({base, fc.model_digest(bumped), fc.model_digest(nudged)}) == 3


def test_digest_ignores_the_input_dtype_and_byte_order(model: fc.ForecastModel) -> None:
    arrays = fc.to_arrays(model)
    swapped = {
        **arrays,
        "weights": arrays["weights"].astype(">f8"),
        "lags": arrays["lags"].astype(np.int32),
        "version": np.array(model.version, dtype=np.int16),
    }
    assert fc.model_digest(fc.from_arrays(swapped)) == fc.model_digest(model)


def bad(arrays: dict[str, np.ndarray], **changes: object) -> dict[str, object]:
    out: dict[str, object] = {**arrays, **changes}
    return {key: value for key, value in out.items() if value is not None}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"weights": None}, "missing arrays: weights"),
        ({"weights": np.zeros((96, 3))}, r"weights has shape \(96, 3\), expected \(96, 21\)"),
        ({"mean": np.zeros((95, 21))}, "mean has shape"),
        ({"scale": np.zeros((96, 21))}, "scale and profile must be > 0"),
        ({"profile": np.ones((2, 96))}, r"profile has shape \(2, 96\), expected \(3, 96\)"),
        ({"weights": np.zeros(96 * 21)}, "must be a 2-D float array"),
        ({"lags": np.array([1.0, 2.0])}, "must be a 1-D integer array"),
        ({"lags": np.array([2, 1, 3, 4, 96, 672])}, "lags must be"),
        ({"horizon_steps": np.array([96])}, "numeric scalar"),
        ({"horizon_steps": np.array(95.5)}, "must hold an integer"),
        ({"schema": np.array(2)}, "unsupported forecast model schema 2"),
        ({"step_s": np.array(0.0)}, "step_s must be"),
    ],
)
def test_from_arrays_rejects_bad_arrays(
    model: fc.ForecastModel, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        fc.from_arrays(bad(fc.to_arrays(model), **changes))  # type: ignore[arg-type]


def test_non_finite_weights_are_refused(model: fc.ForecastModel) -> None:
    arrays = fc.to_arrays(model)
    arrays["weights"][0, 0] = np.nan
    with pytest.raises(ValueError, match="weights has non-finite values"):
        fc.from_arrays(arrays)


# --- scoring ---------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", ["office", "household"])
def test_model_beats_seasonal_naive(shape: str) -> None:
    series = synthetic_year(seed=2, shape=shape, start_weekday=THURSDAY)
    result = fc.evaluate(series, 0.0, STEP_S, train_days=56, test_days=14)
    assert result["n_forecasts"] == 53 and result["n_fits"] == 1
    assert result["ratio"] == pytest.approx(result["mae_model_kw"] / result["mae_naive_kw"])
    assert result["ratio"] < 0.9


def test_evaluate_with_refits_and_a_too_short_test(office: np.ndarray) -> None:
    result = fc.evaluate(office[: 80 * DAY], 0.0, STEP_S, train_days=56, test_days=14, refit_every_days=7)
    assert result["n_fits"] == 2
    assert result["ratio"] < 1.0
    with pytest.raises(ValueError, match="test window too short"):
        fc.evaluate(office, 0.0, STEP_S, train_days=56, test_days=0.5)
