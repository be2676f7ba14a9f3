"""Reading a cluster config file: YAML text -> `core.config.parse_config`.

Owns the file I/O and YAML parsing (duplicate keys are errors, not last-one-wins; libyaml's
C parser when present, the pure-Python one for the error message); the schema lives in the
pure `core.config`. PyYAML and the schema are imported only when a file is parsed.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import TYPE_CHECKING, Any

from meshems.core.errors import ConfigError

if TYPE_CHECKING:
    from meshems.core.config import ClusterConfig

#: the largest config file read (a config of 1000 gateways is well under 1 MiB); the same
#: number as core.config.MAX_CONFIG_BYTES, kept here so reading needs no schema import
MAX_CONFIG_BYTES = 1024 * 1024


def _mapping(loader: Any, node: Any, deep: bool = False) -> dict[Any, Any]:
    import yaml

    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


@functools.cache
def _loaders() -> tuple[type, type]:
    """(libyaml's SafeLoader when present, the pure-Python SafeLoader), both refusing a key
    repeated in one mapping. The pure-Python one is for messages: it names what it found
    (e.g. the undefined alias) where libyaml says less. Built on first use (PyYAML costs
    about 20 ms to import)."""
    import yaml

    fast = type("FastStrictLoader", (getattr(yaml, "CSafeLoader", yaml.SafeLoader),), {})
    precise = type("StrictLoader", (yaml.SafeLoader,), {})
    for loader in (fast, precise):
        loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)
    return fast, precise


def load_config(path: str | Path) -> ClusterConfig:
    """Read and validate a cluster config file."""
    return parse_config_text(read_config_text(path), str(path))


def parse_config_text(text: str, source: str) -> ClusterConfig:
    """Validate config text read from `source`; ConfigError names the file and the key."""
    from meshems.core.config import parse_config

    return parse_config(parse_yaml(text, source), source)


def load_yaml(path: str | Path) -> object:
    """Read a YAML file strictly (duplicate keys are errors); ConfigError names the file."""
    return parse_yaml(read_config_text(path), str(path))


def read_config_text(path: str | Path) -> str:
    """The text of a config file, refused before it is parsed when it is too large, missing,
    unreadable or not UTF-8 (ConfigError naming the file)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{p}: {size} bytes is too large for a config (at most {MAX_CONFIG_BYTES // 1024} KiB)",
                file=str(p),
            )
        return p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found", file=str(p)) from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror}", file=str(p)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start}): {exc.reason}", file=str(p)) from None


def parse_yaml(text: str, source: str) -> object:
    """Decode YAML text strictly (duplicate keys are errors); ConfigError names the source,
    line and column."""
    import yaml

    fast, precise = _loaders()
    try:
        return yaml.load(text, Loader=fast)
    except yaml.YAMLError:
        pass
    try:  # the same text again on the pure-Python parser, for its more precise message
        return yaml.load(text, Loader=precise)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}", file=source) from None
