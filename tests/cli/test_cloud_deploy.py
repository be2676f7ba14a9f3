"""`meshems cloud deploy` through the CLI's main, without a broker: what is refused before
anything is signed or published (a bundle over 4 MiB, named with its size; a folder without a
release key; cycles out of bounds or for a payload without a rollout), and a folder built with
--release-key gets as far as the broker."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import yaml

from meshems.adapters import payload_bundle as pb
from meshems.cli import main
from meshems.cloud.downlink import seq_path
from meshems.core.downlink_deploy import MAX_CLOUD_BUNDLE_BYTES
from tests.integration.test_deploy import EXAMPLE


@pytest.fixture
def cloud_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "cloud.yaml"
    path.write_text(yaml.safe_dump({"broker_host": "127.0.0.1", "broker_port": 1, "ca_file": "ca.crt",
                                    "cert_file": "c.crt", "key_file": "c.key"}))  # fmt: skip
    assert main(["cloud", "keygen", "--config", str(path)]) == 0
    return path


def deploy(cloud_yaml: Path, *args: str) -> int:
    return main(["cloud", "deploy", "--config", str(cloud_yaml), "--zone", "zone-a", *args])


def test_a_bundle_over_4_mib_is_refused_with_its_name_and_size(
    cloud_yaml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    big = tmp_path / "big.mpkg"
    big.write_bytes(b"\0" * (MAX_CLOUD_BUNDLE_BYTES + 1))
    capsys.readouterr()
    assert deploy(cloud_yaml, "--manifest", str(big)) == 1
    err = capsys.readouterr().err
    assert "E_CMD_TOO_LARGE" in err and str(big) in err and f"{MAX_CLOUD_BUNDLE_BYTES + 1} bytes" in err, err
    assert not seq_path(cloud_yaml.parent / "command.key").exists()  # nothing signed


def test_a_folder_needs_a_release_key(cloud_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert deploy(cloud_yaml, "--manifest", str(EXAMPLE)) == 2
    assert "is a folder" in capsys.readouterr().err


def test_cycles_are_checked_against_the_manifest(
    cloud_yaml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pb.keygen(tmp_path / "release.key")
    built = pb.build(EXAMPLE, [tmp_path / "release.key"], tmp_path / "pg.mpkg", time.time())
    assert deploy(cloud_yaml, "--manifest", str(built.path), "--shadow-cycles", "0") == 2
    assert "--shadow-cycles 0" in capsys.readouterr().err
    assert not seq_path(cloud_yaml.parent / "command.key").exists()


def test_a_folder_with_a_release_key_is_built_and_sent(
    cloud_yaml: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pb.keygen(tmp_path / "release.key")
    rc = deploy(cloud_yaml, "--manifest", str(EXAMPLE), "--release-key", str(tmp_path / "release.key"))
    # built and signed; the (absent) broker's files are what stops it
    assert rc != 0 and "is a folder" not in capsys.readouterr().err
    assert seq_path(cloud_yaml.parent / "command.key").exists()
