"""Unit tests for `meshems.core.forecast_arrays`: the array form round-trips, the digest
changes with any content and ignores dtype and byte order, and bad arrays are refused."""

from __future__ import annotations

import numpy as np
import pytest

from meshems.core import forecast as fc
from meshems.core.forecast_arrays import from_arrays, model_digest, to_arrays
from meshems.core.forecast_model import ForecastModel
from tests.core.forecast_series import DAY, STEP_S


def test_arrays_round_trip(model: ForecastModel, office: np.ndarray) -> None:
    back = from_arrays(to_arrays(model))
    assert model_digest(back) == model_digest(model)
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


def test_digest_changes_with_any_content(model: ForecastModel) -> None:
    arrays = to_arrays(model)
    base = model_digest(model)
    assert len(base) == 64
    bumped = from_arrays({**arrays, "version": np.array(8)})
    nudged_weights = arrays["weights"].copy()
    nudged_weights[3, 2] += 1e-12
    nudged = from_arrays({**arrays, "weights": nudged_weights})
    assert len({base, model_digest(bumped), model_digest(nudged)}) == 3


def test_digest_ignores_the_input_dtype_and_byte_order(model: ForecastModel) -> None:
    arrays = to_arrays(model)
    swapped = {
        **arrays,
        "weights": arrays["weights"].astype(">f8"),
        "lags": arrays["lags"].astype(np.int32),
        "version": np.array(model.version, dtype=np.int16),
    }
    assert model_digest(from_arrays(swapped)) == model_digest(model)


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
    model: ForecastModel, changes: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        from_arrays(bad(to_arrays(model), **changes))  # type: ignore[arg-type]


def test_non_finite_weights_are_refused(model: ForecastModel) -> None:
    arrays = to_arrays(model)
    arrays["weights"][0, 0] = np.nan
    with pytest.raises(ValueError, match="weights has non-finite values"):
        from_arrays(arrays)
