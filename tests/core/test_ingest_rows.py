"""Unit tests for `meshems.core.ingest_rows`: the ledger's stored text.

`ledger_to_json` formats by hand for speed; the text must stay exactly what
`json.dumps(..., separators=(",", ":"))` wrote (stores written before read it, and the
SQLite store compares texts to know whether a ledger changed), and read back the same.
"""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from meshems.core.ingest_ledger import ZoneLedger, from_seqs
from meshems.core.ingest_rows import ledger_from_json, ledger_to_json

ranges = st.sets(st.integers(1, 10**12), max_size=8).map(from_seqs)
times = st.one_of(st.floats(allow_nan=True), st.integers(0, 2**40))
ledgers = st.builds(
    ZoneLedger, st.just("z"), ranges, ranges, st.integers(0, 10**12), st.text(max_size=8), times
)


def _dumps(led: ZoneLedger) -> str:
    doc = {"received": led.received, "announced": led.announced, "last_seq": led.last_seq,
           "publisher": led.publisher, "last_received_s": led.last_received_s}  # fmt: skip
    return json.dumps(doc, separators=(",", ":"))


@settings(max_examples=300, deadline=None)
@given(ledgers)
def test_ledger_text_is_what_json_dumps_wrote(led: ZoneLedger) -> None:
    text = ledger_to_json(led)
    assert text == _dumps(led)
    back = ledger_from_json("z", text)
    assert (back.received, back.announced, back.last_seq, back.publisher) == (
        led.received, led.announced, led.last_seq, led.publisher)  # fmt: skip
    assert ledger_to_json(back) == _dumps(back)  # the time read back is a float


def test_ledger_text_of_an_example() -> None:
    led = ZoneLedger("z", ((1, 5), (7, 7)), ((6, 6),), 7, 'n"1é', 12.5)
    expected = '{"received":[[1,5],[7,7]],"announced":[[6,6]],"last_seq":7,"publisher":"n\\"1\\u00e9",'
    assert ledger_to_json(led) == expected + '"last_received_s":12.5}'
