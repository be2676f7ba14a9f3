"""Reading a cluster config file: YAML text -> `core.config.parse_config`.

Owns the file I/O and YAML parsing (duplicate keys are errors, not last-one-wins); the
schema lives in the pure `core.config`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from meshems.core.config import MAX_CONFIG_BYTES, ClusterConfig, parse_config
from meshems.core.errors import ConfigError


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses a key repeated in one mapping."""


def _mapping(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping)


def load_config(path: str | Path) -> ClusterConfig:
    """Read and validate a cluster config file."""
    return parse_config(load_yaml(path), str(path))


def load_yaml(path: str | Path) -> object:
    """Read a YAML file strictly (duplicate keys are errors); ConfigError names the file."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if size > MAX_CONFIG_BYTES:
            raise ConfigError(
                f"{p}: {size} bytes is too large for a config (at most {MAX_CONFIG_BYTES // 1024} KiB)",
                file=str(p),
            )
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: config file not found", file=str(p)) from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read config: {exc.strerror}", file=str(p)) from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start}): {exc.reason}", file=str(p)) from None
    return parse_yaml(text, str(p))


def parse_yaml(text: str, source: str) -> object:
    """Decode YAML text strictly (duplicate keys are errors); ConfigError names the source,
    line and column."""
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.YAMLError as exc:
        where = ""
        mark = getattr(exc, "problem_mark", None)
        if mark is not None:
            where = f" at line {mark.line + 1}, column {mark.column + 1}"
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}: invalid YAML{where}: {problem}", file=source) from None
