"""`meshems forecast fit` without a cluster (and with one, into the node's data folder):
what it writes, what it refuses, and its exit codes (no node processes); `forecast show`'s chart."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import pytest

from meshems.adapters.forecast_store import load
from meshems.cli import main
from meshems.cli.chart import bar_chart
from meshems.sim.load_data import synthetic_year
from tests.conftest import write_config

START = datetime(2024, 2, 5, tzinfo=UTC)  # a Monday; the March DST change is inside 9 weeks


@pytest.fixture(scope="module")
def year() -> np.ndarray:
    return synthetic_year(seed=3, shape="office", start_weekday=0)


def unix_csv(path: Path, kw: np.ndarray) -> Path:
    t0 = START.timestamp()
    path.write_text("".join(f"{t0 + 900 * i:.0f},{v:.3f}\n" for i, v in enumerate(kw)))
    return path


def berlin_csv(path: Path, kw: np.ndarray) -> Path:
    """Header, semicolons, W with decimal commas, naive Berlin times every 5 minutes."""
    berlin = ZoneInfo("Europe/Berlin")
    rows = ["Zeit;Leistung_W"]
    for i in range(3 * kw.size):
        local = (START + timedelta(minutes=5 * i)).astimezone(berlin).replace(tzinfo=None)
        rows.append(f"{local:%Y-%m-%d %H:%M};{kw[i // 3] * 1000:.1f}".replace(".", ","))
    path.write_text("\n".join(rows) + "\n")
    return path


def test_offline_fit_writes_the_model_and_refuses_to_overwrite_it(
    tmp_path: Path, year: np.ndarray, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    csv = unix_csv(tmp_path / "load.csv", year[: 96 * 63])
    assert main(["forecast", "fit", "--csv", "load.csv", "--version", "3"]) == 0
    out = capsys.readouterr().out
    assert "read load.csv: 6048 rows at 15-minute steps" in out
    assert "MAE" in out and "vs same time last week" in out and "saved forecast.npz" in out
    model = load(tmp_path / "forecast.npz")
    assert model.version == 3 and model.fitted_on == 96 * 63
    before = (tmp_path / "forecast.npz").read_bytes()
    assert main(["forecast", "fit", "--csv", str(csv), "--version", "4"]) == 2
    assert "forecast.npz exists; pass --force" in capsys.readouterr().err
    assert (tmp_path / "forecast.npz").read_bytes() == before
    assert main(["forecast", "fit", "--csv", str(csv), "--version", "4", "--force"]) == 0
    assert load(tmp_path / "forecast.npz").version == 4


def test_offline_fit_reads_local_times_in_watts_to_a_named_file(
    tmp_path: Path, year: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    csv = berlin_csv(tmp_path / "meter.csv", year[: 96 * 63])
    target = tmp_path / "models" / "model.npz"
    argv = ["--csv", str(csv), "--tz", "Europe/Berlin", "--unit", "W", "-o", str(target)]
    assert main(["forecast", "fit", *argv]) == 0
    out = capsys.readouterr().out
    assert "18144 rows at 5-minute steps after a header" in out and "0 without data" in out
    assert main(["forecast", "fit", *argv[:-4], "-o", str(tmp_path / "kw.npz")]) == 0  # W read as kW
    assert "power column is 'Leistung_W' but the unit is kW (pass --unit W" in capsys.readouterr().err
    model = load(target)
    assert model.fitted_on == 96 * 63  # one hour less (spring) would show as gaps


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (
            ["--csv", "bad.csv"],
            "bad.csv:3: timestamp '2024-02-05 00:3O' is neither ISO 8601 nor unix seconds",
        ),
        (["--csv", "missing.csv"], "missing.csv: cannot read it"),
        (["--csv", "short.csv"], "short.csv: history too short to fit"),
        (["--csv", "bad.csv", "--node", "n1"], "--node names a node of --config"),
        ([], "without --config, --csv FILE is needed"),
        (["--csv", "short.csv", "--tz", "Mars/Olympus"], "--tz 'Mars/Olympus' is not in the tz database"),
    ],
    ids=["bad-row", "missing-file", "too-short", "node-without-config", "no-csv", "bad-tz"],
)
def test_bad_input_exits_2_and_writes_nothing(
    argv: list[str],
    error: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.csv").write_text("time,kw\n2024-02-05 00:15,1\n2024-02-05 00:3O,2\n")
    (tmp_path / "short.csv").write_text("".join(f"{1707091200 + 900 * i},{i % 96}\n" for i in range(96 * 7)))
    assert main(["forecast", "fit", *argv]) == 2
    err = capsys.readouterr().err
    assert error in " ".join(err.split()), err
    assert list(tmp_path.glob("*.npz")) == []


def test_fit_with_config_saves_into_the_nodes_data_folder(
    tmp_path: Path, year: np.ndarray, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    csv = unix_csv(tmp_path / "load.csv", year[: 96 * 63])
    assert main(["forecast", "fit", "--config", str(config), "--node", "n2", "--csv", str(csv)]) == 0
    assert f"saved {tmp_path / 'data' / 'n2' / 'forecast.npz'}" in capsys.readouterr().out
    assert load(tmp_path / "data" / "n2" / "forecast.npz").version == 1
    assert main(["forecast", "fit", "--config", str(config), "--csv", str(csv)]) == 2  # which node?


def test_the_chart_labels_min_and_max_and_marks_unknown_steps() -> None:
    kw: list[float | None] = [10.0 + (i if i < 70 else 0) for i in range(96)]
    kw[3] = None
    lines = bar_chart(kw, 0.0, 900.0, rows=4, width=96, clock=time.gmtime)
    assert lines[0].startswith("79.0 kW ┤") and lines[3].startswith(" 0.0 kW ┤")
    assert lines[3][9 + 3] == "·" and lines[0][9 + 69] == "█"  # unknown step 3; the peak at 17:15
    assert lines[5].split() == ["00:00", "06:00", "12:00", "18:00"]
    assert lines[-1].startswith("max 79.0 kW at 17:15, min 10.0 kW at 00:00")
    assert "1 of 96 steps unknown" in lines[-1]
    narrow = bar_chart(kw, 0.0, 900.0, width=48, clock=time.gmtime)
    assert len(narrow[0]) == 9 + 48 and "one column per 30 min" in narrow[-1]
    assert bar_chart([None] * 96, 0.0, 900.0) == []
