"""Unit tests for `meshems.core.forecast_model`: the feature layout and an immutable model."""

from __future__ import annotations

import pytest

from meshems.core.forecast_model import ForecastModel, feature_names


def test_feature_names_are_lags_then_extras_calendar_and_bias() -> None:
    names = feature_names((1, 96))
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


def test_model_is_immutable(model: ForecastModel) -> None:
    with pytest.raises(ValueError):
        model.weights[0, 0] = 1.0
    with pytest.raises(AttributeError):
        model.version = 8  # type: ignore[misc]
