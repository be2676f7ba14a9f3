"""NodeClient without a cluster: status of nodes that do not answer, in config order, and an
unexpected error in one node's thread raised to the caller."""

from __future__ import annotations

from pathlib import Path

import pytest

from meshems.adapters.config_cache import ClusterView, NodeView, RaftView
from meshems.ops.client import NodeClient
from tests.conftest import free_ports


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from meshems.adapters import pki

    folder = tmp_path_factory.mktemp("pki")
    pki.init_ca(folder, "test")
    return folder


def view(ports: list[int], tls: Path) -> ClusterView:
    nodes = tuple(NodeView(f"n{i + 1}", "127.0.0.1", p, True) for i, p in enumerate(ports))
    return ClusterView("test", "zone-t", "<memory>", Path("secret"), RaftView(5.0), nodes, tls)


def test_status_all_marks_silent_nodes_unreachable_in_config_order(tls: Path) -> None:
    client = NodeClient(view(free_ports(3), tls), "s" * 64, timeout_s=0.5)
    rows = client.status_all(timeout_s=0.5)
    assert [r["id"] for r in rows] == ["n1", "n2", "n3"]
    assert all(r["reachable"] is False and r["endpoint"].startswith("127.0.0.1:") for r in rows)
    assert client.leader_with_quorum() is None


def test_an_unexpected_error_in_a_status_thread_reaches_the_caller(
    monkeypatch: pytest.MonkeyPatch, tls: Path
) -> None:
    client = NodeClient(view(free_ports(2), tls), "s" * 64)
    monkeypatch.setattr(client, "request", lambda node, *a, **k: (200, ["not", "a", "mapping"]))
    with pytest.raises(TypeError):
        client.status_all()
