"""Ed25519 for the cloud's signed commands (`core.downlink`): signing a record with the cloud's
key and the check the zone's leader passes to `downlink.verify`. The keys are the payload
release keys' kind (`payload_bundle.keygen`, `load_private_key`: PEM PKCS#8, mode 0600).
"""

from __future__ import annotations

from typing import Any

from meshems.adapters.payload_bundle import load_private_key as load_private_key
from meshems.core import downlink


def public_hex(key: Any) -> str:
    """A private key's public key as 64 hex digits (what `cloud.command_keys` pins)."""
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def sign(record: downlink.CommandRecord, key: Any) -> bytes:
    """The envelope to publish: the record's canonical bytes, the key and the signature."""
    canonical = downlink.canonical_bytes(record)
    return downlink.envelope(canonical, public_hex(key), key.sign(downlink.signed_message(canonical)))


def valid(key_hex: str, signature: bytes, message: bytes) -> bool:
    """True when `signature` is key `key_hex`'s Ed25519 signature of `message`."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex)).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True
