"""Payload bundles on disk: release keys (0600), building a signed bundle from a folder, and
verifying one as hostile input: each refusal with its code and an exact message (tampered
file, bad signature, untrusted key, threshold, downgrade, expiry, links, traversal, strays,
oversize); the content-addressed store keeps only what passed and nothing of what did not."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from meshems.adapters import payload_bundle as pb
from meshems.adapters.payload_store import PayloadStore
from meshems.core.errors import (
    ConfigError,
    PayloadBundleError,
    PayloadError,
    PayloadExpiredError,
    PayloadHashError,
    PayloadIncompatibleError,
    PayloadManifestError,
    PayloadRollbackError,
    PayloadSignatureError,
    PayloadUntrustedKeyError,
)
from meshems.core.payload_manifest import Version

NOW_S = 1_800_000_000.0  # 2027-01-15
MANIFEST = """\
name: peak-guard
version: {version}
kind: controller
entry_point: controller.py
expires_at: 2027-12-31T00:00:00Z
min_meshems_version: 0.1.0
"""


def source(folder: Path, version: str = "1.0.0") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "manifest.yaml").write_text(MANIFEST.format(version=version))
    (folder / "controller.py").write_text("def decide(image, policy):\n    return {'setpoints': {}}\n")
    (folder / "lib").mkdir(exist_ok=True)
    (folder / "lib" / "util.py").write_text("LIMIT_KW = 30.0\n")
    return folder


@pytest.fixture
def keys(tmp_path: Path) -> dict[str, str]:
    """Three release keys: name -> public key hex (private keys in tmp_path/NAME.key)."""
    return {name: pb.keygen(tmp_path / f"{name}.key")[1] for name in ("alice", "bob", "eve")}


def bundle(tmp_path: Path, *signers: str, version: str = "1.0.0") -> Path:
    out = tmp_path / f"b-{version}-{'-'.join(signers)}.mpkg"
    pb.build(
        source(tmp_path / f"src-{version}", version), [tmp_path / f"{s}.key" for s in signers], out, NOW_S
    )
    return out


def checks(*trusted: str, threshold: int = 1, **more: object) -> pb.Checks:
    return pb.Checks(frozenset(trusted), threshold, NOW_S, "0.1.0", **more)  # type: ignore[arg-type]


def members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    """A bundle's members as written (our own, trusted, bundle)."""
    with tarfile.open(path) as tar:
        return [(m, tar.extractfile(m).read() if m.isreg() else b"") for m in tar]  # type: ignore[union-attr]


def write_tar(path: Path, items: list[tuple[tarfile.TarInfo, bytes]]) -> Path:
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in items:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path


def refusal(path: Path, c: pb.Checks, kind: type[PayloadError]) -> PayloadError:
    with pytest.raises(kind) as info:
        pb.verify(path, c)
    return info.value


def test_keygen_writes_a_0600_private_key_and_the_public_key_beside_it(tmp_path: Path) -> None:
    pub, key = pb.keygen(tmp_path / "keys" / "release.key")
    private = tmp_path / "keys" / "release.key"
    assert pub == tmp_path / "keys" / "release.pub" and pub.read_text() == key + "\n" and len(key) == 64
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and b"PRIVATE KEY" in private.read_bytes()
    assert not (tmp_path / "keys" / "release.key.tmp").exists()
    assert pb.trusted_key(str(pub)) == key == pb.trusted_key(key.upper())
    with pytest.raises(ConfigError, match="already exists"):
        pb.keygen(private)
    assert pb.keygen(private, force=True)[1] != key
    private.chmod(0o640)
    with pytest.raises(ConfigError, match="has mode 0640; a release key must not be readable"):
        pb.load_private_key(private)
    with pytest.raises(ConfigError, match="no such key; create one with: meshems payload keygen"):
        pb.load_private_key(tmp_path / "none.key")
    with pytest.raises(ConfigError, match=r"neither 64 hex digits nor a readable \.pub file"):
        pb.trusted_key(str(tmp_path / "none.pub"))


def test_a_built_bundle_verifies_and_is_the_same_bytes_every_time(
    tmp_path: Path, keys: dict[str, str]
) -> None:
    src = source(tmp_path / "src")
    (src / "__pycache__").mkdir()
    (src / "__pycache__" / "controller.cpython-311.pyc").write_bytes(b"\0")
    (src / ".editor.swp").write_bytes(b"\0")
    a = pb.build(src, [tmp_path / "alice.key"], tmp_path / "a.mpkg", NOW_S)
    b = pb.build(src, [tmp_path / "alice.key"], tmp_path / "b.mpkg", NOW_S)
    assert a.path.read_bytes() == b.path.read_bytes() and a.digest == b.digest
    assert [f.path for f in a.manifest.files] == [
        "controller.py",
        "lib/util.py",
    ]  # no caches, no hidden files
    assert [m.name for m, _ in members(a.path)] == ["manifest.json", "manifest.sig", "files/controller.py",
                                                   "files/lib/util.py"]  # fmt: skip
    v = pb.verify(a.path, checks(keys["alice"], keys["bob"]))
    assert v.digest == a.digest and v.signers == (keys["alice"],) and v.manifest == a.manifest
    util = {"path": "lib/util.py", "sha256": hashlib.sha256(b"LIMIT_KW = 30.0\n").hexdigest(), "size": 16}
    assert json.loads(v.canonical)["files"][1] == util


def test_build_refuses_links_a_files_list_and_a_bad_manifest_naming_the_key(
    tmp_path: Path, keys: dict[str, str]
) -> None:
    src = source(tmp_path / "src")
    key = [tmp_path / "alice.key"]
    (src / "passwd").symlink_to("/etc/passwd")
    with pytest.raises(
        PayloadBundleError, match="passwd is a symbolic link: a bundle holds regular files only"
    ):
        pb.build(src, key, tmp_path / "x.mpkg", NOW_S)
    (src / "passwd").unlink()
    (src / "manifest.yaml").write_text(MANIFEST.format(version="1.0.0") + "files: []\n")
    with pytest.raises(PayloadManifestError, match="files: computed from the folder"):
        pb.build(src, key, tmp_path / "x.mpkg", NOW_S)
    (src / "manifest.yaml").write_text(MANIFEST.format(version="1.0.0").replace("controller.py", "main.py"))
    with pytest.raises(
        PayloadManifestError, match=r"manifest.yaml: entry_point: 'main.py' is none of the files"
    ):
        pb.build(src, key, tmp_path / "x.mpkg", NOW_S)
    (src / "manifest.yaml").write_text(MANIFEST.format(version="1.0.0"))
    with pytest.raises(PayloadExpiredError, match="expired at 2027-12-31T00:00:00Z"):
        pb.build(src, key, tmp_path / "x.mpkg", 1_900_000_000)
    assert not (tmp_path / "x.mpkg").exists()


def test_a_tampered_file_is_refused_naming_the_file_and_both_digests(
    tmp_path: Path, keys: dict[str, str]
) -> None:
    items = members(bundle(tmp_path, "alice"))
    expected = json.loads(items[0][1])["files"][1]["sha256"]
    items[3] = (items[3][0], b"LIMIT_KW = 99.50\n")  # lib/util.py, one byte longer
    exc = refusal(write_tar(tmp_path / "t.mpkg", items), checks(keys["alice"]), PayloadHashError)
    actual = hashlib.sha256(b"LIMIT_KW = 99.50\n").hexdigest()
    assert exc.code == "E_PAYLOAD_HASH" and exc.context == {"file": "lib/util.py", "expected": expected,
                                                              "actual": actual}  # fmt: skip
    assert f"lib/util.py: sha256 {actual} (17 bytes), the manifest says {expected} (16 bytes)" in exc.message


def test_an_altered_manifest_or_signature_is_refused(tmp_path: Path, keys: dict[str, str]) -> None:
    items = members(bundle(tmp_path, "alice"))
    forged = [(items[0][0], items[0][1].replace(b'"version":"1.0.0"', b'"version":"9.0.0"')), *items[1:]]
    exc = refusal(write_tar(tmp_path / "m.mpkg", forged), checks(keys["alice"]), PayloadSignatureError)
    assert f"the signature by key {keys['alice'][:16]} does not match the manifest" in exc.message
    sig = json.loads(items[1][1])
    sig["signatures"][0]["sig"] = "00" * 64
    bad = [items[0], (items[1][0], json.dumps(sig).encode()), *items[2:]]
    assert refusal(write_tar(tmp_path / "s.mpkg", bad), checks(keys["alice"]), PayloadSignatureError)
    garbage = [items[0], (items[1][0], b"not json"), *items[2:]]
    exc = refusal(write_tar(tmp_path / "g.mpkg", garbage), checks(keys["alice"]), PayloadSignatureError)
    assert exc.message.startswith("manifest.sig: not JSON")


def test_untrusted_keys_and_the_threshold(tmp_path: Path, keys: dict[str, str]) -> None:
    one = bundle(tmp_path, "eve")
    exc = refusal(one, checks(keys["alice"]), PayloadUntrustedKeyError)
    assert (
        exc.code == "E_PAYLOAD_UNTRUSTED_KEY"
        and f"signed by key {keys['eve'][:16]}, which is not" in exc.message
    )
    alice = bundle(tmp_path, "alice")
    exc = refusal(alice, checks(keys["alice"], keys["bob"], threshold=2), PayloadSignatureError)
    assert "1 of the 2 trusted signatures needed" in exc.message
    both = bundle(tmp_path, "alice", "bob")
    assert pb.verify(both, checks(keys["alice"], keys["bob"], threshold=2)).signers == tuple(
        sorted((keys["alice"], keys["bob"]))
    )
    exc = refusal(bundle(tmp_path, "alice", "eve"), checks(keys["alice"], keys["bob"], threshold=2),
                  PayloadUntrustedKeyError)  # fmt: skip
    assert "1 of the 2" in exc.message


def test_downgrade_expiry_and_meshems_version(tmp_path: Path, keys: dict[str, str]) -> None:
    path, trusted = bundle(tmp_path, "alice", version="1.0.0"), keys["alice"]
    exc = refusal(path, checks(trusted, active=Version(1, 1, 0)), PayloadRollbackError)
    assert "peak-guard 1.0.0 is not newer than the active peak-guard 1.1.0" in exc.message
    refusal(path, checks(trusted, active="1.0.0"), PayloadRollbackError)
    assert pb.verify(path, checks(trusted, active="0.9.9")).manifest.version == Version(1, 0, 0)
    assert pb.verify(path, checks(trusted, active="1.1.0", installed=("1.0.0",), rollback=True))
    exc = refusal(path, replace(checks(trusted), now_s=1_900_000_000.0), PayloadExpiredError)
    assert exc.message.startswith("peak-guard 1.0.0 expired at 2027-12-31T00:00:00Z (now 2030-03-17")
    refusal(path, replace(checks(trusted), meshems_version="0.0.9"), PayloadIncompatibleError)


def info(name: str, kind: bytes = tarfile.REGTYPE, link: str = "") -> tarfile.TarInfo:
    i = tarfile.TarInfo(name)
    i.type, i.linkname, i.mode = kind, link, 0o644
    return i


@pytest.mark.parametrize(
    ("member", "words"),
    [
        (info("files/lib/util.py", tarfile.SYMTYPE, "/etc/passwd"), "is a symbolic link to '/etc/passwd'"),
        (info("files/lib/util.py", tarfile.LNKTYPE, "files/controller.py"), "is a hard link"),
        (info("files/dev", tarfile.CHRTYPE), "is a device or FIFO"),
        (info("files/lib", tarfile.DIRTYPE), "is a folder"),
        (info("/etc/cron.d/evil"), "is absolute"),
        (info("files/../../.bashrc"), "has a '.' or '..' part"),
        (info("../evil.py"), "has a '.' or '..' part"),
        (info("files/evil.py"), "member 'files/evil.py' is not in the manifest"),
        (info("files/controller.py"), "member 'files/controller.py' appears twice"),
        (info("other/x"), "is outside files/"),
    ],
)
def test_a_hostile_member_is_refused(
    tmp_path: Path, keys: dict[str, str], member: tarfile.TarInfo, words: str
) -> None:
    items = members(bundle(tmp_path, "alice"))
    evil = write_tar(tmp_path / "evil.mpkg", [*items[:3], (member, b"#!/bin/sh\nrm -rf /\n"), *items[3:]])
    exc = refusal(evil, checks(keys["alice"]), PayloadBundleError)
    assert exc.code == "E_PAYLOAD_BUNDLE" and words in exc.message


def test_the_archive_shape_order_missing_files_and_caps(
    tmp_path: Path, keys: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    items, c = members(bundle(tmp_path, "alice")), checks(keys["alice"])
    exc = refusal(write_tar(tmp_path / "o.mpkg", [items[1], items[0], *items[2:]]), c, PayloadBundleError)
    assert "member 'manifest.sig' where manifest.json must be" in exc.message
    exc = refusal(write_tar(tmp_path / "m.mpkg", items[:3]), c, PayloadBundleError)
    assert "lib/util.py named in the manifest but not in the bundle" in exc.message
    exc = refusal(write_tar(tmp_path / "e.mpkg", []), c, PayloadBundleError)
    assert exc.message.endswith("e.mpkg: no manifest.json (a bundle starts with manifest.json, manifest.sig)")
    (tmp_path / "junk.mpkg").write_bytes(b"PK\x03\x04 not a tar at all" * 40)
    assert "not a readable bundle" in refusal(tmp_path / "junk.mpkg", c, PayloadBundleError).message
    with tarfile.open(tmp_path / "z.mpkg", "w:gz") as tar:
        for i, data in items:
            tar.addfile(i, io.BytesIO(data))
    assert "uncompressed tar" in refusal(tmp_path / "z.mpkg", c, PayloadBundleError).message
    assert "cannot read it" in refusal(tmp_path / "absent.mpkg", c, PayloadBundleError).message
    good = bundle(tmp_path, "alice", version="1.0.1")
    monkeypatch.setattr(pb, "MAX_TOTAL_BYTES", 60)  # the files' cap, read before a member is
    exc = refusal(good, c, PayloadBundleError)
    assert "member 'files/lib/util.py' (16 bytes) is past the files' cap" in exc.message
    monkeypatch.setattr(pb, "MAX_MANIFEST_BYTES", 100)
    assert "manifest.json is" in refusal(good, c, PayloadBundleError).message
    monkeypatch.setattr(pb, "MAX_BUNDLE_BYTES", 1000)
    assert "more than a bundle may be (1000)" in refusal(good, c, PayloadBundleError).message
    with pytest.raises(PayloadBundleError, match="more than 1000 bytes"):
        pb._Capped(io.BytesIO(b"x" * 2000), 1000, "stream").read()


def test_the_store_keeps_verified_bundles_by_manifest_digest(tmp_path: Path, keys: dict[str, str]) -> None:
    store, c = PayloadStore(tmp_path / "data"), checks(keys["alice"])
    first = store.install(bundle(tmp_path, "alice", version="1.0.0"), c)
    assert first.path == tmp_path / "data" / "payloads" / first.digest
    assert (first.path / "files" / "lib" / "util.py").read_text() == "LIMIT_KW = 30.0\n"
    assert pb.manifest_digest((first.path / "manifest.json").read_bytes()) == first.digest
    again = store.install(bundle(tmp_path, "alice", version="1.0.0"), c)
    assert again.path == first.path
    second = store.install(bundle(tmp_path, "alice", version="1.1.0"), replace(c, active="1.0.0"))
    assert [(i.name, str(i.version)) for i in store.installed()] == [
        ("peak-guard", "1.0.0"),
        ("peak-guard", "1.1.0"),
    ]
    assert store.versions("peak-guard") == [Version(1, 0, 0), Version(1, 1, 0)] and store.versions("x") == []
    (second.path / "manifest.json").write_bytes(b"{}")  # damaged: no longer listed
    assert [str(i.version) for i in store.installed()] == ["1.0.0"]
    with pytest.raises(ValueError, match="not a manifest digest"):
        store.path("../etc")


def test_the_store_keeps_nothing_of_a_refused_bundle(tmp_path: Path, keys: dict[str, str]) -> None:
    items = members(bundle(tmp_path, "alice"))
    items[3] = (items[3][0], b"LIMIT_KW = 1e9\n")  # the last file: the first one was written already
    store = PayloadStore(tmp_path / "data")
    with pytest.raises(PayloadHashError):
        store.install(write_tar(tmp_path / "t.mpkg", items), checks(keys["alice"]))
    with pytest.raises(PayloadUntrustedKeyError):
        store.install(bundle(tmp_path, "eve"), checks(keys["alice"]))
    assert os.listdir(tmp_path / "data" / "payloads") == [] and store.installed() == []
