"""Logic payload bundles on disk: Ed25519 release keys, building a signed `.mpkg` (a tar of
manifest.json, manifest.sig and files/...) from a folder, and verifying one read as hostile
input, member by member, never extracted by tarfile.

Owns the files and the cryptography; the schema and every trust rule are the pure
`core.payload_manifest` and `core.payload_checks`; the store is `adapters.payload_store`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import stat
import tarfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from meshems.adapters.atomic_write import write_atomic
from meshems.adapters.config_file import load_yaml
from meshems.core.errors import (
    ConfigError,
    PayloadBundleError,
    PayloadHashError,
    PayloadManifestError,
)
from meshems.core.payload_checks import (
    MAX_SIG_BYTES,
    SIG_NAME,
    check_compatible,
    check_expiry,
    check_rollback,
    check_signers,
    parse_key_hex,
    parse_signatures,
    signatures_doc,
)
from meshems.core.payload_manifest import (
    MAX_FILES,
    MAX_MANIFEST_BYTES,
    MAX_TOTAL_BYTES,
    Manifest,
    Version,
    canonical_bytes,
    from_canonical,
    manifest_digest,
    parse_manifest,
    path_problem,
    signed_message,
)

MANIFEST_NAME, FILES_DIR = "manifest.json", "files/"
MANIFEST_SOURCE = "manifest.yaml"
#: a whole bundle: its files, the manifest, the signatures and the tar headers around them
MAX_BUNDLE_BYTES = MAX_TOTAL_BYTES + 4 * 1024 * 1024
CHUNK = 1024 * 1024
#: what `build` leaves out of a folder: Python's caches and hidden files
SKIPPED_DIRS = ("__pycache__",)

#: opens the file a verified member is written to (the store's), given its path in files/
Opener = Callable[[str], IO[bytes]]


# --- keys -------------------------------------------------------------------------------------


def public_path(private: Path) -> Path:
    """The public key beside a private one: `release.key` -> `release.pub`."""
    return private.with_suffix(".pub")


def keygen(out: Path, force: bool = False) -> tuple[Path, str]:
    """A new Ed25519 release key: `out` (PEM PKCS#8, mode 0600, written atomically) and the
    public key beside it (`<stem>.pub`: one line of 64 hex digits). Returns (.pub path, key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub = public_path(out)
    for p in (out, pub):
        if p.exists() and not force:
            raise ConfigError(f"{p} already exists; keep it (bundles signed with it need it) or pass --force")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, pem, 0o600)
    public = _public_hex(key)
    write_atomic(pub, (public + "\n").encode(), 0o644)
    return pub, public


def _public_hex(key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()


def load_private_key(path: Path) -> Any:
    """A release key from `keygen`; ConfigError when missing, readable by others, or not Ed25519."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        mode, data = stat.S_IMODE(path.stat().st_mode), path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no such key; create one with: meshems payload keygen --out {path}"
        ) from None
    if mode & 0o077:
        raise ConfigError(
            f"{path} has mode {mode:04o}; a release key must not be readable by group or others: "
            f"chmod 600 {path}"
        )
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{path}: not a PEM private key without a password ({exc})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an Ed25519 key (make one with meshems payload keygen)")
    return key


def trusted_key(value: str) -> str:
    """A trusted key as `--trusted-key` takes it: 64 hex digits, or a `.pub` file holding them."""
    try:
        return parse_key_hex(value)
    except ValueError:
        pass
    path = Path(value)
    try:
        text = path.read_text(encoding="ascii")[:1024]
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{value}: neither 64 hex digits nor a readable .pub file ({exc})") from None
    try:
        return parse_key_hex(text)
    except ValueError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _valid(key_hex: str, signature: bytes, message: bytes) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(key_hex)).verify(signature, message)
    except (InvalidSignature, ValueError):
        return False
    return True


def signature_file(canonical: bytes, keys: Iterable[Any]) -> bytes:
    """manifest.sig: one detached Ed25519 signature per distinct key over the signed message."""
    message = signed_message(canonical)
    return signatures_doc({_public_hex(key): key.sign(message) for key in keys})


# --- build ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Built:
    manifest: Manifest
    digest: str
    path: Path
    size: int


def _skipped(name: str) -> bool:
    return name.startswith(".") or name in SKIPPED_DIRS


def scan(folder: Path) -> list[tuple[str, Path]]:
    """(path in the bundle, file) of every file below `folder` but manifest.yaml, hidden files
    and __pycache__, sorted; a link or special file is refused, and so are the caps."""
    out: list[tuple[str, Path]] = []
    total = 0
    for root, dirs, names in os.walk(folder):
        base = Path(root)
        dirs[:] = sorted(d for d in dirs if not _skipped(d))
        for name in sorted(names) + dirs:
            p = base / name
            rel = p.relative_to(folder).as_posix()
            st = p.lstat()
            if stat.S_ISDIR(st.st_mode) or _skipped(name) or rel == MANIFEST_SOURCE:
                continue
            if not stat.S_ISREG(st.st_mode):
                what = "a symbolic link" if stat.S_ISLNK(st.st_mode) else "not a regular file"
                raise PayloadBundleError(f"{p} is {what}: a bundle holds regular files only")
            problem = path_problem(rel)
            if problem:
                raise PayloadManifestError(f"{p}: {problem}")
            out.append((rel, p))
            total += st.st_size
            if len(out) > MAX_FILES or total > MAX_TOTAL_BYTES:
                raise PayloadManifestError(
                    f"files: {folder} holds more than a bundle may ({MAX_FILES} files, "
                    f"{MAX_TOTAL_BYTES // 1024 // 1024} MiB)"
                )
    return sorted(out)


def _tar(members: Iterable[tuple[str, bytes]]) -> bytes:
    """A tar of regular files with fixed owner, mode and time: the same inputs, the same bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def build(folder: Path, keys: Iterable[Path], out: Path, now_s: float) -> Built:
    """Build and sign a bundle from `folder` (its manifest.yaml plus every other file, the
    files list computed here) and write it to `out` atomically."""
    source = folder / MANIFEST_SOURCE
    if not source.is_file():
        raise PayloadManifestError(f"{source}: no {MANIFEST_SOURCE} in {folder}", file=str(source))
    doc = load_yaml(source)
    if isinstance(doc, dict) and "files" in doc:
        raise PayloadManifestError(f"{source}: files: computed from the folder by the build; remove it")
    contents = {rel: p.read_bytes() for rel, p in scan(folder)}
    if not contents:
        raise PayloadManifestError(f"{source}: files: {folder} holds no file besides {MANIFEST_SOURCE}")
    files = [
        {"path": r, "sha256": hashlib.sha256(d).hexdigest(), "size": len(d)} for r, d in contents.items()
    ]
    try:
        manifest = parse_manifest({**doc, "files": files} if isinstance(doc, dict) else doc)
    except PayloadManifestError as exc:
        raise PayloadManifestError(f"{source}: {exc.message}", file=str(source), **exc.context) from None
    check_expiry(manifest, now_s)
    canonical = canonical_bytes(manifest)
    signatures = signature_file(canonical, [load_private_key(k) for k in keys])
    data = _tar([(MANIFEST_NAME, canonical), (SIG_NAME, signatures),
                 *((FILES_DIR + rel, body) for rel, body in contents.items())])  # fmt: skip
    write_atomic(out, data, 0o644)
    return Built(manifest, manifest_digest(canonical), out, len(data))


# --- verify -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verified:
    manifest: Manifest
    canonical: bytes  # manifest.json as signed
    signatures: bytes  # manifest.sig as read
    digest: str  # SHA-256 of the canonical manifest: the bundle's identity
    signers: tuple[str, ...]  # the trusted keys whose signatures matched


class _Capped:
    """A reader that refuses to be read past `cap` bytes in all (a bundle's upper bound)."""

    def __init__(self, raw: IO[bytes], cap: int, name: str) -> None:
        self.raw, self.left, self.name = raw, cap, name

    def read(self, size: int = -1) -> bytes:
        data = self.raw.read(self.left + 1 if size < 0 else min(size, self.left + 1))
        self.left -= len(data)
        if self.left < 0:
            raise PayloadBundleError(
                f"{self.name}: more than {MAX_BUNDLE_BYTES} bytes, the most a bundle has"
            )
        return data


def _type_problem(m: tarfile.TarInfo) -> str:
    if m.issym():
        return f"a symbolic link to {m.linkname!r}"
    if m.islnk():
        return f"a hard link to {m.linkname!r}"
    if m.isdir():
        return "a folder"
    if m.ischr() or m.isblk() or m.isfifo():
        return "a device or FIFO"
    return "" if m.type in (tarfile.REGTYPE, tarfile.AREGTYPE) else f"of tar type {m.type!r}"


def _member(tar: tarfile.TarFile, name: str, want: str | None = None) -> tarfile.TarInfo | None:
    """The next member, a regular file with a safe name (`want`: that name exactly)."""
    m = tar.next()
    if m is None:
        if want:
            raise PayloadBundleError(f"{name}: no {want} (a bundle starts with {MANIFEST_NAME}, {SIG_NAME})")
        return None
    kind, problem = _type_problem(m), path_problem(m.name)
    if kind:
        raise PayloadBundleError(f"{name}: member {m.name!r} is {kind}: a bundle holds regular files only")
    if problem:
        raise PayloadBundleError(f"{name}: member {m.name!r}: {problem}")
    if want and m.name != want:
        raise PayloadBundleError(f"{name}: member {m.name!r} where {want} must be (build it with meshems)")
    if not want and not m.name.startswith(FILES_DIR):
        raise PayloadBundleError(f"{name}: member {m.name!r} is outside {FILES_DIR}")
    return m


def _named(tar: tarfile.TarFile, name: str, want: str, cap: int) -> bytes:
    """The content of the next member, which must be `want`, at most `cap` bytes."""
    m = _member(tar, name, want)
    assert m is not None  # _member refuses a missing `want`
    if m.size > cap:
        raise PayloadBundleError(f"{name}: {m.name} is {m.size} bytes, at most {cap}")
    src = tar.extractfile(m)
    assert src is not None  # a regular file
    return src.read(m.size)


def _hash(tar: tarfile.TarFile, m: tarfile.TarInfo, out: IO[bytes] | None) -> str:
    src, h, left = tar.extractfile(m), hashlib.sha256(), m.size
    assert src is not None
    while left:
        chunk = src.read(min(CHUNK, left))
        if not chunk:
            raise tarfile.ReadError(f"{m.name} is cut short")
        h.update(chunk)
        if out is not None:
            out.write(chunk)
        left -= len(chunk)
    return h.hexdigest()


@dataclass(frozen=True, slots=True)
class Checks:
    """What a bundle is checked against: at least `threshold` distinct `trusted` keys (hex),
    the time `now_s`, the running meshems version (None: not checked), the `active` version
    of the payload (None: none) and, for an explicit `rollback`, the versions `installed`."""

    trusted: frozenset[str]
    threshold: int
    now_s: float
    meshems_version: str | None = None
    active: Version | str | None = None
    installed: tuple[Version | str, ...] = ()
    rollback: bool = False


def verify(path: Path, checks: Checks, opener: Opener | None = None) -> Verified:
    """Check a bundle, in this order: the archive's shape, the signatures, the manifest, expiry,
    the meshems version, rollback, then every file's size and SHA-256 (streamed to `opener`
    when given). Raises the PayloadError of the first problem."""
    name = str(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise PayloadBundleError(f"{name}: cannot read it ({exc.strerror})") from None
    if size > MAX_BUNDLE_BYTES:
        raise PayloadBundleError(f"{name}: {size} bytes, more than a bundle may be ({MAX_BUNDLE_BYTES})")
    try:
        with (
            path.open("rb") as raw,
            tarfile.open(fileobj=_Capped(raw, MAX_BUNDLE_BYTES, name), mode="r|") as tar,
        ):
            return _verify_tar(tar, name, checks, opener)
    except (tarfile.TarError, EOFError, ValueError, UnicodeError) as exc:
        raise PayloadBundleError(f"{name}: not a readable bundle (an uncompressed tar): {exc}") from None


def _verify_tar(tar: tarfile.TarFile, name: str, checks: Checks, opener: Opener | None) -> Verified:
    canonical = _named(tar, name, MANIFEST_NAME, MAX_MANIFEST_BYTES)
    sig_bytes = _named(tar, name, SIG_NAME, MAX_SIG_BYTES)
    message = signed_message(canonical)
    checked = [(key, _valid(key, sig, message)) for key, sig in parse_signatures(sig_bytes)]
    signers = check_signers(checked, checks.trusted, checks.threshold, name)
    manifest = from_canonical(canonical)
    check_expiry(manifest, checks.now_s)
    if checks.meshems_version is not None:
        check_compatible(manifest, checks.meshems_version)
    check_rollback(manifest, checks.active, checks.installed, checks.rollback)
    expected = {f.path: f for f in manifest.files}
    seen: set[str] = set()
    total = 0
    while (m := _member(tar, name)) is not None:
        rel = m.name.removeprefix(FILES_DIR)
        f = expected.get(rel)
        if f is None or rel in seen:
            why = "appears twice" if f else "is not in the manifest"
            raise PayloadBundleError(f"{name}: member {m.name!r} {why}")
        seen.add(rel)
        if m.size > MAX_TOTAL_BYTES - total:
            raise PayloadBundleError(f"{name}: member {m.name!r} ({m.size} bytes) is past the files' cap")
        total += m.size
        with opener(rel) if opener else contextlib.nullcontext() as out:
            digest = _hash(tar, m, out)
        if (digest, m.size) != (f.sha256, f.size):
            raise PayloadHashError(
                f"{name}: {rel}: sha256 {digest} ({m.size} bytes), the manifest says {f.sha256} "
                f"({f.size} bytes): the file was altered after signing",
                file=rel, expected=f.sha256, actual=digest,
            )  # fmt: skip
    missing = sorted(set(expected) - seen)
    if missing:
        raise PayloadBundleError(f"{name}: {', '.join(missing)} named in the manifest but not in the bundle")
    return Verified(manifest, canonical, sig_bytes, manifest_digest(canonical), signers)
