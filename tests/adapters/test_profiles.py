"""Reading profile files: built-ins by name, operators' own files by path (relative to a base
folder), and every file-level failure as a ConfigError that names the file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from meshems.adapters.profiles import BUILTIN, builtin_profiles, load_profile
from meshems.core.errors import ConfigError

CUSTOM = {
    "name": "my-meter",
    "kind": "meter",
    "description": "a site meter with a float32 map",
    "points": [
        {"name": "P", "address": 0, "type": "float32", "word_order": "little", "unit": "kW"},
        {"name": "F", "address": 2, "type": "float32", "word_order": "little", "unit": "Hz"},
    ],
    "roles": {"power_kw": "P", "frequency_hz": "F"},
}


def write(folder: Path, data: object, name: str = "p.yaml") -> Path:
    path = folder / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data), encoding="utf-8")
    return path


def load_error(ref: str | Path, base_dir: Path | None = None) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_profile(str(ref), base_dir)
    assert info.value.exit_code == 2
    return info.value


def test_builtins_load_by_name() -> None:
    profiles = builtin_profiles()
    assert list(profiles) == list(BUILTIN) == ["meter", "battery", "pv", "relay"]
    assert {k: p.name for k, p in profiles.items()} == {
        "meter": "grid-meter",
        "battery": "battery-inverter",
        "pv": "pv-inverter",
        "relay": "relay-controller",
    }
    assert all(p.kind == k for k, p in profiles.items())
    assert load_profile("battery") == profiles["battery"]


def test_a_custom_profile_loads_from_a_file(tmp_path: Path) -> None:
    profile = load_profile(str(write(tmp_path, CUSTOM)))
    assert (profile.name, profile.kind, profile.sunspec) == ("my-meter", "meter", "")
    power = profile.role("power_kw")
    assert power is not None and (power.type, power.word_order, power.address) == ("float32", "little", 0)


def test_relative_paths_resolve_against_base_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "etc" / "meshems"
    (folder / "profiles").mkdir(parents=True)
    write(folder / "profiles", CUSTOM)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_profile("profiles/p.yaml", folder).name == "my-meter"
    assert (
        load_profile(str(folder / "profiles" / "p.yaml"), tmp_path / "other").name == "my-meter"
    )  # absolute
    err = load_error("profiles/p.yaml")  # no base_dir: the working directory
    assert err.message.startswith("profiles/p.yaml: profile file not found")


def test_builtin_names_win_over_files_of_the_same_name(tmp_path: Path) -> None:
    write(tmp_path, CUSTOM, name="meter")
    assert load_profile("meter", tmp_path).name == "grid-meter"
    assert load_profile("./meter", tmp_path).name == "my-meter"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    err = load_error(path)
    assert err.message == f"{path}: profile file not found (built-in profiles: meter, battery, pv, relay)"
    assert err.context["file"] == str(path) and err.code == "E_CONFIG"
    assert load_error("batery", tmp_path).message.startswith(f"{tmp_path / 'batery'}: profile file not found")


def test_a_directory_is_not_a_profile(tmp_path: Path) -> None:
    assert load_error(tmp_path).message.startswith(f"{tmp_path}: cannot read profile")


def test_non_utf8_file(tmp_path: Path) -> None:
    path = tmp_path / "latin1.yaml"
    path.write_bytes("name: caf\xe9\n".encode("latin-1"))
    assert load_error(path).message.startswith(f"{path}: not UTF-8")


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ("name: x\nkind: meter\n\tbad: 1\n", 3),
        ("name: x\npoints: [a, b\nroles: {}\n", 3),
        ("name: 'unterminated\n", 2),
    ],
    ids=["tab", "unclosed list", "unterminated quote"],
)
def test_invalid_yaml_names_the_line(tmp_path: Path, text: str, line: int) -> None:
    path = write(tmp_path, text)
    assert load_error(path).message.startswith(f"{path}: invalid YAML at line {line}, column ")


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path, yaml.safe_dump(CUSTOM) + "kind: battery\n")
    err = load_error(path)
    assert err.message.startswith(f"{path}: invalid YAML at line ")
    assert "duplicate key 'kind'" in err.message


@pytest.mark.parametrize("text", ["", "# nothing\n", "- a\n- b\n", "42\n"])
def test_the_document_must_be_a_mapping(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    assert load_error(path).message == f"{path}: the profile must be a YAML mapping"


def test_schema_errors_name_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, {**CUSTOM, "roles": {"power_kw": "Q"}})
    err = load_error(path)
    assert err.message == f"{path}: roles.power_kw: no point named 'Q' (known: P, F)"
    assert err.context == {"file": str(path), "key": "roles.power_kw"}
