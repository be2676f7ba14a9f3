"""Unit tests for `meshems.core.fencing`: which committed setpoint a node may actuate.

A setpoint's fencing token is the (term, index) of the log entry that committed it; a node
actuates only a token newer than the last one it applied, so tokens must be a strict total
order (term first, then index). `pv_limit_pct` turns a PV setpoint into a clamped % limit.
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from meshems.core.fencing import newer, pv_limit_pct

PROPS = settings(max_examples=150, deadline=None)

# --- newer -----------------------------------------------------------------------------------

NEWER = [
    # (case, candidate, applied, expected)
    ("nothing applied yet", (1, 1), None, True),
    ("nothing applied yet, zero token", (0, 0), None, True),
    ("same token is a replay", (3, 17), (3, 17), False),
    ("same term, later index", (3, 18), (3, 17), True),
    ("same term, earlier index", (3, 16), (3, 17), False),
    ("later term, lower index", (4, 2), (3, 17), True),
    ("later term, same index", (4, 17), (3, 17), True),
    ("earlier term, higher index", (2, 99), (3, 17), False),
    ("earlier term, same index", (2, 17), (3, 17), False),
    ("term dominates a huge index", (5, 0), (4, 2**62), True),
    ("index breaks the tie at term zero", (0, 1), (0, 0), True),
]


@pytest.mark.parametrize(("case", "candidate", "applied", "expected"), NEWER, ids=[n[0] for n in NEWER])
def test_newer(
    case: str, candidate: tuple[int, int], applied: tuple[int, int] | None, expected: bool
) -> None:
    assert newer(candidate, applied) is expected


tokens = st.tuples(st.integers(0, 50), st.integers(0, 50))


@PROPS
@given(tokens)
def test_anything_is_newer_than_nothing(candidate: tuple[int, int]) -> None:
    assert newer(candidate, None)


@PROPS
@given(tokens, tokens)
def test_newer_is_the_lexicographic_order_of_term_then_index(a: tuple[int, int], b: tuple[int, int]) -> None:
    term_a, index_a = a
    term_b, index_b = b
    expected = term_a > term_b or (term_a == term_b and index_a > index_b)
    assert newer(a, b) is expected
    # A strict total order: irreflexive, antisymmetric, and any two distinct tokens compare.
    assert not newer(a, a)
    assert not (newer(a, b) and newer(b, a))
    assert newer(a, b) or newer(b, a) or a == b


@PROPS
@given(tokens, tokens, tokens)
def test_newer_is_transitive(a: tuple[int, int], b: tuple[int, int], c: tuple[int, int]) -> None:
    if newer(a, b) and newer(b, c):
        assert newer(a, c)


@PROPS
@given(st.lists(tokens, max_size=20))
def test_a_node_actuates_each_token_at_most_once_and_in_order(stream: list[tuple[int, int]]) -> None:
    """Feeding tokens through `newer` as a node does actuates a strictly rising sequence."""
    applied: tuple[int, int] | None = None
    actuated = []
    for token in stream:
        if newer(token, applied):
            actuated.append(token)
            applied = token
    assert actuated == sorted(set(actuated))
    if stream:
        assert applied == max(stream)


# --- pv_limit_pct ------------------------------------------------------------------------------

PV = [
    # (case, kw, rated_kw, expected %)
    ("half power", 20.0, 40.0, 50.0),
    ("full power", 40.0, 40.0, 100.0),
    ("zero", 0.0, 40.0, 0.0),
    ("small", 1.0, 40.0, 2.5),
    ("above the rating is clamped", 50.0, 40.0, 100.0),
    ("far above the rating is clamped", 1e9, 40.0, 100.0),
    ("negative is clamped to zero", -5.0, 40.0, 0.0),
    ("far negative is clamped to zero", -1e9, 40.0, 0.0),
    ("fractional rating", 0.75, 1.5, 50.0),
    ("tiny rating overflows to inf, clamped", 1.0, 1e-308, 100.0),
    ("no rating: unlimited", 20.0, 0.0, 100.0),
    ("no rating, zero setpoint: unlimited", 0.0, 0.0, 100.0),
    ("negative rating: unlimited", 20.0, -40.0, 100.0),
    ("negative rating, negative kw: unlimited", -20.0, -40.0, 100.0),
]


@pytest.mark.parametrize(("case", "kw", "rated", "expected"), PV, ids=[p[0] for p in PV])
def test_pv_limit_pct(case: str, kw: float, rated: float, expected: float) -> None:
    assert pv_limit_pct(kw, rated) == pytest.approx(expected)


finite = st.floats(-1e6, 1e6, allow_nan=False)
ratings = st.floats(0.001, 1e5, allow_nan=False)


@PROPS
@given(finite, st.floats(-1e5, 1e5, allow_nan=False))
def test_pv_limit_is_always_a_percentage(kw: float, rated: float) -> None:
    pct = pv_limit_pct(kw, rated)
    assert isinstance(pct, float)
    assert 0.0 <= pct <= 100.0
    if rated <= 0:
        assert pct == 100.0


@PROPS
@given(ratings, st.floats(0, 1, allow_nan=False))
def test_pv_limit_within_the_rating_is_proportional(rated: float, share: float) -> None:
    assert pv_limit_pct(share * rated, rated) == pytest.approx(share * 100.0, abs=1e-9)


@PROPS
@given(finite, finite, ratings)
def test_pv_limit_is_monotonic_in_the_setpoint(kw_a: float, kw_b: float, rated: float) -> None:
    lo, hi = sorted([kw_a, kw_b])
    assert pv_limit_pct(lo, rated) <= pv_limit_pct(hi, rated)
