"""The trust checks of a logic payload, apart from its schema: trusted keys as config writes
them, who signed (a threshold of distinct trusted keys), expiry, the meshems version it
needs, and rollback (a version only rises).

Pure: no I/O, no clock (`now_s` comes in); Ed25519 itself is `adapters.payload_bundle`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence

from meshems.core.errors import (
    PayloadExpiredError,
    PayloadIncompatibleError,
    PayloadRollbackError,
    PayloadSignatureError,
    PayloadUntrustedKeyError,
)
from meshems.core.payload_manifest import Manifest, Version, iso_utc, newer, parse_version

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
SIG_NAME = "manifest.sig"
MAX_SIGNATURES = 16
MAX_SIG_BYTES = 64 * 1024


def parse_key_hex(text: object) -> str:
    """A raw Ed25519 public key as 64 hex digits (a `.pub` file's line), lower-cased;
    ValueError saying what it must look like."""
    value = text.strip().lower() if isinstance(text, str) else ""
    if not _HEX64.match(value):
        shown = repr(text) if len(repr(text)) <= 40 else repr(text)[:37] + "..."
        raise ValueError(
            f"{shown} is not an Ed25519 public key: 64 hex digits, the line in the .pub file "
            "`meshems payload keygen` writes"
        )
    return value


def key_id(key_hex: str) -> str:
    """A key as messages name it: its first 16 hex digits."""
    return key_hex[:16]


def signatures_doc(signatures: dict[str, bytes]) -> bytes:
    """manifest.sig: `{"format": 1, "signatures": [{"key": HEX, "sig": HEX}, ...]}`, by key."""
    entries = [{"key": k, "sig": s.hex()} for k, s in sorted(signatures.items())]
    return json.dumps({"format": 1, "signatures": entries}, sort_keys=True, separators=(",", ":")).encode()


def parse_signatures(data: bytes) -> list[tuple[str, bytes]]:
    """(public key hex, signature) per entry of manifest.sig; PayloadSignatureError when malformed."""

    def bad(problem: str) -> PayloadSignatureError:
        return PayloadSignatureError(f"{SIG_NAME}: {problem}")

    try:
        doc = json.loads(data)
    except ValueError as exc:
        raise bad(f"not JSON ({exc})") from None
    sigs = doc.get("signatures") if isinstance(doc, dict) and doc.get("format") == 1 else None
    if not isinstance(sigs, list) or len(sigs) > MAX_SIGNATURES:
        raise bad(f'must be {{"format": 1, "signatures": [...]}} with at most {MAX_SIGNATURES} signatures')
    out = []
    for i, entry in enumerate(sigs):
        try:
            key, sig = parse_key_hex(entry["key"]), bytes.fromhex(entry["sig"])
        except (TypeError, KeyError, ValueError) as exc:
            raise bad(f"signatures[{i}]: needs key (64 hex digits) and sig (128 hex digits): {exc}") from None
        if len(sig) != 64:
            raise bad(f"signatures[{i}].sig: {len(sig)} bytes, an Ed25519 signature has 64")
        out.append((key, sig))
    return out


def check_signers(
    checked: Sequence[tuple[str, bool]], trusted: Iterable[str], threshold: int, name: str
) -> tuple[str, ...]:
    """The distinct trusted keys whose signature matched, if at least `threshold` did.
    `checked`: (public key hex, signature valid) per signature in the bundle. A trusted
    key's bad signature refuses the bundle (it was altered), whatever the others say."""
    trusted = frozenset(trusted)
    if not trusted:
        raise PayloadUntrustedKeyError(
            f"{name}: no trusted keys to check against (payloads.trusted_keys, or --trusted-key)"
        )
    if not checked:
        raise PayloadSignatureError(f"{name}: manifest.sig holds no signature")
    for key, ok in checked:
        if key in trusted and not ok:
            raise PayloadSignatureError(
                f"{name}: the signature by key {key_id(key)} does not match the manifest: the manifest "
                "or the signature was altered",
                key=key,
            )
    good = sorted({key for key, ok in checked if ok and key in trusted})
    if len(good) >= threshold:
        return tuple(good)
    strangers = sorted({key for key, _ in checked if key not in trusted})
    have = f"{len(good)} of the {threshold} trusted signatures needed"
    if strangers:
        raise PayloadUntrustedKeyError(
            f"{name}: signed by key {', '.join(map(key_id, strangers))}, which is not among the "
            f"{len(trusted)} trusted keys (payloads.trusted_keys, --trusted-key); {have}",
            keys=strangers,
        )
    raise PayloadSignatureError(f"{name}: {have} (payloads.threshold {threshold})", signers=good)


def label(manifest: Manifest) -> str:
    return f"{manifest.name} {manifest.version}"


def check_expiry(manifest: Manifest, now_s: float) -> None:
    if now_s >= manifest.expires_at_s:
        raise PayloadExpiredError(
            f"{label(manifest)} expired at {manifest.expires_at} (now {iso_utc(int(now_s))}); build and "
            "sign it again with a later expires_at",
            expires_at=manifest.expires_at,
        )


def check_compatible(manifest: Manifest, meshems_version: str) -> None:
    if parse_version(meshems_version, "meshems version") < manifest.min_meshems_version:
        raise PayloadIncompatibleError(
            f"{label(manifest)} needs meshems {manifest.min_meshems_version} or later "
            f"(min_meshems_version); this is {meshems_version}"
        )


def check_rollback(
    manifest: Manifest, active: Version | str | None, installed: Iterable[Version | str] = (),
    rollback: bool = False,
) -> None:  # fmt: skip
    """A version only rises: refuse one not newer than the `active` one, unless `rollback` is
    asked for explicitly and it is one of the versions `installed` before."""
    if active is None or newer(manifest.version, active):
        return
    if rollback and manifest.version in {parse_version(v) for v in installed}:
        return
    how = ("it was never installed here" if rollback
           else "a version only rises; an explicit rollback may return to one installed before")  # fmt: skip
    raise PayloadRollbackError(
        f"{label(manifest)} is not newer than the active {manifest.name} {active}: {how}",
        active=str(active),
    )
