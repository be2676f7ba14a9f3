#!/usr/bin/env python3
"""Forecast skill benchmark: meshems' load forecaster vs seasonal naive (same time last week).

For office and household synthetic years (seeds 1..3, 15-minute data, Unix-aligned) the
model is fitted on the first 8 weeks, then a 24 h forecast is issued every 6 h over the rest
of the year (rolling origin). Columns: MAE of the model fitted once, of seasonal naive, their
ratio, and the ratio when the model is refitted weekly on the trailing 8 weeks (as a node
would). Also fit time (median of 5 fits on 8 weeks) and predict time (median of 100 calls).
Never asserts on time. `--json` prints one JSON object, `--quick` a shorter test period.

    python scripts/bench/forecast_skill.py [--quick] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from meshems.core import forecast
from meshems.core.forecast_eval import evaluate
from meshems.sim.load_data import DAYS_PER_YEAR, synthetic_year

STEP_S = 900.0
TRAIN_DAYS = 56
HORIZON_STEPS = 96  # 24 h
ISSUE_EVERY_STEPS = 24  # 6 h
REFIT_EVERY_DAYS = 7
SHAPES = ("office", "household")
SEEDS = (1, 2, 3)
THURSDAY = 3  # Unix time 0 was a Thursday: day 0 of each year is t = 0


def score(shape: str, seed: int, test_days: float) -> dict[str, Any]:
    series = synthetic_year(seed=seed, shape=shape, start_weekday=THURSDAY)
    common = {
        "horizon_steps": HORIZON_STEPS,
        "issue_every_steps": ISSUE_EVERY_STEPS,
    }
    once = evaluate(series, 0.0, STEP_S, TRAIN_DAYS, test_days, **common)
    refit = evaluate(series, 0.0, STEP_S, TRAIN_DAYS, test_days, refit_every_days=REFIT_EVERY_DAYS, **common)
    return {
        "shape": shape,
        "seed": seed,
        "mae_model_kw": once["mae_model_kw"],
        "mae_naive_kw": once["mae_naive_kw"],
        "ratio": once["ratio"],
        "mae_model_refit_kw": refit["mae_model_kw"],
        "ratio_refit": refit["ratio"],
        "forecasts": int(once["n_forecasts"]),
        "refits": int(refit["n_fits"]),
    }


def timings() -> tuple[float, float]:
    """Median fit time (ms, 5 fits on 8 weeks) and predict time (ms, 100 calls)."""
    series = synthetic_year(seed=1, shape="office", start_weekday=THURSDAY)
    history = series[: TRAIN_DAYS * 96]
    fit_ms = []
    for _ in range(5):
        start = time.perf_counter()
        model = forecast.fit(history, 0.0, STEP_S, HORIZON_STEPS)
        fit_ms.append((time.perf_counter() - start) * 1000.0)
    predict_ms = []
    t_now_s = (history.size - 1) * STEP_S
    for _ in range(100):
        start = time.perf_counter()
        forecast.predict(model, history, t_now_s)
        predict_ms.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(fit_ms), statistics.median(predict_ms)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="test over 28 days instead of the rest of the year")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()
    test_days = 28 if args.quick else DAYS_PER_YEAR - TRAIN_DAYS
    runs = []
    for shape in SHAPES:
        for seed in SEEDS:
            if not args.json:
                print(f"bench: {shape} seed {seed}...", file=sys.stderr)
            runs.append(score(shape, seed, test_days))
    fit_ms, predict_ms = timings()
    out = {
        "forecast_mae_vs_seasonal_naive": statistics.median(r["ratio"] for r in runs),
        "forecast_mae_vs_seasonal_naive_refit_weekly": statistics.median(r["ratio_refit"] for r in runs),
        "fit_ms": fit_ms,
        "predict_ms": predict_ms,
        "train_days": TRAIN_DAYS,
        "test_days": test_days,
        "horizon_h": HORIZON_STEPS * STEP_S / 3600.0,
        "issue_every_h": ISSUE_EVERY_STEPS * STEP_S / 3600.0,
        "runs": runs,
    }
    if args.json:
        print(json.dumps(out))
        return 0
    print(
        f"forecast skill: fit on {TRAIN_DAYS} days, 24 h forecasts every 6 h over the next {test_days} days "
        "(MAE in kW, 60 kW peak)"
    )
    print(
        f"{'shape':<10}{'seed':>5}{'model':>9}{'naive':>9}{'ratio':>8}"
        f"{'model refit':>13}{'ratio refit':>13}{'forecasts':>11}"
    )
    for r in runs:
        print(
            f"{r['shape']:<10}{r['seed']:>5}{r['mae_model_kw']:>9.3f}{r['mae_naive_kw']:>9.3f}{r['ratio']:>8.3f}"
            f"{r['mae_model_refit_kw']:>13.3f}{r['ratio_refit']:>13.3f}{r['forecasts']:>11}"
        )
    once = out["forecast_mae_vs_seasonal_naive"]
    print(f"{'median ratio model / seasonal naive (fitted once)':<52}{once:>8.3f}")
    print(
        f"{'median ratio model / seasonal naive (refit weekly)':<52}"
        f"{out['forecast_mae_vs_seasonal_naive_refit_weekly']:>8.3f}"
    )
    print(f"{'fit on 8 weeks, median of 5 (ms)':<52}{fit_ms:>8.1f}")
    print(f"{'predict 24 h, median of 100 (ms)':<52}{predict_ms:>8.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
