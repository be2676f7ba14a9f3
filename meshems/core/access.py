"""Who may do what on the node API: the operator roles, each allowed what the ones before it
are (read: status, devices, plans, metrics; operate: setpoints, relay overrides, policy;
admin: membership, deployments, credentials). Pure data."""

from __future__ import annotations

ROLES = ("read", "operate", "admin")


def allows(have: str, need: str) -> bool:
    """Whether role `have` may do what needs role `need` (both in ROLES)."""
    return ROLES.index(have) >= ROLES.index(need)
