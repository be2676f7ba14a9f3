"""A forecast model's array form (what a .npz holds) and its digest.

Owns `to_arrays`/`from_arrays` (with the checks a file from elsewhere needs) and
`model_digest`, the identity peers compare. Pure: numpy and hashlib only; the file I/O is
`adapters.forecast_store`.
"""

from __future__ import annotations

import hashlib

import numpy as np

from meshems.core.forecast_model import ForecastModel

_ARRAY_KEYS = (
    "schema",
    "version",
    "step_s",
    "horizon_steps",
    "lags",
    "weights",
    "mean",
    "scale",
    "profile",
    "ridge_lambda",
    "fitted_on",
    "mae_kw",
)
_SCHEMA = 1


def to_arrays(model: ForecastModel) -> dict[str, np.ndarray]:
    """The model as named numpy arrays (for `numpy.savez`); `from_arrays` reverses it."""
    return {
        "schema": np.array(_SCHEMA, dtype=np.int64),
        "version": np.array(model.version, dtype=np.int64),
        "step_s": np.array(model.step_s, dtype=np.float64),
        "horizon_steps": np.array(model.horizon_steps, dtype=np.int64),
        "lags": np.array(model.lags, dtype=np.int64),
        "weights": np.array(model.weights, dtype=np.float64),
        "mean": np.array(model.mean, dtype=np.float64),
        "scale": np.array(model.scale, dtype=np.float64),
        "profile": np.array(model.profile, dtype=np.float64),
        "ridge_lambda": np.array(model.ridge_lambda, dtype=np.float64),
        "fitted_on": np.array(model.fitted_on, dtype=np.int64),
        "mae_kw": np.array(model.mae_kw, dtype=np.float64),
    }


def _scalar(d: dict[str, np.ndarray], key: str, kind: type) -> float | int:
    arr = np.asarray(d[key])
    if arr.shape != () or arr.dtype.kind not in ("i", "u", "f"):
        raise ValueError(f"array {key!r} must be a numeric scalar, got shape {arr.shape} dtype {arr.dtype}")
    value = arr.item()
    if kind is int:
        if float(value) != int(value):
            raise ValueError(f"array {key!r} must hold an integer, got {value}")
        return int(value)
    return float(value)


def from_arrays(d: dict[str, np.ndarray]) -> ForecastModel:
    """Rebuild a model from `to_arrays` output; ValueError on missing keys or bad shapes."""
    missing = [key for key in _ARRAY_KEYS if key not in d]
    if missing:
        raise ValueError(f"missing arrays: {', '.join(missing)}")
    schema = _scalar(d, "schema", int)
    if schema != _SCHEMA:
        raise ValueError(f"unsupported forecast model schema {schema}, this build reads {_SCHEMA}")
    lags = np.asarray(d["lags"])
    if lags.ndim != 1 or lags.dtype.kind not in ("i", "u"):
        raise ValueError(
            f"array 'lags' must be a 1-D integer array, got shape {lags.shape} dtype {lags.dtype}"
        )
    for key in ("weights", "mean", "scale", "profile"):
        arr = np.asarray(d[key])
        if arr.ndim != 2 or arr.dtype.kind != "f":
            raise ValueError(
                f"array {key!r} must be a 2-D float array, got shape {arr.shape} dtype {arr.dtype}"
            )
    return ForecastModel(
        version=int(_scalar(d, "version", int)),
        step_s=float(_scalar(d, "step_s", float)),
        horizon_steps=int(_scalar(d, "horizon_steps", int)),
        lags=tuple(int(lag) for lag in lags),
        weights=np.asarray(d["weights"]),
        mean=np.asarray(d["mean"]),
        scale=np.asarray(d["scale"]),
        profile=np.asarray(d["profile"]),
        ridge_lambda=float(_scalar(d, "ridge_lambda", float)),
        fitted_on=int(_scalar(d, "fitted_on", int)),
        mae_kw=float(_scalar(d, "mae_kw", float)),
    )


def model_digest(model: ForecastModel) -> str:
    """SHA-256 (hex) of the canonical array form: keys sorted, each as name, dtype, shape,
    then little-endian C-order bytes. Equal digests mean equal forecasts everywhere."""
    digest = hashlib.sha256()
    arrays = to_arrays(model)
    for key in sorted(arrays):
        arr = arrays[key]
        canon = np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<"))
        digest.update(f"{key}|{canon.dtype.str}|{canon.shape}|".encode())
        digest.update(canon.tobytes())
    return digest.hexdigest()
