"""Sizes the forecaster's tests share: 15-minute steps; synthetic years start on a Thursday
so that their day 0 is Unix time 0."""

from __future__ import annotations

STEP_S = 900.0
DAY = 96
WEEK = 7 * DAY
THURSDAY = 3  # Unix time 0 was a Thursday
