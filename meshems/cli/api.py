"""How the API commands reach the cluster: the config's cached API view, the Raft secret,
a `NodeClient`, request ids, and the first node that answers a GET.

Must stay cheap to import: no pydantic, PyYAML, rich or http.client on this path.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from meshems.adapters.config_cache import ClusterView
    from meshems.ops.client import NodeClient


def view(args: Any) -> ClusterView:
    """The API view of `--config`: validated now, or cached from an earlier validation of
    the same content (ConfigError naming the file and the key either way)."""
    from meshems.adapters.config_cache import load_view

    return load_view(args.config)


def client_for(cfg: ClusterView, args: Any) -> NodeClient:
    """A client with the caller's credentials: `--token`/`--cert --key` (or MESHEMS_TOKEN,
    MESHEMS_CERT, MESHEMS_KEY); without them the config's operator certificate when this user
    can read it, and the cluster secret's token (SecretError when it is missing or exposed)."""
    import os

    from meshems.adapters.secret import read_secret
    from meshems.ops.client import NodeClient

    token = getattr(args, "token", None) or os.environ.get("MESHEMS_TOKEN")
    cert = getattr(args, "cert", None) or os.environ.get("MESHEMS_CERT")
    key = getattr(args, "key", None) or os.environ.get("MESHEMS_KEY")
    if token or cert:
        return NodeClient(cfg, None, token=token, cert=cert or "", key=key)
    return NodeClient(cfg, read_secret(cfg.secret_path, args.config))


def connect(args: Any) -> tuple[ClusterView, NodeClient]:
    """`view(args)` and `client_for` it."""
    cfg = view(args)
    return cfg, client_for(cfg, args)


def new_rid() -> str:
    """A fresh request id: `cli-` and 32 hex digits."""
    return f"cli-{secrets.token_hex(16)}"


def first_answer(client: NodeClient, prefer: str | None, path: str) -> tuple[int, dict[str, Any]]:
    """GET `path` from `prefer` first, then the other nodes; E_UNREACHABLE when none answers."""
    from meshems.core.errors import MeshemsError

    last = "no node answered"
    for node in client.ordered_nodes(prefer):
        try:
            return client.request(node, "GET", path)
        except MeshemsError as exc:
            last = exc.message
    raise MeshemsError(f"E_UNREACHABLE: {last}")
