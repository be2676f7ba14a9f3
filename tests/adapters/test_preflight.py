"""Start-up checks on the real machine: a data_dir that is a file, an address that does not
resolve or is not this machine's, too little free space. Each is an error that names the
file and the key (or the path and the free space), found by an attack probe as tracebacks."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from meshems.adapters.config_file import load_config
from meshems.adapters.preflight import check_addresses, check_data_dir, check_free_space
from meshems.core.errors import ConfigError, DiskFullError
from tests.conftest import write_config


def config(tmp_path: Path, **changes: object) -> Path:
    path = write_config(tmp_path)
    doc = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        section, _, field = key.partition(".")
        if section == "node0":
            doc["nodes"][0][field] = value
        else:
            doc[section][field] = value
    path.write_text(yaml.safe_dump(doc))
    return path


def test_a_data_dir_that_is_a_file_names_the_key(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("not a folder")
    cfg = load_config(config(tmp_path, **{"raft.data_dir": "blocker/data"}))
    with pytest.raises(ConfigError) as err:
        check_data_dir(cfg, "n1")
    assert err.value.exit_code == 2 and err.value.context["key"] == "raft.data_dir"
    assert "blocker is a file, not a folder" in err.value.message and str(cfg.source) in err.value.message


def test_the_data_dir_is_created_private(tmp_path: Path) -> None:
    cfg = load_config(config(tmp_path))
    folder = check_data_dir(cfg, "n2")
    assert folder.is_dir() and oct(folder.stat().st_mode & 0o777) == "0o700"


@pytest.mark.parametrize(
    ("address", "text"),
    [("no-such-host.invalid", "cannot resolve 'no-such-host.invalid'"),
     ("192.0.2.77", "not an address of this machine")],  # TEST-NET-1: never local
)  # fmt: skip
def test_a_bad_own_address_names_the_key(tmp_path: Path, address: str, text: str) -> None:
    cfg = load_config(config(tmp_path, **{"node0.address": address}))
    with pytest.raises(ConfigError) as err:
        check_addresses(cfg, "n1")
    assert err.value.context["key"] == "nodes[0].address" and text in err.value.message
    check_addresses(cfg, "n2")  # another node's own address is fine


def test_too_little_free_space_refuses_to_join(tmp_path: Path) -> None:
    cfg = load_config(config(tmp_path, **{"raft.min_free_mib": 1 << 20}))  # 1 TiB
    check_data_dir(cfg, "n1")
    with pytest.raises(
        DiskFullError, match=r"KiB free, the node needs at least 1048576 MiB \(raft.min_free_mib"
    ):
        check_free_space(cfg, "n1")
