"""`meshems cloud keygen | send` through the CLI's main, without a broker: the key made 0600
beside cloud.yaml and its line to pin, and what is refused before anything is published (a
key others can read, a command other than `policy set`, a bad expiry or policy field)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import yaml

from meshems.cli import main
from meshems.cloud.downlink import make_record, next_seq, seq_path


@pytest.fixture
def cloud_yaml(tmp_path: Path) -> Path:
    path = tmp_path / "cloud.yaml"
    path.write_text(yaml.safe_dump({"broker_host": "127.0.0.1", "broker_port": 1, "ca_file": "ca.crt",
                                    "cert_file": "c.crt", "key_file": "c.key"}))  # fmt: skip
    return path


def test_keygen_writes_a_0600_key_and_prints_the_line_to_pin(
    cloud_yaml: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["cloud", "keygen", "--config", str(cloud_yaml)]) == 0
    key, pub = cloud_yaml.parent / "command.key", cloud_yaml.parent / "command.pub"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert f"command_keys: [{pub.read_text().strip()}]" in capsys.readouterr().out
    assert main(["cloud", "keygen", "--config", str(cloud_yaml)]) == 2  # never replaced by accident
    assert "already exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["policy", "get"], "E_USAGE: the command is: policy set"),
        (["--expires", "soon", "policy", "set", "import_limit_kw=40"], "E_USAGE: --expires"),
        (["policy", "set", "no_such_field=1"], "E_CONFIG"),
    ],
)
def test_send_refuses_before_publishing(
    cloud_yaml: Path, capsys: pytest.CaptureFixture[str], args: list[str], words: str
) -> None:
    assert main(["cloud", "send", "--config", str(cloud_yaml), "--zone", "zone-a", *args]) == 2
    assert words in capsys.readouterr().err


def test_send_refuses_a_key_others_can_read(cloud_yaml: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["cloud", "keygen", "--config", str(cloud_yaml)]) == 0
    (cloud_yaml.parent / "command.key").chmod(0o644)
    rc = main(["cloud", "send", "--config", str(cloud_yaml), "--zone", "zone-a", "policy", "set",
               "import_limit_kw=40"])  # fmt: skip
    assert rc == 2 and "chmod 600" in capsys.readouterr().err
    assert not seq_path(cloud_yaml.parent / "command.key").exists()  # no sequence used up


def test_the_sequence_rises_per_zone_and_never_falls_below_the_clock(tmp_path: Path) -> None:
    path = tmp_path / "command.seq.json"
    first = next_seq(path, "zone-a", 1000.0)
    assert first == 1_000_000
    assert next_seq(path, "zone-a", 1000.0) == first + 1  # same millisecond: still rises
    assert next_seq(path, "zone-a", 999.0) == first + 2  # the clock went back: still rises
    assert next_seq(path, "zone-b", 1000.0) == 1_000_000  # each zone its own
    path.unlink()  # a lost file: the clock keeps it above what was sent a while ago
    assert next_seq(path, "zone-a", 1001.0) > first + 2
    rec = make_record("zone-a", "set_policy", {"values": {"import_limit_kw": 1.0}}, 5, 1000.4, 600)
    assert (rec.issued_at_s, rec.expires_at_s, len(rec.command_id)) == (1000, 1600, 32)
