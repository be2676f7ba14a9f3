"""A node's content-addressed store of verified payload bundles:
DATA/payloads/<SHA-256 of the canonical manifest>/ holding manifest.json, manifest.sig,
files/... and the bundle itself (bundle.mpkg, what peers fetch), each written into a
temporary folder while it is verified and moved in place by one rename once every check
passed. Owns that folder; the checks are `adapters.payload_bundle`.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from meshems.adapters.payload_bundle import MANIFEST_NAME, Checks, verify
from meshems.core.errors import PayloadError
from meshems.core.payload_checks import SIG_NAME
from meshems.core.payload_manifest import Manifest, Version, from_canonical, manifest_digest

_DIGEST = re.compile(r"^[0-9a-f]{64}$")
BUNDLE_NAME = "bundle.mpkg"


@dataclass(frozen=True, slots=True)
class Installed:
    digest: str
    manifest: Manifest
    path: Path  # its folder: files are path / "files" / PATH

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> Version:
        return self.manifest.version


def _fsync(path: Path, folder: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if folder else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class PayloadStore:
    """Verified bundles below `data_dir`/payloads, one folder per manifest digest (0700)."""

    def __init__(self, data_dir: Path) -> None:
        self.root = Path(data_dir) / "payloads"

    def path(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise ValueError(f"{digest!r} is not a manifest digest (64 hex digits)")
        return self.root / digest

    def install(self, bundle: Path, checks: Checks) -> Installed:
        """Verify `bundle` against `checks` while its files are written to a temporary folder,
        then move that folder in place; a bundle already stored is left as it is. Nothing of a
        refused bundle stays behind."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.root))
        written: list[Path] = []

        def opener(rel: str) -> IO[bytes]:
            target = tmp / "files" / rel  # rel is a checked path: no '..', not absolute
            target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            written.append(target)
            return target.open("xb")

        try:
            verified = verify(bundle, checks, opener)
            for name, data in ((MANIFEST_NAME, verified.canonical), (SIG_NAME, verified.signatures)):
                (tmp / name).write_bytes(data)
                written.append(tmp / name)
            shutil.copyfile(bundle, tmp / BUNDLE_NAME)
            written.append(tmp / BUNDLE_NAME)
            for p in written:
                _fsync(p)
            target = self.path(verified.digest)
            try:
                os.rename(tmp, target)
            except OSError:
                if not (target / MANIFEST_NAME).is_file():
                    raise
                shutil.rmtree(tmp)  # the same bundle, installed before
            _fsync(self.root, folder=True)
            return Installed(verified.digest, verified.manifest, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def bundle(self, digest: str) -> Path | None:
        """The stored bundle file of `digest` (what peers fetch), or None."""
        try:
            path = self.path(digest) / BUNDLE_NAME
        except ValueError:
            return None
        return path if path.is_file() else None

    def digests(self) -> frozenset[str]:
        """The digests of the bundles stored here (the folder names; `installed` reads them)."""
        if not self.root.is_dir():
            return frozenset()
        return frozenset(
            e.name for e in self.root.iterdir() if _DIGEST.match(e.name) and (e / BUNDLE_NAME).is_file()
        )

    def incoming(self, digest: str) -> Path:
        """Where a download of `digest` collects before it is verified (kept to resume)."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        return self.root / f".incoming-{self.path(digest).name}.part"

    def installed(self) -> list[Installed]:
        """Every stored bundle whose manifest still matches its folder's digest, by name and
        version (a damaged or half-written folder is not listed)."""
        out: list[Installed] = []
        if not self.root.is_dir():
            return out
        for entry in sorted(self.root.iterdir()):
            if not _DIGEST.match(entry.name):
                continue
            try:
                data = (entry / MANIFEST_NAME).read_bytes()
                if manifest_digest(data) == entry.name:
                    out.append(Installed(entry.name, from_canonical(data), entry))
            except (OSError, PayloadError):
                continue
        return sorted(out, key=lambda i: (i.name, i.version))

    def versions(self, name: str) -> list[Version]:
        """The versions of payload `name` installed here (what an explicit rollback may return to)."""
        return [i.version for i in self.installed() if i.name == name]
