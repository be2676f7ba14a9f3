"""Fetching a payload bundle from peers into the store: chunk by chunk into a partial file
beside the store (a download cut short resumes where it stopped, from the same peer or the
next), then verified and moved in by `adapters.payload_store`. A refused bundle's bytes are
dropped, so the next try starts afresh. The transport (`GetChunk`) comes in: HTTPS is the
node's (`node.payload_duty`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from meshems.adapters.payload_bundle import Checks
from meshems.adapters.payload_store import Installed, PayloadStore
from meshems.core.errors import MeshemsError, PayloadError, UnreachableError

#: the most one request asks for (the node API serves at most this)
CHUNK_BYTES = 1024 * 1024
#: (peer node id, manifest digest, offset, length) -> the bytes there (fewer at the end);
#: raises OSError or MeshemsError when the peer does not have them or does not answer
GetChunk = Callable[[str, str, int, int], bytes]


def fetch(
    store: PayloadStore,
    digest: str,
    size: int,
    sources: Sequence[str],
    get_chunk: GetChunk,
    checks: Checks,
    chunk_bytes: int = CHUNK_BYTES,
) -> tuple[Installed, int]:
    """Download the `size` bytes of bundle `digest` from the first of `sources` that serves them
    (resuming a partial download), verify and store it. Returns (what was stored, bytes moved
    now). UnreachableError when no source served it; the PayloadError of a refused bundle."""
    part = store.incoming(digest)
    have = part.stat().st_size if part.exists() else 0
    if have > size:
        part.unlink()
        have = 0
    moved, problems = 0, []
    with part.open("ab") as out:
        for source in sources:
            try:
                while have < size:
                    data = get_chunk(source, digest, have, min(chunk_bytes, size - have))
                    if not data or len(data) > size - have:
                        raise UnreachableError(f"{source} sent {len(data)} bytes at offset {have} of {size}")
                    out.write(data)
                    out.flush()
                    have += len(data)
                    moved += len(data)
                break
            except (OSError, MeshemsError) as exc:
                problems.append(f"{source}: {exc}")
    if have < size:
        where = "; ".join(problems) or "no peer to ask"
        raise UnreachableError(
            f"bundle {digest[:16]}: {have} of {size} bytes fetched ({where})", digest=digest
        )
    try:
        installed = store.install(part, checks)
    except PayloadError:
        part.unlink(missing_ok=True)  # bad bytes: start afresh next time
        raise
    part.unlink(missing_ok=True)
    if installed.digest != digest:
        raise PayloadError(f"the bundle fetched as {digest[:16]} is {installed.digest[:16]}", digest=digest)
    return installed, moved
