"""The layering rule, enforced: core imports nothing of meshems outside core (and no I/O
libraries); adapters never import the runtime or the CLI."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "meshems"
CORE_FORBIDDEN_STDLIB = {"socket", "threading", "subprocess", "asyncio", "random", "time", "os", "http"}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", sorted((PKG / "core").glob("*.py")), ids=lambda p: p.name)
def test_core_is_pure(path: Path) -> None:
    for name in imports_of(path):
        if name.startswith("meshems"):
            assert name.startswith("meshems.core"), f"{path.name} imports {name}"
        assert name.split(".")[0] not in CORE_FORBIDDEN_STDLIB, f"{path.name} imports {name}"
        assert not name.startswith(("pysyncobj", "pymodbus", "paho")), f"{path.name} imports {name}"


@pytest.mark.parametrize("path", sorted((PKG / "adapters").glob("*.py")), ids=lambda p: p.name)
def test_adapters_do_not_import_upwards(path: Path) -> None:
    for name in imports_of(path):
        assert not name.startswith(("meshems.runtime", "meshems.cli", "meshems.demo", "meshems.ops")), (
            f"{path.name} imports {name}"
        )


def test_every_module_has_a_docstring() -> None:
    missing = [
        str(p.relative_to(PKG))
        for p in PKG.rglob("*.py")
        if ast.get_docstring(ast.parse(p.read_text())) is None
    ]
    assert missing == []
