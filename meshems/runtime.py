"""Moved: the node daemon lives in `meshems.node.daemon` (kept until the CLI imports it there)."""

from meshems.node.daemon import run_node

__all__ = ["run_node"]
