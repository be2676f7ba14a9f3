"""Unit tests for `meshems.adapters.forecast_store`: forecast models as .npz files.

A saved model loads back with the same digest and the same forecasts; every way a file can
be wrong (missing, not an npz, a pickle, missing arrays, wrong shapes, another model) is a
`ForecastFileError` with code E_FORECAST whose message names the file.
"""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import numpy as np
import pytest

from meshems.adapters.forecast_store import ForecastFileError, load, save
from meshems.core import forecast as fc
from meshems.core.errors import MeshemsError

DAY = 96
WEEK = 7 * DAY


@pytest.fixture(scope="module")
def series() -> np.ndarray:
    t = np.arange(4 * WEEK)
    tod = (t % DAY) / DAY
    return 20.0 + 10.0 * np.sin(np.pi * tod) ** 2 + np.random.default_rng(0).normal(0.0, 0.5, t.size)


@pytest.fixture(scope="module")
def model(series: np.ndarray) -> fc.ForecastModel:
    return fc.fit(series[: 3 * WEEK], t0_s=0.0, horizon_steps=24, lags=(1, 2, 96, 672), version=3)


def test_round_trip_gives_equal_forecasts_and_digest(
    tmp_path: Path, model: fc.ForecastModel, series: np.ndarray
) -> None:
    path = tmp_path / "models" / "forecast.npz"
    digest = save(model, path)
    assert digest == fc.model_digest(model)
    back = load(path)
    assert fc.model_digest(back) == digest
    assert back.version == 3 and back.lags == (1, 2, 96, 672) and back.horizon_steps == 24
    n = 3 * WEEK + 40
    assert np.array_equal(
        fc.predict(back, series[: n + 1], n * 900.0), fc.predict(model, series[: n + 1], n * 900.0)
    )
    assert load(path, expected_digest=digest).version == 3


def test_save_is_atomic_and_world_readable(tmp_path: Path, model: fc.ForecastModel) -> None:
    path = tmp_path / "forecast.npz"
    path.write_bytes(b"old")
    save(model, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["forecast.npz"]  # no temp file left
    save(model, path)  # overwriting works too
    assert fc.model_digest(load(path)) == fc.model_digest(model)


def test_wrong_digest_is_refused(tmp_path: Path, model: fc.ForecastModel) -> None:
    path = tmp_path / "forecast.npz"
    save(model, path)
    with pytest.raises(ForecastFileError, match=f"{path}.*has digest .*expected 0000000000000000") as info:
        load(path, expected_digest="0" * 64)
    assert info.value.code == "E_FORECAST"
    assert isinstance(info.value, MeshemsError)
    assert str(info.value).startswith("E_FORECAST: ")


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", "does not exist"),
        ("empty", "is not a readable .npz"),
        ("text", "is not a readable .npz"),
        ("truncated", "is not a readable .npz"),
        ("npy", "is not a readable .npz"),
        ("pickle", "is not a readable .npz"),
        ("missing_array", "is not a valid model: missing arrays: profile"),
        ("bad_shape", r"is not a valid model: weights has shape \(24, 2\)"),
        ("directory", "is not a readable .npz"),
    ],
)
def test_damaged_files_raise_naming_the_file(
    tmp_path: Path, model: fc.ForecastModel, damage: str, message: str
) -> None:
    path = tmp_path / "forecast.npz"
    arrays = fc.to_arrays(model)
    if damage == "empty":
        path.write_bytes(b"")
    elif damage == "text":
        path.write_text("not a model\n")
    elif damage == "truncated":
        save(model, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "npy":
        with path.open("wb") as handle:
            np.save(handle, np.zeros(3))
    elif damage == "pickle":
        with path.open("wb") as handle:
            np.save(handle, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    elif damage == "missing_array":
        write_npz(path, {k: v for k, v in arrays.items() if k != "profile"})
    elif damage == "bad_shape":
        write_npz(path, {**arrays, "weights": np.zeros((24, 2))})
    elif damage == "directory":
        path.mkdir()
    with pytest.raises(ForecastFileError, match=message) as info:
        load(path)
    assert str(path) in str(info.value)
    assert info.value.context["path"] == str(path)


def test_save_leaves_no_temp_file_when_the_target_is_a_directory(
    tmp_path: Path, model: fc.ForecastModel
) -> None:
    target = tmp_path / "forecast.npz"
    target.mkdir()
    (target / "keep").write_text("x")
    with pytest.raises(OSError):
        save(model, target)
    assert sorted(os.listdir(tmp_path)) == ["forecast.npz"]
