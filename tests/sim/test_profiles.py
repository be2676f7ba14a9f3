"""Unit tests for `meshems.sim.profiles`: PV irradiance and load shapes over simulated time.

They check ranges, night and weekend behaviour, determinism per seed, and that scalars and
numpy arrays give the same answers.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshems.sim.profiles import LOAD_SHAPES, load_fraction, pv_irradiance_fraction

DAY_S = 86400.0
HOUR_S = 3600.0
WEEK = np.arange(0.0, 7 * DAY_S, 300.0)


@pytest.mark.parametrize("cloudiness", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_irradiance_in_range(cloudiness: float, seed: int) -> None:
    values = pv_irradiance_fraction(WEEK, cloudiness=cloudiness, seed=seed)
    assert values.shape == WEEK.shape
    assert np.all((values >= 0.0) & (values <= 1.0))


@pytest.mark.parametrize("shape", LOAD_SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_load_in_range(shape: str, seed: int) -> None:
    values = load_fraction(WEEK, shape, seed)
    assert np.all((values >= 0.0) & (values <= 1.0))
    assert values.min() > 0.0


@settings(max_examples=100, deadline=None)
@given(t_s=st.floats(-1e7, 1e8), seed=st.integers(0, 2**40), cloudiness=st.floats(0.0, 1.0))
def test_scalars_in_range(t_s: float, seed: int, cloudiness: float) -> None:
    irradiance = pv_irradiance_fraction(t_s, cloudiness=cloudiness, seed=seed)
    assert isinstance(irradiance, float) and 0.0 <= irradiance <= 1.0
    for shape in LOAD_SHAPES:
        fraction = load_fraction(t_s, shape, seed)
        assert isinstance(fraction, float) and 0.0 <= fraction <= 1.0


@pytest.mark.parametrize("hour", [0.0, 3.0, 5.99, 6.0, 20.0, 21.5, 23.99])
@pytest.mark.parametrize("day", [0, 3, 6, 100])
def test_no_pv_at_night(hour: float, day: int) -> None:
    assert pv_irradiance_fraction(day * DAY_S + hour * HOUR_S, cloudiness=1.0, seed=3) == 0.0


def test_clear_sky_bell() -> None:
    assert pv_irradiance_fraction(13 * HOUR_S) == pytest.approx(1.0)  # solar noon, 6 h - 20 h
    assert pv_irradiance_fraction(9 * HOUR_S) == pytest.approx(pv_irradiance_fraction(17 * HOUR_S))
    assert pv_irradiance_fraction(7 * HOUR_S) < pv_irradiance_fraction(10 * HOUR_S) < 1.0
    assert pv_irradiance_fraction(7 * HOUR_S, sunrise_h=8.0, sunset_h=18.0) == 0.0
    assert pv_irradiance_fraction(13 * HOUR_S + 5 * DAY_S) == pytest.approx(1.0)  # every day alike


def test_clouds_only_dim() -> None:
    clear = pv_irradiance_fraction(WEEK)
    for cloudiness in (0.3, 1.0):
        cloudy = pv_irradiance_fraction(WEEK, cloudiness=cloudiness, seed=5)
        assert np.all(cloudy <= clear + 1e-12)
        assert cloudy.sum() < clear.sum()
    heavy = pv_irradiance_fraction(WEEK, cloudiness=1.0, seed=5)
    light = pv_irradiance_fraction(WEEK, cloudiness=0.3, seed=5)
    assert heavy.sum() < light.sum()


def test_clouds_are_smooth() -> None:
    t = np.arange(10 * HOUR_S, 16 * HOUR_S, 10.0)
    values = pv_irradiance_fraction(t, cloudiness=1.0, seed=9)
    # the fastest sine (233 s) bounds the slope at about 0.011 per second: no jumps
    assert np.max(np.abs(np.diff(values))) < 0.12


def test_office_weekday_vs_weekend() -> None:
    for day in range(7):
        midday = load_fraction(day * DAY_S + 11 * HOUR_S, "office")
        night = load_fraction(day * DAY_S + 3 * HOUR_S, "office")
        if day < 5:  # Monday to Friday
            assert midday > 0.75 and night < 0.25
        else:
            assert midday < 0.35
    monday = load_fraction(np.arange(0.0, DAY_S, 600.0), "office")
    saturday = load_fraction(5 * DAY_S + np.arange(0.0, DAY_S, 600.0), "office")
    assert saturday.sum() < 0.6 * monday.sum()
    assert load_fraction(7 * DAY_S + 11 * HOUR_S) > 0.75  # the next Monday


def test_office_shape() -> None:
    def at(hour: float) -> float:
        return load_fraction(hour * HOUR_S, "office")

    assert at(4) < at(8) < at(10)  # morning ramp
    assert at(12.5) > at(10) + 0.05  # lunch bump
    assert at(21) < at(17) - 0.5  # evening drop


def test_residential_peaks() -> None:
    def at(hour: float) -> float:
        return load_fraction(hour * HOUR_S, "residential")

    assert at(7.5) > at(3) + 0.2 and at(7.5) > at(12) + 0.2  # morning peak
    assert at(19.5) > at(7.5) and at(19.5) > at(14) + 0.4  # evening peak, the larger


def test_flat_is_flat() -> None:
    values = load_fraction(WEEK, "flat", seed=2)
    assert values.max() - values.min() <= 0.06 + 1e-12


@pytest.mark.parametrize("shape", LOAD_SHAPES)
def test_deterministic_per_seed_and_seeds_differ(shape: str) -> None:
    assert np.array_equal(load_fraction(WEEK, shape, 4), load_fraction(WEEK, shape, 4))
    assert not np.array_equal(load_fraction(WEEK, shape, 4), load_fraction(WEEK, shape, 5))


def test_irradiance_deterministic_per_seed_and_seeds_differ() -> None:
    a = pv_irradiance_fraction(WEEK, cloudiness=0.7, seed=4)
    assert np.array_equal(a, pv_irradiance_fraction(WEEK, cloudiness=0.7, seed=4))
    assert not np.array_equal(a, pv_irradiance_fraction(WEEK, cloudiness=0.7, seed=5))
    assert np.array_equal(pv_irradiance_fraction(WEEK, seed=4), pv_irradiance_fraction(WEEK, seed=5))


def test_scalar_and_array_agree() -> None:
    t = WEEK[::37]
    np.testing.assert_array_equal(
        pv_irradiance_fraction(t, cloudiness=0.5, seed=1),
        [pv_irradiance_fraction(float(x), cloudiness=0.5, seed=1) for x in t],
    )
    np.testing.assert_array_equal(
        load_fraction(t, "residential", 1), [load_fraction(float(x), "residential", 1) for x in t]
    )


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown load shape 'factory'"):
        load_fraction(0.0, "factory")
    with pytest.raises(ValueError, match="sunrise_h"):
        pv_irradiance_fraction(0.0, sunrise_h=20.0, sunset_h=6.0)
    with pytest.raises(ValueError, match="cloudiness"):
        pv_irradiance_fraction(0.0, cloudiness=1.5)
