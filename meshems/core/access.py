"""Who may do what on the node API: the operator roles, each allowed what the ones before it
are (read: status, devices, plans, metrics; operate: setpoints, relay overrides, policy;
admin: membership, deployments, credentials), and scoped tokens (`mst_ID_SECRET`; the zone
keeps only their digests). Pure: the time comes in.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from meshems.core.zone_records import ApiToken

ROLES = ("read", "operate", "admin")


def allows(have: str, need: str) -> bool:
    """Whether role `have` may do what needs role `need` (both in ROLES)."""
    return ROLES.index(have) >= ROLES.index(need)


TOKEN_PREFIX = "mst_"


def token_parts(presented: str) -> tuple[str, str] | None:
    """(id, secret) of a scoped token `mst_ID_SECRET`, or None for anything else."""
    if not presented.startswith(TOKEN_PREFIX):
        return None
    token_id, sep, secret = presented[len(TOKEN_PREFIX) :].partition("_")
    return (token_id, secret) if sep and token_id and secret else None


def token_digest(secret: str) -> str:
    """What the zone keeps of a token: the SHA-256 of its secret part, hex."""
    import hashlib  # here, not at the top: every CLI command imports this module (hashlib: 7 ms)

    return hashlib.sha256(secret.encode()).hexdigest()


def find_token(tokens: Mapping[str, ApiToken], presented: str, now_s: float) -> ApiToken | None:
    """The live, unexpired token `presented` is, or None (time passed in: pure)."""
    parts = token_parts(presented)
    if parts is None:
        return None
    record = tokens.get(parts[0])
    if record is None or record.revoked or record.expires_s <= now_s:
        return None
    import hmac

    return record if hmac.compare_digest(record.digest, token_digest(parts[1])) else None
