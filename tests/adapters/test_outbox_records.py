"""Unit tests for `meshems.adapters.outbox_records`: seq ranges and drop reports."""

from __future__ import annotations

from meshems.adapters.outbox_records import DropReport, SeqRange, seq_ranges


def test_seq_ranges_collapse_consecutive_seqs() -> None:
    assert seq_ranges([7, 3, 4, 5, 9, 4]) == (SeqRange(3, 5), SeqRange(7, 7), SeqRange(9, 9))
    assert seq_ranges([]) == ()
    report = DropReport(age=(SeqRange(3, 5),), rejected=(SeqRange(9, 9),))
    assert (report.dropped_age, report.dropped_bytes, report.rejected_count, report.total) == (3, 0, 1, 4)
    assert report and not DropReport()
