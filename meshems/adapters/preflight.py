"""Start-up checks of a node's environment, before anything binds or writes.

Owns the checks that need the machine (the pure config cannot know them): the data folder
is a folder we can write, its filesystem has room, the node's own address resolves and is
bindable. Each failure is a ConfigError naming the file and the key (exit 2), or a
DiskFullError naming the path and the free space: never a traceback later.
"""

from __future__ import annotations

import errno
import socket
from pathlib import Path

from meshems.adapters.raft_journal import free_bytes
from meshems.core.config import ClusterConfig
from meshems.core.errors import ConfigError, DiskFullError

MIB = 1024 * 1024


def check_data_dir(cfg: ClusterConfig, node_id: str) -> Path:
    """Create the node's data folder (0700) or say exactly why it cannot be one."""
    folder = cfg.data_dir(node_id)
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [folder, *folder.parents] if p.exists() and not p.is_dir()), folder)
        raise ConfigError(
            f"{cfg.source}: raft.data_dir: {blocker} is a file, not a folder (the node keeps its journal in "
            f"{folder})",
            file=cfg.source,
            key="raft.data_dir",
        ) from None
    except PermissionError as exc:
        raise ConfigError(
            f"{cfg.source}: raft.data_dir: cannot create {folder}: {exc.strerror} (run the node as a user "
            "that owns the folder)",
            file=cfg.source,
            key="raft.data_dir",
        ) from None
    return folder


def check_free_space(cfg: ClusterConfig, node_id: str) -> None:
    """Refuse to join with less than raft.min_free_mib free: a node that cannot journal
    what it acknowledges must not be a member."""
    folder = cfg.data_dir(node_id)
    free = free_bytes(folder)
    want = cfg.raft.min_free_mib * MIB
    if free < want:
        raise DiskFullError(
            f"{folder}: only {free // 1024} KiB free, the node needs at least {cfg.raft.min_free_mib} MiB "
            f"(raft.min_free_mib in {cfg.source}) to journal what it acknowledges; free some space",
            path=str(folder),
        )


def check_addresses(cfg: ClusterConfig, node_id: str) -> None:
    """The node's own bind address must resolve and belong to this machine."""
    index = next(i for i, n in enumerate(cfg.nodes) if n.id == node_id)
    node = cfg.nodes[index]
    key = f"nodes[{index}].{'overlay_address' if node.overlay_address else 'address'}"
    try:
        infos = socket.getaddrinfo(node.bind_host, node.api_port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ConfigError(
            f"{cfg.source}: {key}: cannot resolve {node.bind_host!r}: {exc.strerror}",
            file=cfg.source,
            key=key,
        ) from None
    family, _, _, _, sockaddr = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((sockaddr[0], 0))
        except OSError as exc:
            if exc.errno != errno.EADDRNOTAVAIL:
                raise
            raise ConfigError(
                f"{cfg.source}: {key}: {node.bind_host} ({sockaddr[0]}) is not an address of this machine "
                "(a node listens on its own address only)",
                file=cfg.source,
                key=key,
            ) from None


def preflight(cfg: ClusterConfig, node_id: str) -> None:
    check_addresses(cfg, node_id)
    check_data_dir(cfg, node_id)
    check_free_space(cfg, node_id)
