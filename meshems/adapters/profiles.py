"""Reading device-profile files: YAML text -> `core.profile_schema.parse_profile`.

Owns the file I/O: the built-in profiles shipped in `meshems/profiles/` (found with
importlib.resources) and operators' own profile files; duplicate YAML keys are errors, not
last-one-wins. The schema and its messages live in the pure `core.profile_schema`.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from meshems.adapters.config_file import parse_yaml
from meshems.core.errors import ConfigError
from meshems.core.profile_schema import parse_profile
from meshems.core.register_map import Profile

#: meshems' own flat maps, one per device kind
BUILTIN = ("meter", "battery", "pv", "relay")
#: real devices from their published register maps (each file names its source document)
DEVICES = ("sdm630", "waveshare-relay-8ch")


def _parse(text: str, source: str) -> Profile:
    return parse_profile(parse_yaml(text, source), source)


def load_profile(ref: str, base_dir: Path | None = None) -> Profile:
    """A built-in profile by name ("meter", "battery", "pv", "relay", "sdm630",
    "waveshare-relay-8ch") or a profile YAML file.

    Built-in names win over a file of the same name; write "./meter" to mean the file. A
    relative path is resolved against `base_dir` (usually the config file's folder), else
    against the working directory.
    """
    if ref in BUILTIN or ref in DEVICES:
        resource = resources.files("meshems.profiles") / f"{ref}.yaml"
        return _parse(resource.read_text(encoding="utf-8"), str(resource))
    path = Path(ref).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"{source}: profile file not found (built-in profiles: {', '.join(BUILTIN)})",
            file=source,
        ) from None
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read profile: {exc.strerror}", file=source) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{source}: not UTF-8 text (byte {exc.start}): {exc.reason}", file=source) from None
    return _parse(text, source)


def builtin_profiles() -> dict[str, Profile]:
    """The four built-in flat profiles by their short name."""
    return {name: load_profile(name) for name in BUILTIN}


def device_profiles() -> dict[str, Profile]:
    """The built-in profiles of real devices (SDM630 meter, Waveshare relay board) by short name."""
    return {name: load_profile(name) for name in DEVICES}
