"""Unit tests for `meshems.sim.load_data`: a year of synthetic 15-minute load.

They check size, range, determinism per seed, and that the shapes carry the structure a
forecaster should find: office weekdays above weekends, household winters above summers,
the farm's milking peaks; and that the PV year is dark at night and yields what 50 N does.
"""

from __future__ import annotations

import numpy as np
import pytest

from meshems.sim.load_data import (
    DAYS_PER_YEAR,
    FIRST_MONDAY_S,
    SHAPES,
    STEPS_PER_DAY,
    clear_sky_fraction,
    pv_year,
    synthetic_year,
    timestamps_s,
)


@pytest.fixture(scope="module")
def years() -> dict[str, np.ndarray]:
    return {shape: synthetic_year(seed=1, shape=shape) for shape in SHAPES}


def by_day(series: np.ndarray) -> np.ndarray:
    return series.reshape(DAYS_PER_YEAR, STEPS_PER_DAY)


@pytest.mark.parametrize("shape", SHAPES)
def test_length_range_and_peak(years: dict[str, np.ndarray], shape: str) -> None:
    series = years[shape]
    assert series.shape == (35040,)
    assert np.all(np.isfinite(series))
    assert series.min() >= 0.0
    assert series.max() == pytest.approx(60.0)
    assert synthetic_year(seed=1, shape=shape, peak_kw=6.0).max() == pytest.approx(6.0)


@pytest.mark.parametrize("shape", SHAPES)
def test_deterministic_per_seed_and_seeds_differ(years: dict[str, np.ndarray], shape: str) -> None:
    assert np.array_equal(synthetic_year(seed=1, shape=shape), years[shape])
    other = synthetic_year(seed=2, shape=shape)
    assert not np.allclose(other, years[shape])


def test_office_weekdays_above_weekends(years: dict[str, np.ndarray]) -> None:
    days = by_day(years["office"])  # start_weekday=0: day 0 is a Monday
    weekday = np.arange(DAYS_PER_YEAR) % 7
    working_hours = slice(9 * 4, 16 * 4)
    weekday_kw = np.median(days[weekday < 5, working_hours].mean(axis=1))
    sunday_kw = np.median(days[weekday == 6, working_hours].mean(axis=1))
    saturday_kw = np.median(days[weekday == 5, working_hours].mean(axis=1))
    assert weekday_kw > 2.0 * sunday_kw
    assert weekday_kw > saturday_kw > sunday_kw


@pytest.mark.parametrize("start_weekday", [0, 3, 6])
def test_start_weekday_shifts_the_week(start_weekday: int) -> None:
    days = by_day(synthetic_year(seed=4, shape="office", start_weekday=start_weekday))
    weekday = (np.arange(DAYS_PER_YEAR) + start_weekday) % 7
    noon_kw = days[:, 11 * 4 : 13 * 4].mean(axis=1)
    assert np.median(noon_kw[weekday == 6]) < 0.5 * np.median(noon_kw[weekday < 5])
    assert np.median(noon_kw[weekday == 5]) < 0.8 * np.median(noon_kw[weekday < 5])


def test_household_winter_above_summer(years: dict[str, np.ndarray]) -> None:
    days = by_day(years["household"])
    january, july = days[0:31].mean(), days[181:212].mean()
    assert january > 1.2 * july


def test_office_has_a_summer_cooling_bump(years: dict[str, np.ndarray]) -> None:
    days = by_day(years["office"])
    weekday = np.arange(DAYS_PER_YEAR) % 7
    afternoon = slice(14 * 4, 17 * 4)

    def working_afternoons(first: int, last: int) -> float:
        pick = (np.arange(DAYS_PER_YEAR) >= first) & (np.arange(DAYS_PER_YEAR) < last) & (weekday < 5)
        return float(np.median(days[pick, afternoon].mean(axis=1)))

    assert working_afternoons(190, 215) > 1.1 * working_afternoons(90, 120)  # July vs April


def test_household_is_not_the_office_shape(years: dict[str, np.ndarray]) -> None:
    office, household = by_day(years["office"]), by_day(years["household"])
    evening = slice(19 * 4, 21 * 4)
    midday = slice(10 * 4, 12 * 4)
    assert household[:, evening].mean() > household[:, midday].mean()
    assert office[:, midday].mean() > office[:, evening].mean()


def test_residential_is_an_alias_and_unknown_shapes_are_refused() -> None:
    assert np.array_equal(
        synthetic_year(seed=3, shape="residential"), synthetic_year(seed=3, shape="household")
    )
    with pytest.raises(ValueError, match="unknown load shape 'factory'"):
        synthetic_year(shape="factory")
    with pytest.raises(ValueError, match="peak_kw"):
        synthetic_year(peak_kw=0.0)
    with pytest.raises(ValueError, match="start_weekday"):
        synthetic_year(start_weekday=7)


def test_timestamps() -> None:
    t = timestamps_s(4, start_s=FIRST_MONDAY_S)
    assert t.tolist() == [345600.0, 346500.0, 347400.0, 348300.0]
    assert timestamps_s(0).shape == (0,)
    assert timestamps_s(3, step_s=60.0).tolist() == [0.0, 60.0, 120.0]
    with pytest.raises(ValueError):
        timestamps_s(3, step_s=0.0)


def hours_of(mean_day: np.ndarray, first_h: float, last_h: float) -> np.ndarray:
    return mean_day[int(first_h * 4) : int(last_h * 4)]


def test_farm_peaks_at_milking_times(years: dict[str, np.ndarray]) -> None:
    days = by_day(years["farm"])
    mean_day = days.mean(axis=0)
    hour = np.arange(STEPS_PER_DAY) / 4.0
    assert 5.0 <= hour[mean_day.argmax()] < 7.0  # the morning milking is the day's peak
    evening = hours_of(mean_day, 15.0, 21.0)
    assert 17.0 <= 15.0 + evening.argmax() / 4.0 < 19.0
    midday = hours_of(mean_day, 11.0, 14.0).mean()
    assert midday < 0.75 * hours_of(mean_day, 5.0, 7.0).mean()
    assert midday < 0.75 * hours_of(mean_day, 17.0, 19.0).mean()
    assert hours_of(mean_day, 1.0, 3.0).mean() < midday  # the night base is lowest
    # seasonal, and a farm works at weekends (unlike the office)
    assert days[0:31].mean() > 1.1 * days[181:212].mean()
    weekday = np.arange(DAYS_PER_YEAR) % 7
    assert days[weekday == 6].mean() > 0.9 * days[weekday < 5].mean()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pv_is_dark_at_night_and_yields_a_german_year(seed: int) -> None:
    pv = pv_year(seed=seed, peak_kw=10.0)
    assert pv.shape == (35040,)
    assert np.all(np.isfinite(pv))
    assert pv.min() >= 0.0
    assert pv.max() <= 10.0
    days = by_day(pv)
    night = np.r_[0 : 3 * 4, 21 * 4 : 24 * 4]  # solar time: the sun is down at 50 N all year
    assert np.all(days[:, night] == 0.0)
    assert np.all(days[354, : 8 * 4] == 0.0)  # a December morning: sunrise after 08:00
    kwh_per_kw = pv.sum() * 0.25 / 10.0
    assert 850.0 <= kwh_per_kw <= 1150.0
    assert days[150:240].sum() > 2.5 * days[list(range(0, 45)) + list(range(320, 365))].sum()


def test_pv_has_overcast_clear_and_broken_days() -> None:
    days = by_day(pv_year(seed=3, peak_kw=1.0))
    ratio = days.sum(axis=1) / (0.86 * clear_sky_fraction().sum(axis=1))
    assert (ratio < 0.3).sum() >= 30  # overcast
    assert (ratio > 0.8).sum() >= 30  # clear
    # broken cloud: quarter-hours jump about on half-clear days, far less on clear ones
    steps = np.abs(np.diff(days[:, 40:56], axis=1)).mean(axis=1) / np.maximum(
        days[:, 40:56].mean(axis=1), 1e-9
    )
    half = (ratio > 0.4) & (ratio < 0.6)
    assert half.sum() >= 10
    assert np.median(steps[half]) > 2.0 * np.median(steps[ratio > 0.85])


def test_pv_is_deterministic_per_seed_and_refuses_a_bad_peak() -> None:
    assert np.array_equal(pv_year(seed=5, peak_kw=4.0), pv_year(seed=5, peak_kw=4.0))
    assert not np.allclose(pv_year(seed=5), pv_year(seed=6))
    with pytest.raises(ValueError, match="peak_kw"):
        pv_year(peak_kw=float("nan"))
