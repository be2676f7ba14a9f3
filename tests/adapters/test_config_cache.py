"""The CLI's cache of validated configs: a hit skips validation and gives what the config
says; a changed file, a code change or a damaged entry is validated again (with the same
errors, naming file and key); a folder other users could write to is never used."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from meshems.adapters import config_cache
from meshems.adapters.config_cache import ClusterView, load_view
from meshems.adapters.config_file import load_config
from meshems.adapters.secret import init_secret
from meshems.core.errors import ConfigError
from tests.conftest import write_config


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("MESHEMS_CACHE_DIR", str(folder))
    return folder / "config"


@pytest.fixture
def validations(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The sources validated (a cache hit validates nothing)."""
    seen: list[str] = []
    real = config_cache.parse_config_text

    def counting(text: str, source: str):  # type: ignore[no-untyped-def]
        seen.append(source)
        return real(text, source)

    monkeypatch.setattr(config_cache, "parse_config_text", counting)
    return seen


def test_a_hit_gives_what_the_validated_config_says(
    tmp_path: Path, cache: Path, validations: list[str]
) -> None:
    path = write_config(tmp_path, nodes=2, joiners=1)
    first = load_view(path)
    assert validations == [str(path)] and len(list(cache.glob("*.json"))) == 1
    assert load_view(path) == first and validations == [str(path)]  # the hit validated nothing
    cfg = load_config(path)
    assert first == ClusterView.of(cfg)
    assert first.source == cfg.source and first.secret_path == cfg.secret_path
    assert [(n.id, n.api_endpoint, n.initial) for n in first.nodes] == [
        (n.id, n.api_endpoint, n.initial) for n in cfg.nodes
    ]
    assert first.raft.commit_timeout_s == cfg.raft.commit_timeout_s
    assert first.node("n2").api_port == cfg.node("n2").api_port
    secret = init_secret(cfg.secret_path).read_text().strip()
    assert load_view(path) == first
    assert secret not in "".join(e.read_text() for e in cache.glob("*.json"))  # a path, never the secret


def test_a_changed_file_is_validated_again_and_its_errors_name_file_and_key(
    tmp_path: Path, cache: Path, validations: list[str]
) -> None:
    path = write_config(tmp_path)
    port = load_view(path).node("n1").api_port
    path.write_text(path.read_text().replace(f"api_port: {port}", "api_port: 1999"))
    assert load_view(path).node("n1").api_port == 1999 and len(validations) == 2
    path.write_text(path.read_text().replace("raft:\n", "raft:\n  heartbeet_s: 1\n"))
    with pytest.raises(ConfigError) as info:
        load_view(path)
    assert info.value.message.startswith(f"{path}: raft.heartbeet_s: unknown key")
    with pytest.raises(ConfigError, match="config file not found"):
        load_view(tmp_path / "gone.yaml")


def test_the_same_text_elsewhere_resolves_its_own_paths(tmp_path: Path, cache: Path) -> None:
    path = write_config(tmp_path)
    other = tmp_path / "elsewhere" / "cluster.yaml"
    other.parent.mkdir()
    other.write_text(path.read_text())
    assert load_view(path).secret_path == tmp_path / "secret" / "raft.secret"
    assert load_view(other).secret_path == other.parent / "secret" / "raft.secret"


def test_a_code_change_or_a_damaged_entry_is_validated_again(
    tmp_path: Path, cache: Path, validations: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path)
    view = load_view(path)
    (entry,) = cache.glob("*.json")
    for damage in (
        "{not json",
        json.dumps({"key": json.loads(entry.read_text())["key"], "view": {"nodes": 1}}),
    ):
        entry.write_text(damage)
        assert load_view(path) == view
    monkeypatch.setattr(config_cache, "_code_fingerprint", lambda: "an upgraded schema")
    assert load_view(path) == view
    assert len(validations) == 4


def test_a_folder_others_can_write_to_is_not_used(
    tmp_path: Path, cache: Path, validations: list[str]
) -> None:
    path = write_config(tmp_path)
    load_view(path)
    cache.chmod(0o777)
    load_view(path)
    load_view(path)
    assert len(validations) == 3  # every call validated: the planted entry could lie


def test_the_cache_can_be_turned_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MESHEMS_CACHE_DIR", "off")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert config_cache.cache_folder() is None
    load_view(write_config(tmp_path))
    assert not (tmp_path / "xdg").exists()


def test_the_cache_is_private_and_bounded(
    tmp_path: Path, cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(config_cache, "MAX_ENTRIES", 4)
    for i in range(7):
        (tmp_path / f"c{i}").mkdir()
        load_view(write_config(tmp_path / f"c{i}", nodes=1))
    entries = list(cache.glob("*.json"))
    assert 2 <= len(entries) <= 4
    assert cache.stat().st_mode & 0o777 == 0o700
    assert all(e.stat().st_mode & 0o777 == 0o600 for e in entries)
    assert not list(cache.glob(".*.tmp"))


def test_an_unknown_node_is_named_as_the_config_names_it(tmp_path: Path, cache: Path) -> None:
    path = write_config(tmp_path)
    with pytest.raises(ConfigError) as cached:
        load_view(path).node("n9")
    with pytest.raises(ConfigError) as full:
        load_config(path).node("n9")
    assert cached.value.message == full.value.message and cached.value.context == full.value.context
    assert os.fspath(path) in cached.value.message
