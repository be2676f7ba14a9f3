"""The CLI package's shape: small modules that each say what they own, no import circle, and
nothing heavy imported at module level (commands import what they use inside them)."""

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


def test_no_import_circle_inside_the_cli() -> None:
    """Every import of a meshems.cli module by another, also inside functions: a DAG."""
    graph: dict[str, set[str]] = {}
    for path in CLI.glob("*.py"):
        name = "meshems.cli" if path.stem == "__init__" else f"meshems.cli.{path.stem}"
        deps = graph.setdefault(name, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("meshems.cli"):
                deps.add(node.module)
                deps.update(f"meshems.cli.{a.name}" for a in node.names if node.module == "meshems.cli")
    deps_of = {k: {d for d in v if d in graph and d != k} for k, v in graph.items()}
    done: set[str] = set()

    def visit(name: str, stack: tuple[str, ...]) -> None:
        assert name not in stack, " -> ".join((*stack, name))
        if name not in done:
            for dep in deps_of[name]:
                visit(dep, (*stack, name))
            done.add(name)

    for name in graph:
        visit(name, ())
