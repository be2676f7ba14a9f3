"""Identifier rules shared by the config, the replicated commands and the policy.

Node, device and bus ids are lower case names; a relay-switched load is
`RELAY_DEVICE:CHANNEL`. One definition, so the config file, the API and every replica
accept exactly the same ids. Pure: no I/O.
"""

from __future__ import annotations

import re

#: a node, device, bus, cluster or zone id (as the config's `NAME` pattern)
NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,62}$"
NAME_RE = re.compile(NAME_PATTERN)
#: highest relay channel a load id may name
MAX_RELAY_CHANNEL = 256
LOAD_RE = re.compile(r"^([a-z0-9][a-z0-9_.-]{0,62}):([1-9][0-9]{0,2})$")


def is_name(value: object) -> bool:
    return isinstance(value, str) and NAME_RE.fullmatch(value) is not None


def parse_load(value: object) -> tuple[str, int] | None:
    """(relay device, channel) of a load id `RELAY_DEVICE:CHANNEL`, or None if malformed."""
    if not isinstance(value, str):
        return None
    m = LOAD_RE.fullmatch(value)
    if m is None or int(m.group(2)) > MAX_RELAY_CHANNEL:
        return None
    return m.group(1), int(m.group(2))
