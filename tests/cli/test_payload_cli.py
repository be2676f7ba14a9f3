"""`meshems payload keygen | build | verify` through the CLI's main: exit codes (0 ok, 1 a
refused bundle, 2 usage or config), the error line naming the code, `-o json`, the trusted
keys from a config or from --trusted-key, and the shipped example payload."""

from __future__ import annotations

import io
import json
import stat
import tarfile
from pathlib import Path

import pytest
import yaml

from meshems.cli import main
from tests.conftest import write_config

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "cluster-configs" / "payloads" / "peak-guard"


@pytest.fixture
def release(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, str]:
    """A release key made with `meshems payload keygen` and its public key."""
    assert main(["payload", "keygen", "--out", str(tmp_path / "release.key")]) == 0
    out = capsys.readouterr().out
    key = (tmp_path / "release.pub").read_text().strip()
    assert key in out and "payloads: {trusted_keys: [" in out
    return tmp_path / "release.key", key


def built(tmp_path: Path, key: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    out = tmp_path / "peak-guard.mpkg"
    assert main(["payload", "build", str(EXAMPLE), "--key", str(key), "-o", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"built {out}: peak-guard 1.0.0 (controller), 1 file(s)")
    return out


def test_keygen_build_verify(
    tmp_path: Path, release: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    key, public = release
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    bundle = built(tmp_path, key, capsys)
    assert main(["payload", "verify", str(bundle), "--trusted-key", str(key.with_suffix(".pub"))]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: peak-guard 1.0.0 (controller), signed by 1 trusted key(s), 1 needed")
    assert "controller.py (entry point)" in out and "cycle budget 50 ms" in out
    assert main(["payload", "verify", str(bundle), "--trusted-key", public, "-o", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is True and doc["name"] == "peak-guard" and doc["signers"] == [public]
    assert [f["path"] for f in doc["files"]] == ["controller.py"] and len(doc["digest"]) == 64
    assert main(["payload", "keygen", "--out", str(key)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_verify_with_the_config_pinned_keys(
    tmp_path: Path, release: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    key, public = release
    bundle = built(tmp_path, key, capsys)
    config = write_config(tmp_path, nodes=1)
    doc = yaml.safe_load(config.read_text())
    assert main(["payload", "verify", str(bundle), "--config", str(config)]) == 2
    assert "payloads.trusted_keys: empty" in capsys.readouterr().err
    config.write_text(yaml.safe_dump({**doc, "payloads": {"trusted_keys": [public]}}))
    assert main(["payload", "verify", str(bundle), "--config", str(config)]) == 0
    other = "ab" * 32
    config.write_text(yaml.safe_dump({**doc, "payloads": {"trusted_keys": [public, other], "threshold": 2}}))
    assert main(["payload", "verify", str(bundle), "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "error E_PAYLOAD_SIGNATURE" in err and "1 of the 2 trusted signatures needed" in err
    config.write_text(yaml.safe_dump({**doc, "payloads": {"trusted_keys": ["nope"]}}))
    assert main(["payload", "verify", str(bundle), "--config", str(config)]) == 2
    assert "payloads.trusted_keys[0]: 'nope' is not an Ed25519 public key" in capsys.readouterr().err


def test_a_refused_bundle_exits_1_with_its_code(
    tmp_path: Path, release: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    key, public = release
    bundle = built(tmp_path, key, capsys)
    with tarfile.open(bundle) as tar:
        items = [(m, tar.extractfile(m).read()) for m in tar]  # type: ignore[union-attr]
    tampered = tmp_path / "tampered.mpkg"
    with tarfile.open(tampered, "w") as tar:
        for m, data in items:
            data = data.replace(b"soc_min_pct", b"soc_max_pct") if m.name == "files/controller.py" else data
            tar.addfile(m, io.BytesIO(data))
    assert main(["payload", "verify", str(tampered), "--trusted-key", public]) == 1
    err = capsys.readouterr().err
    assert "error E_PAYLOAD_HASH:" in err and "controller.py: sha256 " in err
    assert main(["payload", "verify", str(tampered), "--trusted-key", public, "-o", "json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert (doc["ok"], doc["code"], doc["file"]) == (False, "E_PAYLOAD_HASH", "controller.py")
    assert doc["expected"] != doc["actual"]
    assert main(["payload", "verify", str(bundle), "--trusted-key", "cd" * 32]) == 1
    assert "error E_PAYLOAD_UNTRUSTED_KEY:" in capsys.readouterr().err
    assert main(["payload", "verify", str(bundle), "--trusted-key", public, "--active", "1.0.0"]) == 1
    assert (
        "error E_PAYLOAD_ROLLBACK: peak-guard 1.0.0 is not newer than the active" in capsys.readouterr().err
    )


def test_usage_errors_exit_2(
    tmp_path: Path, release: tuple[Path, str], capsys: pytest.CaptureFixture[str]
) -> None:
    key, public = release
    bundle = built(tmp_path, key, capsys)
    assert main(["payload", "verify", str(bundle), "--trusted-key", public, "--active", "1.0"]) == 2
    assert "--active: '1.0' is not a version" in capsys.readouterr().err
    assert main(["payload", "verify", str(bundle), "--trusted-key", public, "--threshold", "2"]) == 2
    assert "--threshold 2: between 1 and the 1 distinct trusted keys" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["payload", "verify", str(bundle)])
    assert info.value.code == 2 and "--trusted-key is required" in capsys.readouterr().err
    key.chmod(0o644)
    assert main(["payload", "build", str(EXAMPLE), "--key", str(key), "-o", str(tmp_path / "x.mpkg")]) == 2
    assert "chmod 600" in capsys.readouterr().err and not (tmp_path / "x.mpkg").exists()
    key.chmod(0o600)
    cfg = str(write_config(tmp_path))
    for flag, value in (("--shadow-cycles", "0"), ("--watch-cycles", "-1"), ("--shadow-cycles", "100001")):
        assert main(["deploy", "--config", cfg, "--manifest", str(bundle), flag, value]) == 2
        assert f"{flag} {value}: a count of cycles from" in capsys.readouterr().err


def test_the_example_controller_decides_setpoints_from_the_image_and_policy() -> None:
    namespace: dict[str, object] = {}
    code = (EXAMPLE / "controller.py").read_text()
    exec(compile(code, str(EXAMPLE / "controller.py"), "exec"), namespace)  # no __pycache__ in the repo
    decide = namespace["decide"]
    battery = {"ok": True, "power_kw": 0.0, "soc_pct": 60.0, "max_discharge_kw": 50.0}
    image = {
        "grid_kw": 42.0,
        "batteries": [{**battery, "id": "a"}, {**battery, "id": "b", "max_discharge_kw": 30.0}],
    }
    got = decide(image, {"import_limit_kw": 30.0})  # type: ignore[operator]
    assert got["setpoints"] == {"a": 7.5, "b": 4.5}  # 12 kW over the limit, by headroom
    assert decide({**image, "grid_kw": 20.0}, {"import_limit_kw": 30.0})["setpoints"] == {"a": 0.0, "b": 0.0}  # type: ignore[operator]
