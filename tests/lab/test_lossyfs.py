"""The lab's lossy filesystem (real FUSE mounts, root and /dev/fuse): what was fsync'd or
fdatasync'd survives a `drop`, nothing else does; metadata is applied at once; dirty memory
is capped; over a full disk (lab.diskfull) a sync is ENOSPC; SIGTERM unmounts. Every mount
is unmounted and every folder removed in teardown."""

from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from meshems.adapters.atomic_write import write_atomic
from meshems.lab.diskfull import SmallDisk, disk_mounts, unmount_disks
from meshems.lab.powerloss import LossyMount, control, lossy_mounts, lossy_ready, unmount, unmount_stale

pytestmark = pytest.mark.lab


@pytest.fixture(autouse=True)
def needs_fuse() -> None:
    """Skip without FUSE (root, /dev/fuse, fusermount3, mfusepy), or fail where CI requires lab tests."""
    if lossy_ready():
        return
    reason = "lossyfs needs root, /dev/fuse, fusermount3 (Debian fuse3) and mfusepy (scripts/setup)"
    if os.environ.get("MESHEMS_REQUIRE_LAB") == "1":
        pytest.fail(f"{reason}, and MESHEMS_REQUIRE_LAB=1 requires them", pytrace=False)
    pytest.skip(reason)


def _start(root: Path, cap_mib: int = 256) -> tuple[LossyMount, subprocess.Popen[bytes]]:
    tag = uuid.uuid4().hex[:6]
    m = LossyMount.of(root, f"t{tag}", "n1", root / "mnt")
    with open(root / "lossyfs.log", "wb") as log:
        proc = subprocess.Popen([*m.command(), "--cap-mib", str(cap_mib)], stdout=log, stderr=log)
    m.wait_mounted(lambda: proc.poll() is None, timeout_s=15)
    return m, proc


def _stop(m: LossyMount, proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
    if m.mounted():
        unmount(m.mount)
    m.control.unlink(missing_ok=True)


@pytest.fixture
def lossy() -> Iterator[LossyMount]:
    root = Path(tempfile.mkdtemp(prefix="lossyfs-test-"))
    m, proc = _start(root)
    try:
        yield m
    finally:
        _stop(m, proc)
        shutil.rmtree(root, ignore_errors=True)
    assert not m.mounted() and not root.exists()


def _write(path: Path, data: bytes, sync: str = "", flags: int = 0) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o644)
    try:
        os.write(fd, data)
        if sync == "fsync":
            os.fsync(fd)
        elif sync == "fdatasync":
            os.fdatasync(fd)
    finally:
        os.close(fd)


def test_an_unsynced_write_is_gone_after_a_drop_and_reads_saw_it_before(lossy: LossyMount) -> None:
    f = lossy.mount / "journal"
    _write(f, b"x" * 10_000)
    assert f.read_bytes() == b"x" * 10_000 and f.stat().st_size == 10_000
    assert (lossy.backing / "journal").read_bytes() == b""  # the backing has only the create
    stats = lossy.stats()
    assert stats["dirty_files"] == 1 and stats["dirty_bytes"] == 3 * 4096
    assert lossy.drop() == {"files": 1, "bytes": 3 * 4096}
    assert f.exists() and f.read_bytes() == b"" and f.stat().st_size == 0  # metadata stays
    assert lossy.stats()["dirty_bytes"] == 0 and lossy.stats()["drops"] == 1


@pytest.mark.parametrize("sync", ["fsync", "fdatasync"])
def test_a_synced_write_survives_a_drop(lossy: LossyMount, sync: str) -> None:
    f = lossy.mount / "vote"
    _write(f, b"term 7 voted n2", sync)
    assert (lossy.backing / "vote").read_bytes() == b"term 7 voted n2"
    assert lossy.drop()["bytes"] == 0
    assert f.read_bytes() == b"term 7 voted n2"


def test_after_a_drop_a_file_keeps_only_its_synced_prefix(lossy: LossyMount) -> None:
    f = lossy.mount / "raft.journal"
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"A" * 5000)
        os.fsync(fd)
        os.write(fd, b"B" * 5000)  # appended, not synced
        os.pwrite(fd, b"C" * 10, 100)  # an unsynced overwrite inside the synced part
        assert os.pread(fd, 20_000, 0) == b"A" * 100 + b"C" * 10 + b"A" * 4890 + b"B" * 5000
    finally:
        os.close(fd)
    lossy.drop()
    assert f.read_bytes() == b"A" * 5000


def test_an_atomic_write_survives_a_drop_and_an_unsynced_rename_leaves_an_empty_file(
    lossy: LossyMount,
) -> None:
    write_atomic(lossy.mount / "actuated.json", b'{"term": 3}')  # tmp, fsync, rename
    tmp = lossy.mount / "state.tmp"
    _write(tmp, b"never synced")
    os.replace(tmp, lossy.mount / "state.json")  # the rename is applied at once, the data is not
    os.makedirs(lossy.mount / "payloads" / "abc")
    lossy.drop()
    assert (lossy.mount / "actuated.json").read_bytes() == b'{"term": 3}'
    assert (lossy.mount / "state.json").read_bytes() == b"" and not tmp.exists()
    assert (lossy.mount / "payloads" / "abc").is_dir()
    os.utime(lossy.mount / "actuated.json", ns=(10**9, 2 * 10**9))
    assert (lossy.backing / "actuated.json").stat().st_mtime_ns == 2 * 10**9
    os.utime(lossy.mount / "actuated.json")  # now
    assert sorted(os.listdir(lossy.mount)) == ["actuated.json", "payloads", "state.json"]


def test_writes_of_a_file_opened_o_dsync_are_synced_at_once(lossy: LossyMount) -> None:
    f = lossy.mount / "fence"
    _write(f, b"dsync write", flags=os.O_DSYNC)
    assert lossy.stats()["dirty_bytes"] == 0
    lossy.drop()
    assert f.read_bytes() == b"dsync write"


def test_truncate_and_fallocate_apply_at_once_and_trim_dirty_pages(lossy: LossyMount) -> None:
    f = lossy.mount / "j"
    fd = os.open(f, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        os.write(fd, b"S" * 100)
        os.fsync(fd)
        os.write(fd, b"U" * 9000)
        os.ftruncate(fd, 50)  # shrinks the backing too; the unsynced tail is gone
        assert os.pread(fd, 200, 0) == b"S" * 50 and lossy.stats()["dirty_bytes"] == 4096
        os.posix_fallocate(fd, 0, 8192)  # the journal reserves space ahead
        assert os.fstat(fd).st_size == 8192 and (lossy.backing / "j").stat().st_size == 8192
    finally:
        os.close(fd)
    lossy.drop()
    assert f.read_bytes() == b"S" * 50 + bytes(8192 - 50)


def test_unsynced_memory_is_capped_with_enospc() -> None:
    root = Path(tempfile.mkdtemp(prefix="lossyfs-cap-"))
    m, proc = _start(root, cap_mib=1)
    try:
        fd = os.open(m.mount / "big", os.O_WRONLY | os.O_CREAT, 0o644)
        try:
            os.write(fd, b"z" * (1 << 20))  # exactly the cap
            with pytest.raises(OSError) as exc:
                os.write(fd, b"z" * 4096)
            assert exc.value.errno == errno.ENOSPC
            os.fsync(fd)  # syncing frees the memory: writes go on
            os.write(fd, b"z" * 4096)
        finally:
            os.close(fd)
        stats = m.stats()
        assert stats["enospc"] == 1 and stats["dirty_bytes"] == 4096
        assert (m.backing / "big").stat().st_size == 1 << 20
    finally:
        _stop(m, proc)
        shutil.rmtree(root, ignore_errors=True)


def test_sigterm_unmounts_and_removes_the_control_socket() -> None:
    root = Path(tempfile.mkdtemp(prefix="lossyfs-term-"))
    m, proc = _start(root)
    try:
        assert str(m.mount) in lossy_mounts(m.name)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        assert not m.mounted() and not m.control.exists()
        with pytest.raises(Exception, match="is its lossyfs running"):
            control(m.control, "stats")
    finally:
        _stop(m, proc)
        shutil.rmtree(root, ignore_errors=True)


def test_a_mount_left_by_a_killed_lossyfs_is_found_and_unmounted_by_its_name() -> None:
    root = Path(tempfile.mkdtemp(prefix="lossyfs-stale-"))
    m, proc = _start(root)
    try:
        proc.kill()  # the lab's builder and its filesystems crashed: the mount stays, dead
        proc.wait(timeout=10)
        assert str(m.mount) in lossy_mounts(m.name)
        prefix = m.name.rsplit("-", 1)[0] + "-"  # lossyfs-TAG-: this lab's mounts only
        assert unmount_stale(prefix) == [str(m.mount)]
        assert not m.mounted() and not m.control.exists()
    finally:
        _stop(m, proc)
        shutil.rmtree(root, ignore_errors=True)


def test_over_a_full_disk_a_sync_fails_with_enospc_and_preallocated_space_still_syncs() -> None:
    """The disk_full fault's stack (lab.diskfull): lossyfs over a small tmpfs the fault fills.
    Writes into space reserved before (the journal's posix_fallocate) still sync; a sync of
    new space is ENOSPC and frees its memory; once the filler is gone a sync works again."""
    root = Path(tempfile.mkdtemp(prefix="lossyfs-full-"))
    tag = uuid.uuid4().hex[:6]
    disk = SmallDisk.of(f"t{tag}", "n1", root / "backing" / "n1")
    disk.mount(size_mib=4)
    m, proc = _start(root)  # LossyMount.of puts its backing at root/backing/n1: the tmpfs
    try:
        fd = os.open(m.mount / "journal", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            os.posix_fallocate(fd, 0, 64 << 10)
            assert disk.fill() > 3 << 20 and disk.free_bytes() == 0
            os.pwrite(fd, b"j" * 8192, 0)
            os.fdatasync(fd)  # into reserved space: no new blocks needed
            os.pwrite(fd, b"k" * 4096, 1 << 20)  # past the reservation: held in memory...
            with pytest.raises(OSError) as exc:
                os.fdatasync(fd)  # ...and the sync cannot place it
            assert exc.value.errno == errno.ENOSPC and m.stats()["dirty_bytes"] == 0
            disk.free()
            os.pwrite(fd, b"k" * 4096, 1 << 20)
            os.fdatasync(fd)
        finally:
            os.close(fd)
        assert (disk.path / "journal").read_bytes()[:8192] == b"j" * 8192
        assert (disk.path / "journal").stat().st_size == (1 << 20) + 4096
    finally:
        _stop(m, proc)
        assert unmount_disks(disk.name) == [str(disk.path)]
        shutil.rmtree(root, ignore_errors=True)
    assert not disk_mounts(disk.name)
