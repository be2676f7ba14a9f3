"""Device profiles from `profiles` payloads: which stored bundles are in effect on this node
(DATA/payloads/profiles.json, written by `node.payload_stage` when the zone's deployments
change) and the profile a device names as `profile: payload:NAME` (NAME.yaml in one of them),
read when the node starts. Owns that file; the profile schema is `adapters.profiles`'.
"""

from __future__ import annotations

import json
from pathlib import Path

from meshems.adapters.atomic_write import write_atomic
from meshems.adapters.profiles import load_profile
from meshems.core.errors import ConfigError
from meshems.core.register_map import Profile

PREFIX = "payload:"
POINTER = "profiles.json"


def pointer_path(data_dir: Path) -> Path:
    return Path(data_dir) / "payloads" / POINTER


def read_held(data_dir: Path) -> dict[str, dict[str, str]]:
    """Payload name -> {id, version, digest} of the profiles payloads in effect here ({}: none)."""
    try:
        doc = json.loads(pointer_path(data_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    held = doc.get("profiles") if isinstance(doc, dict) else None
    return held if isinstance(held, dict) else {}


def write_held(data_dir: Path, held: dict[str, dict[str, str]]) -> bool:
    """Record the profiles payloads in effect here; whether that changed the file."""
    exists = pointer_path(data_dir).exists()
    if (read_held(data_dir) == held and exists) or (not held and not exists):
        return False
    pointer_path(data_dir).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    write_atomic(pointer_path(data_dir), json.dumps({"profiles": held}, sort_keys=True).encode())
    return True


def load_device_profile(ref: str, base_dir: Path | None, data_dir: Path) -> Profile:
    """`load_profile(ref)`, or for `payload:NAME` the file NAME.yaml (or .yml, at any depth) of
    a profiles payload in effect on this node; ConfigError naming what is held."""
    if not ref.startswith(PREFIX):
        return load_profile(ref, base_dir)
    name = ref[len(PREFIX) :]
    held = read_held(data_dir)
    for _, rec in sorted(held.items()):
        files = Path(data_dir) / "payloads" / rec.get("digest", "-") / "files"
        for suffix in (".yaml", ".yml"):
            for path in sorted(files.rglob(f"{name}{suffix}")) if files.is_dir() else ():
                return load_profile(str(path))
    have = ", ".join(f"{p} {r.get('version')}" for p, r in sorted(held.items())) or "none"
    raise ConfigError(f"profile {ref!r}: no profiles payload in effect on this node holds {name}.yaml "
                      f"(held: {have}; deploy one with meshems deploy)", key="profile")  # fmt: skip
