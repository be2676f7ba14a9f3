"""The CLI package's shape: small modules that each say what they own, and nothing heavy
imported at module level (commands import what they use inside them). Import cycles are
checked for all of meshems/ by tests/test_architecture.py."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

CLI = Path(__file__).resolve().parents[2] / "meshems" / "cli"
#: what a meshems/cli module may import at module level (outside `if TYPE_CHECKING:`)
LIGHT = {"__future__", "argparse", "contextlib", "importlib", "itertools", "json", "pathlib", "re",
         "secrets", "sys", "time", "types", "typing"}  # fmt: skip


def top_level_imports(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:  # module level only: imports inside functions are the point
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted(CLI.glob("*.py")), ids=lambda p: p.name)
def test_a_cli_module_is_small_says_what_it_owns_and_imports_light(path: Path) -> None:
    text = path.read_text()
    tree = ast.parse(text)
    assert len(text.splitlines()) <= 400
    doc = ast.get_docstring(tree) or ""
    assert 2 <= len(doc.splitlines()) <= 5, doc
    for name in top_level_imports(tree):
        ok = name.split(".")[0] in LIGHT or name in ("meshems.cli.args", "meshems.cli.output")
        assert ok, f"{path.name} imports {name} at module level"
