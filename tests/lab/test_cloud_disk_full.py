"""Disk full under the cloud outbox (root: a real tmpfs of 256 KiB): derived records that
cannot be stored stay in memory in order, the A_CLOUD_OUTBOX_WRITE alarm is raised, and once
the disk has room again every record is stored, none lost, and the alarm clears."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from meshems.adapters.outbox_file import OutboxError
from tests.node.test_cloud import Rig

pytestmark = pytest.mark.lab


def test_a_full_disk_holds_records_in_memory_and_loses_none(tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(small)], check=True)
    rig = None
    try:
        rig = Rig(small)
        total = 0
        failed = False
        for _ in range(40):
            total += len(rig.add(100))
            try:
                rig.store()
            except OutboxError as exc:
                failed = True
                assert "full" in exc.message, exc.message
                break
        assert failed, "the 256 KiB disk never filled"
        assert "A_CLOUD_OUTBOX_WRITE" in rig.status(0.0)["alarms"]
        held = len(rig.cs._unstored)
        stored = len(rig.outbox.read_from(0, 100_000))
        assert held > 0 and stored + held == total
        rig.add(50)  # records keep coming while the disk is full
        with pytest.raises(OutboxError):
            rig.store()
        assert len(rig.cs._unstored) == held + 50
        subprocess.run(["mount", "-o", "remount,size=16m", str(small)], check=True)
        rig.store()
        assert "A_CLOUD_OUTBOX_WRITE" not in rig.status(0.0)["alarms"]
        assert rig.cs._unstored == []
        assert [r.seq for r in rig.outbox.read_from(0, 100_000)] == list(range(1, total + 51))
    finally:
        if rig is not None:
            rig.outbox.close()
        subprocess.run(["umount", "-l", str(small)], check=False)
