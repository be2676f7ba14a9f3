"""Unit tests for `meshems.core.forecast_features`: the design matrix does not peek.

"No peeking" is checked on the design matrix itself: corrupting everything after an issue
time must not change that issue's feature rows, and the rows fit trains on must equal the
rows predict builds. The calendar is Unix time, UTC.
"""

from __future__ import annotations

import numpy as np
import pytest

from meshems.core import forecast as fc
from meshems.core import forecast_features as ff
from meshems.core.forecast_model import DAY_S, DEFAULT_LAGS, ForecastModel
from tests.core.forecast_series import DAY, STEP_S, WEEK


@pytest.mark.parametrize("lags", [DEFAULT_LAGS, (1, 5, 100, 700)])
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
        ff.rows(ff.prepare(s, 0.0, STEP_S, m.lags, m.profile), issue, target, 96, m.lags, day_steps)
        for s in (series, corrupted)
    ]
    assert np.array_equal(rows[0][0], rows[1][0])  # features
    assert np.array_equal(rows[0][2], rows[1][2])  # kW scale
    assert not np.array_equal(rows[0][1], rows[1][1])  # only the targets changed


def test_training_rows_equal_the_rows_predict_builds(model: ForecastModel, office: np.ndarray) -> None:
    history = office[: 56 * DAY]
    prepared = ff.prepare(history, 0.0, STEP_S, model.lags, model.profile)
    for n in (WEEK - 1, 30 * DAY + 5, 50 * DAY + 77):
        at_issue, _ = ff.features_at(model, history[: n + 1], n * STEP_S)
        for h in (1, 2, 5, 48, 96):
            x, _, _ = ff.rows(prepared, np.array([n]), np.array([n + h]), 96, model.lags, 96)
            assert np.allclose(x[0], at_issue[h - 1], rtol=1e-12, atol=1e-12), (n, h)


def test_lag_rule_short_lags_from_issue_long_lags_from_target() -> None:
    series = np.arange(2 * WEEK, dtype=float) + 1.0
    m = fc.fit(np.ones(3 * WEEK), t0_s=0.0, lags=(1, 3, 96, 672))
    flat = ForecastModel(**{**m.__dict__, "profile": np.ones_like(m.profile)})
    n = WEEK + 10
    x, scale_kw = ff.features_at(flat, series[: n + 1], n * STEP_S)
    level = series[n + 1 - WEEK : n + 1].mean()
    h = np.arange(1, 97)
    assert np.allclose(x[:, 0] * level, series[n])  # lag 1: the latest reading, for every h
    assert np.allclose(x[:, 1] * level, series[n - 2])
    assert np.allclose(x[:, 2] * level, series[n + h - 96])  # lag 96: same time yesterday
    assert np.allclose(x[:, 3] * level, series[n + h - 672])
    assert np.all(n + h - 96 <= n)
    assert np.allclose(scale_kw, level)


def test_calendar_is_unix_utc() -> None:
    cal = ff.calendar(np.array([0.0, 2 * DAY_S, 4 * DAY_S + 6 * 3600.0]))
    dow = cal[:, 4:11].argmax(axis=1)
    assert dow.tolist() == [3, 5, 0]  # Thursday, Saturday, Monday
    assert cal[:, 11].tolist() == [0.0, 1.0, 0.0]
    assert cal[2, 0] == pytest.approx(1.0) and cal[2, 1] == pytest.approx(0.0, abs=1e-12)  # 06:00
