"""Reading config files: duplicate YAML keys and the reserved `source` key are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshems.adapters.config_file import load_config
from meshems.core.errors import ConfigError
from tests.conftest import write_config


def test_duplicate_keys_are_refused_with_their_line(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("zone: zone-t\n", "zone: zone-t\nzone: other\n"))
    with pytest.raises(ConfigError, match=r"line 3.*duplicate key 'zone'") as exc:
        load_config(path)
    assert str(path) in exc.value.message


def test_source_is_not_a_config_key(tmp_path: Path) -> None:
    path = write_config(tmp_path)
    path.write_text(path.read_text() + "source: /etc/elsewhere.yaml\n")
    with pytest.raises(ConfigError, match="source: unknown key"):
        load_config(path)


def test_a_good_file_loads_and_remembers_where_it_came_from(tmp_path: Path) -> None:
    path = write_config(tmp_path, nodes=2, joiners=1)
    cfg = load_config(path)
    assert cfg.source == str(path)
    assert [n.initial for n in cfg.nodes] == [True, True, False]
    assert cfg.secret_path == tmp_path / "secret" / "raft.secret"


# Found by an attack probe: a 50 MB config took 22 s before failing.
def test_an_oversized_config_is_refused_before_it_is_parsed(tmp_path: Path) -> None:
    import time

    big = tmp_path / "big.yaml"
    big.write_text("cluster: x\n" + "# padding\n" * 5_000_000)
    t0 = time.monotonic()
    with pytest.raises(ConfigError, match="too large for a config"):
        load_config(big)
    assert time.monotonic() - t0 < 1.0


def test_yaml_errors_keep_the_precise_message_of_the_pure_python_parser(tmp_path: Path) -> None:
    # libyaml parses good files; a bad one is parsed again in Python, whose message names the alias
    path = tmp_path / "alias.yaml"
    path.write_text("cluster: x\nzone: *nowhere\n")
    with pytest.raises(ConfigError, match=r"line 2, column 7: found undefined alias 'nowhere'"):
        load_config(path)


def test_reading_knows_the_schema_size_cap_without_importing_the_schema() -> None:
    from meshems.adapters import config_file
    from meshems.core import config

    assert config_file.MAX_CONFIG_BYTES == config.MAX_CONFIG_BYTES
