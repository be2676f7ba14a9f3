"""The payload manifest and its trust checks, pure: every refusal has its code and names the
key; versions compare as numbers; canonical bytes are one per manifest; signers count by
distinct trusted keys up to the threshold; expiry, meshems version and rollback."""

from __future__ import annotations

from typing import Any

import pytest

from meshems.core.errors import (
    PayloadExpiredError,
    PayloadIncompatibleError,
    PayloadManifestError,
    PayloadRollbackError,
    PayloadSignatureError,
    PayloadUntrustedKeyError,
)
from meshems.core.payload_checks import (
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
    MAX_TOTAL_BYTES,
    Version,
    canonical_bytes,
    from_canonical,
    manifest_digest,
    newer,
    parse_manifest,
    parse_version,
    path_problem,
)

DIGEST = "ab" * 32
EXPIRES_S = 1_830_211_200  # 2027-12-31T00:00:00Z
K1, K2, K3 = "11" * 32, "22" * 32, "33" * 32


def doc(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "name": "peak-guard",
        "version": "1.2.3",
        "kind": "controller",
        "entry_point": "controller.py",
        "expires_at": "2027-12-31T00:00:00Z",
        "files": [{"path": "controller.py", "sha256": DIGEST, "size": 10}],
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def refused(d: dict[str, Any]) -> PayloadManifestError:
    with pytest.raises(PayloadManifestError) as info:
        parse_manifest(d)
    assert info.value.code == "E_PAYLOAD_MANIFEST"
    return info.value


def test_a_minimal_manifest_gets_every_default_written_out() -> None:
    m = parse_manifest(doc())
    assert (m.name, str(m.version), m.kind, m.entry_point) == (
        "peak-guard",
        "1.2.3",
        "controller",
        "controller.py",
    )
    assert m.expires_at_s == EXPIRES_S and m.expires_at == "2027-12-31T00:00:00Z"
    assert (m.limits.memory_mb, m.limits.cpu_pct, m.cycle_budget_ms, m.deadline_s) == (128, 50, 100, 3600)
    assert (m.health.shadow_cycles, m.health.watch_cycles, m.health.max_timeouts) == (30, 60, 0)
    assert m.as_doc()["limits"] == {"memory_mb": 128, "cpu_pct": 50}
    assert m.total_bytes == 10 and m.file("controller.py") is not None and m.file("x") is None


@pytest.mark.parametrize(
    ("changes", "key", "words"),
    [
        ({"name": "Peak Guard"}, "name", "lower case"),
        ({"version": "1.2"}, "version", "MAJOR.MINOR.PATCH"),
        ({"version": 1.2}, "version", "quote it"),
        ({"version": "01.2.3"}, "version", "not a version"),
        ({"kind": "plugin"}, "kind", "none of controller"),
        ({"entry_point": None}, "entry_point", "missing"),
        ({"entry_point": "main.py"}, "entry_point", "none of the files"),
        ({"expires_at": "2027-12-31T00:00:00+02:00"}, "expires_at", "UTC"),
        ({"expires_at": "next year"}, "expires_at", "ISO 8601"),
        ({"expires_at": 12}, "expires_at", "outside"),
        ({"expires_at": True}, "expires_at", "unix seconds"),
        ({"files": []}, "files", "non-empty"),
        ({"limits": {"memory_mb": 1}}, "limits.memory_mb", "outside 16..4096"),
        ({"limits": {"memory": 64}}, "limits.memory", "unknown key"),
        ({"health": {"shadow_cycles": True}}, "health.shadow_cycles", "whole number"),
        ({"cycle_budget_ms": 0}, "cycle_budget_ms", "outside"),
        ({"deadline_s": 10}, "deadline_s", "outside"),
        ({"min_meshems_version": "latest"}, "min_meshems_version", "not a version"),
        ({"entry": "x"}, "entry", "unknown key"),
        ({"format": 2}, "format", "not a format"),
    ],
)
def test_a_bad_manifest_is_refused_naming_the_key(changes: dict[str, Any], key: str, words: str) -> None:
    exc = refused(doc(**changes))
    assert exc.message.startswith(f"{key}: ") and words in exc.message
    assert exc.context["key"] == key


def test_the_required_keys() -> None:
    for key in ("name", "version", "kind", "expires_at", "files"):
        d = doc()
        del d[key]
        assert refused(d).message == f"{key}: missing (required)"


@pytest.mark.parametrize(
    ("path", "words"),
    [
        ("/etc/passwd", "absolute"),
        ("../evil.py", "'..'"),
        ("a/./b", "'.'"),
        ("a//b", "only letters"),
        ("a\\b", "only letters"),
        ("a/", "only letters"),
        ("x" * 201, "longer than"),
        ("", "relative path"),
    ],
)
def test_a_file_path_must_be_relative_and_plain(path: str, words: str) -> None:
    assert words in path_problem(path)
    files = [{"path": path, "sha256": DIGEST, "size": 1}]
    exc = refused(doc(kind="policy", entry_point=None, files=files))
    assert exc.context["key"] == "files[0].path" and words in exc.message


def test_files_duplicates_case_twins_files_below_files_and_caps() -> None:
    def f(path: str, size: int = 1) -> dict[str, Any]:
        return {"path": path, "sha256": DIGEST, "size": size}

    policy = {"kind": "policy", "entry_point": None}
    assert "listed twice" in refused(doc(**policy, files=[f("a"), f("a")])).message
    assert "differs only by case" in refused(doc(**policy, files=[f("a.py"), f("A.py")])).message
    assert "which is a file" in refused(doc(**policy, files=[f("a"), f("a/b")])).message
    many = [f(f"f{i}") for i in range(MAX_FILES + 1)]
    assert f"at most {MAX_FILES}" in refused(doc(**policy, files=many)).message
    big = [f("a", MAX_TOTAL_BYTES), f("b", 1)]
    assert refused(doc(**policy, files=big)).message.startswith("files: ")
    bad = [{"path": "a", "sha256": "AB" * 32, "size": 1}]
    assert refused(doc(**policy, files=bad)).context["key"] == "files[0].sha256"
    assert refused(doc(**policy, files=[{"path": "a", "sha256": DIGEST}])).context["key"] == "files[0]"


def test_a_data_payload_needs_no_entry_point_and_expiry_takes_unix_seconds() -> None:
    m = parse_manifest(doc(kind="forecast-model", entry_point=None, expires_at=EXPIRES_S))
    assert m.entry_point is None and m.expires_at == "2027-12-31T00:00:00Z"


def test_canonical_bytes_are_sorted_compact_json_and_round_trip() -> None:
    m = parse_manifest(doc(description="guard", limits={"memory_mb": 64}))
    data = canonical_bytes(m)
    assert data.startswith(b'{"cycle_budget_ms":100,"deadline_s":3600,') and b" " not in data.replace(
        b"guard", b""
    )
    assert from_canonical(data) == m
    again = parse_manifest(doc(description="guard", limits={"memory_mb": 64}))
    assert manifest_digest(data) == manifest_digest(canonical_bytes(again))
    assert manifest_digest(data) != manifest_digest(canonical_bytes(parse_manifest(doc())))


def test_a_manifest_json_that_is_not_canonical_is_refused() -> None:
    data = canonical_bytes(parse_manifest(doc()))
    with pytest.raises(PayloadManifestError, match="canonical form"):
        from_canonical(data.replace(b",", b", ", 1))
    with pytest.raises(PayloadManifestError, match="appears twice"):
        from_canonical(data[:-1] + b',"name":"other"}')
    with pytest.raises(PayloadManifestError, match="not ASCII JSON"):
        from_canonical(b"\xff{")
    with pytest.raises(PayloadManifestError, match="NaN"):
        from_canonical(data.replace(b'"deadline_s":3600', b'"deadline_s":NaN'))


def test_versions_compare_as_numbers() -> None:
    assert newer("1.10.0", "1.9.9") and newer("2.0.0", "1.99.99") and not newer("1.0.0", "1.0.0")
    assert parse_version("0.1.0") == Version(0, 1, 0) and str(Version(1, 2, 3)) == "1.2.3"
    with pytest.raises(PayloadManifestError, match=r"--active: '1\.0' is not a version"):
        parse_version("1.0", "--active")


def test_rollback_a_version_only_rises_unless_an_explicit_rollback_to_one_installed() -> None:
    m = parse_manifest(doc(version="1.2.0"))
    check_rollback(m, None)
    check_rollback(m, "1.1.9")
    for active in ("1.2.0", "1.3.0"):
        with pytest.raises(
            PayloadRollbackError, match=f"1.2.0 is not newer than the active peak-guard {active}"
        ):
            check_rollback(m, active)
    check_rollback(m, "1.3.0", installed=["1.2.0", "1.3.0"], rollback=True)
    with pytest.raises(PayloadRollbackError, match="never installed here") as info:
        check_rollback(m, "1.3.0", installed=["1.3.0"], rollback=True)
    assert info.value.code == "E_PAYLOAD_ROLLBACK"


def test_expiry_and_meshems_version() -> None:
    m = parse_manifest(doc(min_meshems_version="0.2.0"))
    check_expiry(m, EXPIRES_S - 1)
    with pytest.raises(PayloadExpiredError, match="expired at 2027-12-31T00:00:00Z") as info:
        check_expiry(m, EXPIRES_S)
    assert info.value.code == "E_PAYLOAD_EXPIRED"
    check_compatible(m, "0.2.0")
    with pytest.raises(PayloadIncompatibleError, match=r"needs meshems 0.2.0 or later .*this is 0.1.0"):
        check_compatible(m, "0.1.0")


def test_signers_count_distinct_trusted_keys_up_to_the_threshold() -> None:
    assert check_signers([(K1, True), (K1, True), (K3, True)], {K1, K2}, 1, "b") == (K1,)
    assert check_signers([(K2, True), (K1, True)], {K1, K2}, 2, "b") == (K1, K2)
    with pytest.raises(PayloadSignatureError, match="1 of the 2 trusted signatures needed") as info:
        check_signers([(K1, True), (K1, True)], {K1, K2}, 2, "b")  # the same key twice counts once
    assert info.value.code == "E_PAYLOAD_SIGNATURE"
    with pytest.raises(PayloadUntrustedKeyError, match=f"signed by key {K3[:16]}, which is not among the 2"):
        check_signers([(K3, True)], {K1, K2}, 1, "b")
    with pytest.raises(PayloadUntrustedKeyError, match="1 of the 2"):
        check_signers([(K1, True), (K3, True)], {K1, K2}, 2, "b")
    with pytest.raises(PayloadSignatureError, match=f"signature by key {K1[:16]} does not match"):
        check_signers([(K1, False), (K2, True)], {K1, K2}, 1, "b")  # a trusted key's bad signature
    assert check_signers([(K3, False), (K1, True)], {K1}, 1, "b") == (K1,)  # a stranger's is ignored
    with pytest.raises(PayloadUntrustedKeyError, match="no trusted keys"):
        check_signers([(K1, True)], set(), 1, "b")
    with pytest.raises(PayloadSignatureError, match="holds no signature"):
        check_signers([], {K1}, 1, "b")


def test_signature_file_round_trip_and_refusals() -> None:
    data = signatures_doc({K2: b"\x02" * 64, K1: b"\x01" * 64})
    assert parse_signatures(data) == [(K1, b"\x01" * 64), (K2, b"\x02" * 64)]
    for bad, words in [
        (b"[", "not JSON"),
        (b'{"format": 2, "signatures": []}', "format"),
        (b'{"format": 1, "signatures": [{"key": "x", "sig": "00"}]}', r"signatures\[0\]"),
        (b'{"format": 1, "signatures": [{"key": "' + K1.encode() + b'", "sig": "00"}]}', "1 bytes"),
    ]:
        with pytest.raises(PayloadSignatureError, match=words):
            parse_signatures(bad)


def test_a_public_key_is_64_hex_digits() -> None:
    assert parse_key_hex(K1.upper() + "\n") == K1
    for bad in ("", "zz" * 32, K1[:-2], 5):
        with pytest.raises(ValueError, match="64 hex digits"):
            parse_key_hex(bad)


def config(payloads: object) -> dict[str, Any]:
    node = {"id": "n1", "address": "127.0.0.1", "raft_port": 4001, "api_port": 5001}
    return {"cluster": "t", "zone": "z", "raft": {"secret_file": "s"}, "nodes": [node], "payloads": payloads}


def test_the_config_pins_trusted_keys_and_a_threshold() -> None:
    from meshems.core.config import parse_config
    from meshems.core.errors import ConfigError

    got = parse_config(config({"trusted_keys": [K1.upper(), K2], "threshold": 2}), "c.yaml").payloads
    assert got.trusted_keys == (K1, K2) and got.threshold == 2
    assert parse_config({k: v for k, v in config({}).items() if k != "payloads"}).payloads.trusted_keys == ()
    for payloads, key, words in [
        ({"trusted_keys": ["zz"]}, "payloads.trusted_keys[0]", "64 hex digits"),
        ({"trusted_keys": [K1, K1.upper()]}, "payloads.trusted_keys[1]", "the same key as trusted_keys[0]"),
        ({"trusted_keys": [K1], "threshold": 2}, "payloads.threshold", "only 1 trusted keys"),
        ({"trusted_keys": [K1], "threshold": 0}, "payloads.threshold", "greater than or equal to 1"),
        ({"trusted": [K1]}, "payloads.trusted", "unknown key"),
    ]:
        with pytest.raises(ConfigError) as info:
            parse_config(config(payloads), "c.yaml")
        assert info.value.context["key"] == key and f"c.yaml: {key}: " in info.value.message
        assert words in info.value.message
