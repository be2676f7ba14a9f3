"""Forecast models on disk: save a `core.forecast.ForecastModel` as .npz, load and verify it.

Owns the file I/O only (atomic write via a temp file and os.replace; no pickles on load);
the array form and the digest come from `meshems.core.forecast`. Every failure to load is
a `ForecastFileError` (code E_FORECAST) whose message names the file.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from meshems.core import forecast
from meshems.core.errors import MeshemsError


class ForecastFileError(MeshemsError):
    """A forecast model file is missing, damaged, of the wrong shape or not the expected one."""

    code = "E_FORECAST"


def save(model: forecast.ForecastModel, path: Path) -> str:
    """Write `model` to `path` (.npz, mode 0644) atomically; return its digest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **forecast.to_arrays(model))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        with os.fdopen(fd, "wb") as handle:
            handle.write(buffer.getvalue())
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # the umask may have narrowed it
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return forecast.model_digest(model)


def load(path: Path, expected_digest: str | None = None) -> forecast.ForecastModel:
    """Read a model saved by `save`; with `expected_digest`, refuse any other model."""
    path = Path(path)
    try:
        with path.open("rb") as handle:  # our handle: closed even when numpy gives up half-way
            loaded = np.load(handle, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not an .npz archive of named arrays")
            with loaded as npz:
                arrays = {key: npz[key] for key in npz.files}
    except FileNotFoundError:
        raise ForecastFileError(
            f"forecast model file {path} does not exist; fit and save a model first", path=str(path)
        ) from None
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise ForecastFileError(
            f"forecast model file {path} is not a readable .npz ({exc}); delete it and save the model again",
            path=str(path),
        ) from exc
    try:
        model = forecast.from_arrays(arrays)
    except ValueError as exc:
        raise ForecastFileError(
            f"forecast model file {path} is not a valid model: {exc}", path=str(path)
        ) from exc
    if expected_digest is not None:
        digest = forecast.model_digest(model)
        if digest != expected_digest:
            raise ForecastFileError(
                f"forecast model file {path} has digest {digest[:16]}…, expected {expected_digest[:16]}…; "
                "it is not the model that was activated",
                path=str(path),
                digest=digest,
                expected_digest=expected_digest,
            )
    return model
