"""Fetching a bundle from peers into the store: chunked, resumed after a cut (from the next
peer), verified before it is stored, and a refused download leaves nothing to resume."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from meshems.adapters import payload_bundle as pb
from meshems.adapters.payload_fetch import fetch
from meshems.adapters.payload_store import PayloadStore
from meshems.core.errors import PayloadHashError, UnreachableError

EXAMPLE = Path(__file__).resolve().parents[2] / "cluster-configs" / "payloads" / "peak-guard"


@pytest.fixture
def built(tmp_path: Path) -> tuple[pb.Built, pb.Checks]:
    _, key = pb.keygen(tmp_path / "release.key")
    b = pb.build(EXAMPLE, [tmp_path / "release.key"], tmp_path / "pg.mpkg", time.time())
    return b, pb.Checks(frozenset({key}), 1, time.time())


def test_a_cut_download_resumes_from_the_next_peer_and_is_stored(tmp_path: Path, built: tuple) -> None:
    b, checks = built
    data, asked = b.path.read_bytes(), []

    def get(peer: str, digest: str, offset: int, length: int) -> bytes:
        asked.append((peer, offset))
        if peer == "n1" and offset >= 2048:
            raise OSError("connection reset")
        return data[offset : offset + length]

    store = PayloadStore(tmp_path / "data")
    got, moved = fetch(store, b.digest, len(data), ["n1", "n2"], get, checks, chunk_bytes=1024)
    assert got.digest == b.digest and moved == len(data)
    assert store.bundle(b.digest).read_bytes() == data  # type: ignore[union-attr]
    assert ("n2", 2048) in asked and ("n2", 0) not in asked  # resumed, not restarted
    assert not store.incoming(b.digest).exists() and store.digests() == {b.digest}


def test_no_peer_keeps_the_part_and_bad_bytes_are_dropped(tmp_path: Path, built: tuple) -> None:
    b, checks = built
    data = b.path.read_bytes()
    store = PayloadStore(tmp_path / "data")

    def half(peer: str, digest: str, offset: int, length: int) -> bytes:
        if offset >= 4096:
            raise OSError("gone")
        return data[offset : offset + length]

    with pytest.raises(UnreachableError, match="4096 of"):
        fetch(store, b.digest, len(data), ["n1"], half, checks, chunk_bytes=1024)
    assert store.incoming(b.digest).stat().st_size == 4096  # kept to resume
    store = PayloadStore(tmp_path / "other")
    bad = data.replace(b"def ", b"def_", 1)

    def tampered(peer: str, digest: str, offset: int, length: int) -> bytes:
        return bad[offset : offset + length]

    with pytest.raises(PayloadHashError):
        fetch(store, b.digest, len(data), ["n2"], tampered, checks)
    assert not store.incoming(b.digest).exists() and store.digests() == frozenset()
