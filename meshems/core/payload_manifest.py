"""Logic payload manifests: the schema validated into a frozen `Manifest`, its canonical bytes
(what a signature covers) and versions; the trust checks are `core.payload_checks`.

Pure: no I/O, no clock; the archive, keys and Ed25519 are `adapters.payload_bundle`. Every
refusal is a PayloadManifestError (E_PAYLOAD_MANIFEST) whose message names the key.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from meshems.core.errors import PayloadManifestError
from meshems.core.ids import NAME_RE

KINDS = ("controller", "policy", "forecast-model", "profiles")
FORMAT = 1
MAX_FILES = 256
MAX_TOTAL_BYTES = 64 * 1024 * 1024
MAX_PATH_CHARS = 200
#: the manifest.json a bundle may carry (256 files of long names stay well under it)
MAX_MANIFEST_BYTES = 256 * 1024
#: what a signature covers: this prefix, then the canonical manifest (a manifest signature can
#: never be mistaken for a signature of anything else made with the same key)
SIGNED_PREFIX = b"meshems-payload-manifest-v1\n"
#: unix seconds accepted for expires_at: 2001-09-09 .. 2100-01-01
_UNIX_MIN_S, _UNIX_MAX_S = 1_000_000_000, 4_102_444_800
_VERSION = re.compile(r"^(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})\.(0|[1-9]\d{0,5})$")
_PATH = re.compile(r"^[A-Za-z0-9_.+-]+(/[A-Za-z0-9_.+-]+)*$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_KEYS = frozenset({
    "format", "name", "version", "kind", "description", "entry_point", "files", "limits", "cycle_budget_ms",
    "health", "expires_at", "min_meshems_version", "deadline_s",
})  # fmt: skip
_REQUIRED = ("name", "version", "kind", "expires_at", "files")


@dataclass(frozen=True, order=True, slots=True)
class Version:
    """MAJOR.MINOR.PATCH, compared as numbers (1.10.0 is newer than 1.9.0)."""

    major: int
    minor: int
    patch: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}.{self.patch}"


def parse_version(value: object, key: str = "version") -> Version:
    """A version from `1.2.3` (digits only, no leading zeros); PayloadManifestError naming `key`."""
    if isinstance(value, Version):
        return value
    m = _VERSION.match(value) if isinstance(value, str) else None
    if m is None:
        hint = " (quote it in YAML: '1.0.0')" if isinstance(value, int | float) else ""
        raise PayloadManifestError(f"{key}: {value!r} is not a version MAJOR.MINOR.PATCH{hint}", key=key)
    return Version(*(int(g) for g in m.groups()))


def newer(a: Version | str, b: Version | str) -> bool:
    """Whether `a` is a later version than `b` (the rollback check: a version only rises)."""
    return parse_version(a) > parse_version(b)


@dataclass(frozen=True, slots=True)
class PayloadFile:
    path: str  # relative, '/'-separated, in the bundle as files/PATH
    sha256: str  # lower-case hex
    size: int  # bytes


@dataclass(frozen=True, slots=True)
class Limits:
    """What the sandbox grants a controller: memory and a share of one CPU."""

    memory_mb: int = 128
    cpu_pct: int = 50


@dataclass(frozen=True, slots=True)
class Health:
    """When a new version counts as healthy: cycles in shadow, then watched while active, with
    at most `max_timeouts` cycles past the budget in each phase."""

    shadow_cycles: int = 30
    watch_cycles: int = 60
    max_timeouts: int = 0


@dataclass(frozen=True, slots=True)
class Manifest:
    name: str
    version: Version
    kind: str
    files: tuple[PayloadFile, ...]
    expires_at_s: int
    entry_point: str | None = None
    description: str = ""
    limits: Limits = field(default_factory=Limits)
    cycle_budget_ms: int = 100
    health: Health = field(default_factory=Health)
    min_meshems_version: Version = Version(0, 0, 0)
    deadline_s: int = 3600
    format: int = FORMAT

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    @property
    def expires_at(self) -> str:
        return iso_utc(self.expires_at_s)

    def file(self, path: str) -> PayloadFile | None:
        return next((f for f in self.files if f.path == path), None)

    def as_doc(self) -> dict[str, Any]:
        """The manifest as JSON types, every default written out (the signature covers the
        values in force, not what a later meshems might default to)."""
        return {
            "format": self.format,
            "name": self.name,
            "version": str(self.version),
            "kind": self.kind,
            "description": self.description,
            "entry_point": self.entry_point,
            "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in self.files],
            "limits": asdict(self.limits),
            "cycle_budget_ms": self.cycle_budget_ms,
            "health": asdict(self.health),
            "expires_at": self.expires_at,
            "min_meshems_version": str(self.min_meshems_version),
            "deadline_s": self.deadline_s,
        }


def canonical_bytes(manifest: Manifest) -> bytes:
    """The bytes a signature covers and `manifest.json` holds: JSON with sorted keys, no
    whitespace, ASCII only. JSON rather than msgpack: its canonical form is a few rules any
    language reproduces (msgpack leaves integer widths and str/bin to the encoder), and a
    manifest stays readable (`tar -xOf X.mpkg manifest.json`). It holds no floats."""
    doc = manifest.as_doc()
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


def manifest_digest(canonical: bytes) -> str:
    """The bundle's identity: SHA-256 of its canonical manifest (the store's folder name)."""
    return hashlib.sha256(canonical).hexdigest()


def signed_message(canonical: bytes) -> bytes:
    return SIGNED_PREFIX + canonical


def iso_utc(unix_s: int) -> str:
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _refuse(key: str, problem: str) -> PayloadManifestError:
    return PayloadManifestError(f"{key}: {problem}", key=key)


def _int(doc: dict[str, Any], key: str, lo: int, hi: int, default: int, where: str = "") -> int:
    value = doc.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise _refuse(where + key, f"must be a whole number, got {value!r}")
    if not lo <= value <= hi:
        raise _refuse(where + key, f"{value} is outside {lo}..{hi}")
    return value


#: the bounds of the numbers in a section: key -> (lowest, highest, default)
_SECTIONS = {
    "limits": {"memory_mb": (16, 4096, Limits().memory_mb), "cpu_pct": (1, 100, Limits().cpu_pct)},
    "health": {"shadow_cycles": (1, 100_000, Health().shadow_cycles),
               "watch_cycles": (0, 100_000, Health().watch_cycles),
               "max_timeouts": (0, 1000, Health().max_timeouts)},
}  # fmt: skip
#: the bounds of a rollout's cycle counts, as a deployment may override them: key -> (lo, hi)
CYCLE_BOUNDS = {k: _SECTIONS["health"][k][:2] for k in ("shadow_cycles", "watch_cycles")}


def _numbers(doc: dict[str, Any], key: str) -> dict[str, int]:
    """A section's whole numbers, each within its bounds, defaults filled in."""
    bounds = _SECTIONS[key]
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise _refuse(key, f"must be a mapping of {', '.join(bounds)}")
    for k in value:
        if k not in bounds:
            raise _refuse(f"{key}.{k}", f"unknown key (known: {', '.join(bounds)})")
    return {k: _int(value, k, lo, hi, default, f"{key}.") for k, (lo, hi, default) in bounds.items()}


def expires_s(value: object, key: str = "expires_at") -> int:
    """`expires_at` as unix seconds: ISO 8601 in UTC (`2027-01-01T00:00:00Z`, also as YAML
    decodes it) or whole unix seconds."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            raise _refuse(key, f"{value!r} is not an ISO 8601 time such as 2027-01-01T00:00:00Z") from None
    if isinstance(value, datetime):
        offset = value.utcoffset()
        if offset is None or offset.total_seconds() != 0:
            raise _refuse(key, f"{value.isoformat()} must be in UTC: end it with Z")
        value = int(value.timestamp())
    elif isinstance(value, date):
        raise _refuse(key, f"{value} needs a time in UTC, e.g. {value}T00:00:00Z")
    if isinstance(value, bool) or not isinstance(value, int):
        raise _refuse(key, f"must be an ISO 8601 UTC time or unix seconds, got {value!r}")
    if not _UNIX_MIN_S <= value <= _UNIX_MAX_S:
        raise _refuse(key, f"{value} is outside {iso_utc(_UNIX_MIN_S)} .. {iso_utc(_UNIX_MAX_S)}")
    return value


def path_problem(path: object) -> str:
    """Why `path` may not name a file in a bundle ('' when it may): relative, '/'-separated,
    letters, digits and `_.+-` only, no `.` or `..` parts, at most MAX_PATH_CHARS."""
    if not isinstance(path, str) or not path:
        return f"must be a relative path, got {path!r}"
    if path.startswith("/"):
        return f"{path!r} is absolute"
    if len(path) > MAX_PATH_CHARS:
        return f"{path[:40]!r}... is longer than {MAX_PATH_CHARS} characters"
    if not _PATH.match(path):
        return f"{path!r}: only letters, digits, '_', '.', '+', '-' and '/' between names"
    if any(part in (".", "..") for part in path.split("/")):
        return f"{path!r} has a '.' or '..' part"
    return ""


def _files(value: object) -> tuple[PayloadFile, ...]:
    if not isinstance(value, list) or not value:
        raise _refuse("files", "must be a non-empty list of {path, sha256, size}")
    if len(value) > MAX_FILES:
        raise _refuse("files", f"{len(value)} files, at most {MAX_FILES}")
    out: list[PayloadFile] = []
    seen: dict[str, str] = {}
    for i, item in enumerate(value):
        key = f"files[{i}]"
        if not isinstance(item, dict) or set(item) != {"path", "sha256", "size"}:
            raise _refuse(key, "must be a mapping of exactly path, sha256 and size")
        problem = path_problem(item["path"])
        if problem:
            raise _refuse(f"{key}.path", problem)
        path = item["path"]
        if path.lower() in seen:
            raise _refuse(f"{key}.path", f"{path!r} is listed twice (or differs only by case)")
        seen[path.lower()] = path
        digest = item["sha256"]
        if not isinstance(digest, str) or not _HEX64.match(digest):
            raise _refuse(f"{key}.sha256", f"must be 64 lower-case hex digits, got {digest!r}")
        out.append(PayloadFile(path, digest, _int(item, "size", 0, MAX_TOTAL_BYTES, 0, f"{key}.")))
    for i, f in enumerate(out):
        parts = f.path.lower().split("/")
        for n in range(1, len(parts)):
            above = seen.get("/".join(parts[:n]))
            if above is not None:
                raise _refuse(f"files[{i}].path", f"{f.path!r} is below {above!r}, which is a file")
    total = sum(f.size for f in out)
    if total > MAX_TOTAL_BYTES:
        raise _refuse("files", f"{total} bytes in all, at most {MAX_TOTAL_BYTES} (64 MiB)")
    return tuple(out)


def parse_manifest(doc: object) -> Manifest:
    """Validate a decoded manifest (YAML or JSON) into a Manifest; PayloadManifestError names
    the first bad key."""
    if not isinstance(doc, dict):
        raise PayloadManifestError("the manifest must be a mapping", key="(top level)")
    for k in doc:
        if k not in _KEYS:
            raise _refuse(str(k), f"unknown key (misspelt?); known: {', '.join(sorted(_KEYS))}")
    for k in _REQUIRED:
        if k not in doc:
            raise _refuse(k, "missing (required)")
    if doc.get("format", FORMAT) != FORMAT or isinstance(doc.get("format"), bool):
        raise _refuse("format", f"{doc['format']!r} is not a format this meshems reads ({FORMAT})")
    name = doc["name"]
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _refuse("name", f"{name!r}: 1-63 lower case letters, digits, '.', '_' or '-'")
    kind = doc["kind"]
    if kind not in KINDS:
        raise _refuse("kind", f"{kind!r} is none of {', '.join(KINDS)}")
    description = doc.get("description", "")
    if not isinstance(description, str) or len(description) > 500:
        raise _refuse("description", "must be text of at most 500 characters")
    files = _files(doc["files"])
    entry = doc.get("entry_point")
    if kind == "controller" and entry is None:
        raise _refuse("entry_point", "missing: a controller names the file that holds its code")
    if entry is not None:
        if not isinstance(entry, str) or entry not in {f.path for f in files}:
            names = ", ".join(f.path for f in files)
            raise _refuse("entry_point", f"{entry!r} is none of the files ({names})")
        if kind == "controller" and not entry.endswith(".py"):
            raise _refuse("entry_point", f"{entry!r}: a controller's entry point is a .py file")
    return Manifest(
        name=name,
        version=parse_version(doc["version"]),
        kind=kind,
        files=files,
        expires_at_s=expires_s(doc["expires_at"]),
        entry_point=entry,
        description=description,
        limits=Limits(**_numbers(doc, "limits")),
        cycle_budget_ms=_int(doc, "cycle_budget_ms", 1, 10_000, 100),
        health=Health(**_numbers(doc, "health")),
        min_meshems_version=parse_version(doc.get("min_meshems_version", "0.0.0"), "min_meshems_version"),
        deadline_s=_int(doc, "deadline_s", 60, 7 * 86400, 3600),
    )


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _refuse(k, "appears twice in manifest.json")
        out[k] = v
    return out


def from_canonical(data: bytes) -> Manifest:
    """The manifest of a bundle from its `manifest.json`, which must be canonical bytes (one
    manifest, one digest)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise PayloadManifestError(f"manifest.json: {len(data)} bytes, at most {MAX_MANIFEST_BYTES}")
    try:
        doc = json.loads(data.decode("ascii"), object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except ValueError as exc:  # also UnicodeDecodeError
        raise PayloadManifestError(f"manifest.json is not ASCII JSON: {exc}") from None
    manifest = parse_manifest(doc)
    if canonical_bytes(manifest) != data:
        raise PayloadManifestError(
            "manifest.json is not in canonical form (sorted keys, no whitespace, every key written "
            "out): build bundles with meshems payload build"
        )
    return manifest


def _no_constant(name: str) -> None:
    raise _refuse("(value)", f"{name} is not a number a manifest may hold")
