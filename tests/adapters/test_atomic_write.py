"""write_atomic: the file appears whole, with the asked mode, and no temp file stays."""

from __future__ import annotations

import stat
from pathlib import Path

from meshems.adapters.atomic_write import write_atomic


def test_writes_with_the_mode_and_leaves_no_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "key"
    write_atomic(path, b"secret\n")
    assert path.read_bytes() == b"secret\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["key"]


def test_replaces_an_existing_file_and_a_stale_temp_file(tmp_path: Path) -> None:
    path = tmp_path / "cert.pem"
    path.write_bytes(b"old")
    (tmp_path / "cert.pem.tmp").write_bytes(b"left by a crash")
    write_atomic(path, b"new", 0o644)
    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) & ~0o644 == 0  # never wider than asked (umask may narrow)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cert.pem"]
