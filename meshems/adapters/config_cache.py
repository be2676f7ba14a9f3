"""The command line's cache of validated configs: what a command needs to reach the node API
(nodes' API endpoints, zone, secret path, commit timeout), keyed by a hash of the file's
content, so a call on an unchanged file skips PyYAML and the pydantic schema (about 0.2 s).
A changed file, meshems schema, pydantic or PyYAML is validated again, with the same errors.
Owns the cache folder (0700, never shared with another user); must not cache the secret.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from importlib.machinery import PathFinder
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import meshems
from meshems.adapters.config_file import parse_config_text, read_config_text
from meshems.core.errors import ConfigError

if TYPE_CHECKING:
    from meshems.core.config import ClusterConfig

#: bump when the cached fields or their meaning change
CACHE_VERSION = 1
#: entries kept (one per config file path); the oldest half goes when there are more
MAX_ENTRIES = 256
#: libraries whose upgrade can change what validates
_LIBRARIES = ("pydantic", "pydantic_core", "yaml")


class NodeView(NamedTuple):
    """A node's API endpoint, named as on `core.config.NodeConfig`. (Views are NamedTuples,
    not dataclasses: dataclasses cost 12 ms of imports and 2 ms per class.)"""

    id: str
    bind_host: str
    api_port: int
    initial: bool

    @property
    def api_endpoint(self) -> str:
        return f"{self.bind_host}:{self.api_port}"


class RaftView(NamedTuple):
    commit_timeout_s: float


class ClusterView(NamedTuple):
    """The part of a validated `ClusterConfig` the API commands read, under the same names,
    so `ops.client.NodeClient` and the commands take either."""

    cluster: str
    zone: str
    source: str
    secret_path: Path
    raft: RaftView
    nodes: tuple[NodeView, ...]
    tls_dir: Path

    def node(self, node_id: str) -> NodeView:
        for n in self.nodes:
            if n.id == node_id:
                return n
        known = ", ".join(n.id for n in self.nodes)
        raise ConfigError(f"{self.source}: no node {node_id!r} in nodes (known: {known})", key="nodes")

    @classmethod
    def of(cls, cfg: ClusterConfig) -> ClusterView:
        nodes = tuple(NodeView(n.id, n.bind_host, n.api_port, n.initial) for n in cfg.nodes)
        raft = RaftView(cfg.raft.commit_timeout_s)
        return cls(cfg.cluster, cfg.zone, cfg.source, cfg.secret_path, raft, nodes, cfg.tls_dir)

    def to_json(self) -> dict[str, Any]:
        return {
            "cluster": self.cluster,
            "zone": self.zone,
            "secret_path": str(self.secret_path),
            "commit_timeout_s": self.raft.commit_timeout_s,
            "nodes": [[n.id, n.bind_host, n.api_port, n.initial] for n in self.nodes],
            "tls_dir": str(self.tls_dir),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any], source: str) -> ClusterView:
        """The view of a cache entry; ValueError when it is not one this version wrote."""
        nodes = tuple(NodeView(*n) for n in doc["nodes"])
        view = cls(doc["cluster"], doc["zone"], source, Path(doc["secret_path"]),
                   RaftView(doc["commit_timeout_s"]), nodes, Path(doc["tls_dir"]))  # fmt: skip
        types_ok = all(
            isinstance(v, str) for v in (view.cluster, view.zone, doc["secret_path"], doc["tls_dir"])
        )
        types_ok &= isinstance(view.raft.commit_timeout_s, int | float) and bool(nodes)
        types_ok &= all(
            isinstance(n.id, str) and isinstance(n.bind_host, str) and type(n.api_port) is int
            and type(n.initial) is bool
            for n in nodes
        )  # fmt: skip
        if not types_ok:
            raise ValueError("not a cache entry of this version")
        return view


def load_view(path: str | Path) -> ClusterView:
    """The API view of the config file at `path`: from the cache when this exact content was
    validated before under the same code, else validated now (ConfigError naming the file
    and the key, as `adapters.config_file.load_config`) and cached."""
    text = read_config_text(path)  # the same errors as load_config for a missing or huge file
    folder = cache_folder()
    real = os.path.realpath(path)
    key = _key(real, text)
    entry = folder / (hashlib.sha256(real.encode()).hexdigest()[:32] + ".json") if folder else None
    if entry is not None:
        view = _read(entry, key, str(path))
        if view is not None:
            return view
    view = ClusterView.of(parse_config_text(text, str(path)))
    if entry is not None:
        _write(entry, key, view)
    return view


def cache_folder() -> Path | None:
    """MESHEMS_CACHE_DIR (`off` disables the cache), else $XDG_CACHE_HOME/meshems or
    ~/.cache/meshems; its `config` folder. None when disabled or when the folder is not this
    user's own (another user could plant entries there)."""
    raw = os.environ.get("MESHEMS_CACHE_DIR")
    if raw is not None and raw.strip().lower() in ("", "off", "0", "no", "false"):
        return None
    try:
        home_cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        base = Path(raw) if raw else Path(home_cache) / "meshems"
    except RuntimeError:  # no home folder
        return None
    return base / "config"


def _key(real_path: str, text: str) -> str:
    """What a validation result depends on: the text, where the file is (relative paths
    resolve from its folder, `~` from HOME) and the code that validates it."""
    h = hashlib.sha256()
    for part in (str(CACHE_VERSION), meshems.__version__, _code_fingerprint(), real_path,
                 os.environ.get("HOME", ""), text):  # fmt: skip
        h.update(part.encode("utf-8", "surrogateescape") + b"\0")
    return h.hexdigest()


def _code_fingerprint() -> str:
    """Size and mtime of every module of meshems.core, of the config reader and of the
    libraries' packages: an edit or an upgrade changes it (and so every key)."""
    here = Path(__file__).resolve().parent
    files = [here / "config_file.py", here / "config_cache.py"]
    files += sorted(p for p in (here.parent / "core").iterdir() if p.suffix == ".py")
    for lib in _LIBRARIES:
        spec = PathFinder.find_spec(lib)
        if spec is not None and spec.origin:
            files.append(Path(spec.origin))
    parts = []
    for f in files:
        try:
            st = f.stat()
            parts.append(f"{f}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{f}:missing")
    return "|".join(parts)


def _private(folder: Path) -> bool:
    """True when `folder` is a directory of this user that nobody else may write to."""
    try:
        st = folder.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o022


def _read(entry: Path, key: str, source: str) -> ClusterView | None:
    if not _private(entry.parent):
        return None
    try:
        doc = json.loads(entry.read_bytes())
        if doc.get("key") != key:
            return None
        return ClusterView.from_json(doc["view"], source)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # missing, torn or foreign entry: validate the file again


def _write(entry: Path, key: str, view: ClusterView) -> None:
    """Store an entry atomically (a temp file renamed over it); best effort, silent."""
    folder = entry.parent
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError:
        return
    if not _private(folder):
        return
    tmp = folder / f".{entry.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, json.dumps({"key": key, "view": view.to_json()}).encode())
        finally:
            os.close(fd)
        os.replace(tmp, entry)
        _prune(folder)
    except OSError:
        tmp.unlink(missing_ok=True)


def _prune(folder: Path) -> None:
    entries = [e for e in os.scandir(folder) if e.name.endswith(".json")]
    if len(entries) <= MAX_ENTRIES:
        return
    entries.sort(key=lambda e: e.stat().st_mtime_ns)
    for e in entries[: len(entries) - MAX_ENTRIES // 2]:
        Path(e.path).unlink(missing_ok=True)
