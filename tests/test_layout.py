"""Tests that start processes, brokers or namespaces are marked and live in tests/integration/
or tests/lab/: `scripts/test` collects only those folders for its second part, so a marked
test anywhere else would never run there; its first part skips tests/integration, so every
test file there must be marked."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent
HOMES = {TESTS / "integration", TESTS / "lab"}
MARKS = {"integration", "lab"}


def marks_in(path: Path) -> set[str]:
    """The names of `pytest.mark.X` attributes a test file uses (module marks and decorators)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Attribute)
            and node.value.attr == "mark"
            and node.attr in MARKS
        ):
            found.add(node.attr)
    return found


def test_marks_in_finds_module_and_decorator_marks(tmp_path: Path) -> None:
    f = tmp_path / "t.py"
    marked = "import pytest\npytestmark = [pytest.mark.lab]\n@pytest.mark.integration\ndef test_x(): ...\n"
    f.write_text(marked)
    assert marks_in(f) == {"lab", "integration"}
    f.write_text("import pytest\n@pytest.mark.slow\ndef test_x(): ...\n")
    assert marks_in(f) == set()


def test_every_process_test_lives_in_integration_or_lab() -> None:
    stray = [
        str(p.relative_to(TESTS))
        for p in sorted(TESTS.rglob("*.py"))
        if not any(home in p.parents for home in HOMES) and p != Path(__file__) and marks_in(p)
    ]
    assert stray == [], f"marked integration/lab outside tests/integration and tests/lab: {stray}"


def test_every_test_file_in_integration_is_marked() -> None:
    unmarked = [p.name for p in sorted((TESTS / "integration").glob("test_*.py")) if not marks_in(p)]
    assert unmarked == [], f"tests/integration files without an integration or lab mark: {unmarked}"
