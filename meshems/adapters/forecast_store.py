"""Forecast models on disk: save a `core.forecast_model.ForecastModel` as .npz, load and verify it.

Owns the file I/O only (atomic write via a temp file and os.replace; no pickles on load);
the array form and the digest come from `meshems.core.forecast_arrays`. Every failure to load is
a `ForecastFileError` (code E_FORECAST) whose message names the file.
"""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np

from meshems.core.errors import MeshemsError
from meshems.core.forecast_arrays import from_arrays, model_digest, to_arrays
from meshems.core.forecast_model import ForecastModel
from meshems.core.load_history import LoadHistory


class ForecastFileError(MeshemsError):
    """A forecast model file is missing, damaged, of the wrong shape or not the expected one."""

    code = "E_FORECAST"


def save(model: ForecastModel, path: Path) -> str:
    """Write `model` to `path` (.npz, mode 0644) atomically; return its digest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    np.savez(buffer, **to_arrays(model))
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
    return model_digest(model)


def load(path: Path, expected_digest: str | None = None) -> ForecastModel:
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
        model = from_arrays(arrays)
    except ValueError as exc:
        raise ForecastFileError(
            f"forecast model file {path} is not a valid model: {exc}", path=str(path)
        ) from exc
    if expected_digest is not None:
        digest = model_digest(model)
        if digest != expected_digest:
            raise ForecastFileError(
                f"forecast model file {path} has digest {digest[:16]}…, expected {expected_digest[:16]}…; "
                "it is not the model that was activated",
                path=str(path),
                digest=digest,
                expected_digest=expected_digest,
            )
    return model


def load_model_if_any(path: Path) -> ForecastModel | None:
    """The node's fitted model if one was saved (`meshems forecast fit`); a damaged file is
    reported and ignored: the node falls back to the same time yesterday."""
    if not path.exists():
        return None
    try:
        return load(path)
    except ForecastFileError as exc:
        import logging

        logging.getLogger("meshems").warning("%s", exc.message, extra={"code": exc.code, "fields": {}})
        return None


def save_history(history: LoadHistory, path: Path) -> None:
    """Persist a node's load history (so a restart does not lose its forecast basis)."""
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(
        tmp,
        t0_s=np.array([history.t0_s if history.t0_s is not None else np.nan]),
        step_s=np.array([history.step_s]),
        values=history.series(),
    )
    os.replace(tmp, path)


def load_history(path: Path) -> LoadHistory:
    """A saved history, or an empty one (missing or unreadable file)."""
    history = LoadHistory()
    try:
        with np.load(path, allow_pickle=False) as z:
            t0 = float(z["t0_s"][0])
            values = [float(v) for v in z["values"]]
            if np.isfinite(t0) and float(z["step_s"][0]) == history.step_s:
                history.t0_s, history.values = t0, values
                history._bin = int(t0 // history.step_s) + len(values)
    except (OSError, KeyError, ValueError):
        pass
    return history
