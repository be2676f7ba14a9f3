"""ActuationFence: the newest token written per device survives a restart; an older one is
refused; a damaged file or a missing journal starts the fence empty."""

from __future__ import annotations

import json
from pathlib import Path

from meshems.adapters.actuation_fence import ActuationFence


def fence(folder: Path, journal: bool = True) -> ActuationFence:
    if journal:
        (folder / "raft.journal").write_bytes(b"j")
    return ActuationFence.in_folder(folder)


def test_a_restarted_fence_refuses_what_is_older_than_it_wrote(tmp_path: Path) -> None:
    f = fence(tmp_path)
    assert f.allows("n1-bat", (9, 16))
    f.record("n1-bat", (9, 16))
    f.record("n1-bat", (27, 50))
    f.record("n1-bat", (12, 20))  # older: not stored
    assert (tmp_path / "actuated.json").stat().st_mode & 0o777 == 0o600
    again = ActuationFence.in_folder(tmp_path)
    assert again.newest == {"n1-bat": (27, 50)}
    assert not again.allows("n1-bat", (9, 16)) and not again.allows("n1-bat", (26, 99))
    assert again.allows("n1-bat", (27, 50)) and again.allows("n1-bat", (28, 1))
    assert again.allows("n2-bat", (1, 1)) and again.refused == 2


def test_a_damaged_file_is_moved_aside_and_named(tmp_path: Path) -> None:
    fence(tmp_path)
    (tmp_path / "actuated.json").write_text('{"n1-bat": [27')
    f = ActuationFence.in_folder(tmp_path)
    assert f.newest == {} and f.problem is not None and "actuated.json" in f.problem
    assert (tmp_path / "actuated.json.damaged").exists() and not (tmp_path / "actuated.json").exists()


def test_without_a_journal_the_fence_starts_over(tmp_path: Path) -> None:
    """A node with no journal (new, reset, or a zone built again) has no past to fence against."""
    (tmp_path / "actuated.json").write_text(json.dumps({"n1-bat": [27, 50]}))
    f = fence(tmp_path, journal=False)
    assert f.newest == {} and f.allows("n1-bat", (1, 3)) and f.problem is None
    assert (tmp_path / "actuated.json.old").exists()


def test_devices_written_from_their_own_threads_all_store_their_tokens(tmp_path: Path) -> None:
    import threading

    (tmp_path / "raft.journal").write_bytes(b"")
    fence = ActuationFence.in_folder(tmp_path)
    errors: list[BaseException] = []

    def writer(device: str) -> None:
        try:
            for i in range(1, 101):
                fence.record(device, (1, i))
        except BaseException as exc:  # a shared temporary name: FileExistsError, FileNotFoundError
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(f"d{k}",)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    again = ActuationFence.in_folder(tmp_path)
    assert again.newest == {f"d{k}": (1, 100) for k in range(6)}
