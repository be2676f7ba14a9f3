"""The layering, enforced as an allowlist over every import in meshems/ (absolute, relative,
and those inside functions), as trio's test does:

- core imports only core, msgpack, numpy, the schema library and the stdlib modules of
  pure computation listed below;
- ports imports only core; sim only core, ports and sim;
- adapters import core, ports and logs, and another adapter only where the pair is named;
- node services import core, ports, adapters, ops and logs, never the CLI;
- cloud services (next to the broker) import core, adapters and logs;
- nothing below the CLI imports the CLI, and there is no import cycle in meshems/ at all;
- every module has a docstring and at most 400 lines.
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "meshems"

#: the stdlib of pure computation (pathlib: the config's paths are relative to its file;
#: ipaddress, difflib: the firewall's address sets and drift; hmac: constant-time token digests;
#: datetime: ISO 8601 times and time zones passed in as tzinfo, never the clock)
CORE_STDLIB = {
    "__future__", "abc", "bisect", "collections", "copy", "dataclasses", "datetime", "difflib", "enum",
    "functools", "hashlib", "heapq", "hmac", "io", "ipaddress", "itertools", "json", "math", "operator",
    "pathlib", "re", "statistics", "string", "struct", "types", "typing", "zlib",
}  # fmt: skip
#: highspy: the planner's LP solver (HiGHS), a computation library like numpy
CORE_THIRD_PARTY = {"msgpack", "numpy", "pydantic", "pydantic_core", "highspy"}
#: which meshems layers each layer may import (a layer is meshems.LAYER...)
LAYERS: dict[str, set[str]] = {
    "core": {"core"},
    "ports": {"core"},
    "logs": set(),
    "sim": {"core", "ports", "sim", "adapters"},  # adapters.sunspec: a chain encoded as nodes decode it
    "adapters": {"core", "ports", "logs", "adapters", "meshems"},
    "ops": {"core", "adapters", "logs", "ops"},
    "lab": {"core", "adapters", "ops", "logs", "lab"},
    "node": {"core", "ports", "adapters", "ops", "logs", "node"},
    "cloud": {"core", "adapters", "logs", "cloud"},  # services next to the broker, not on a gateway
    "cli": {"core", "ports", "adapters", "ops", "logs", "node", "lab", "sim", "cloud", "cli", "meshems"},
    "__main__": {"cli"},
    "profiles": set(),  # the built-in device profiles: YAML data
    "meshems": set(),
}
#: an adapter wraps one outside thing; these pairs share a piece on purpose
ADAPTER_PAIRS = {
    ("config_cache", "config_file"),  # the cache keys on the reader's own code
    ("consensus", "journal"), ("consensus", "prevote"), ("consensus", "raft_transport"),
    ("consensus", "raft_journal"),  # the Raft member is built from its parts
    ("raft_journal", "journal"), ("preflight", "raft_journal"),  # the journal format, free space
    ("mqtt_link", "mqtt_failures"), ("mqtt_link", "pki"),
    ("mqtt_subscriber", "mqtt_failures"), ("mqtt_subscriber", "mqtt_link"),  # the ingest's TLS
    ("mqtt_subscriber", "mqtt_fastpath"),  # paho's read path without its Properties
    ("outbox", "outbox_file"), ("outbox", "outbox_records"),
    ("pki", "atomic_write"), ("secret", "atomic_write"), ("wireguard", "atomic_write"),
    ("actuation_fence", "atomic_write"),  # the newest tokens written, durably
    ("poller", "modbus"), ("profiles", "config_file"),
    ("sunspec_device", "sunspec"), ("sunspec_device", "modbus"),  # a scan at start, over the bus
    ("sunspec_device", "atomic_write"), ("api_tls", "pki"),  # the zone CA makes the API's certificates
    ("payload_bundle", "atomic_write"), ("payload_bundle", "config_file"),  # release keys, manifest.yaml
    ("command_signing", "payload_bundle"),  # the cloud's command key is a release key's kind
    ("payload_store", "payload_bundle"),  # the store verifies what it writes
    ("payload_fetch", "payload_store"), ("payload_fetch", "payload_bundle"),  # fetched into the store
    ("sandbox", "sandbox_worker"),  # the supervisor and its worker share the framing
    ("payload_profiles", "profiles"), ("payload_profiles", "atomic_write"),  # a payload's profiles
}  # fmt: skip


@cache
def modules() -> dict[str, Path]:
    """meshems' modules by dotted name (read once: the checks ask for it per import)."""
    out = {}
    for p in sorted(PKG.rglob("*.py")):
        parts = list(p.relative_to(PKG.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


@cache
def imports_of(module: str) -> frozenset[str]:
    """Every module `module` imports, relative imports resolved, `from pkg import sub`
    counted as the submodule when `sub` is one."""
    mods = modules()
    path = mods[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in _runtime_nodes(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names if f"{mod}.{a.name}" in mods)
    return frozenset(names)


def _runtime_nodes(tree: ast.AST) -> list[ast.AST]:
    """Every node but those under `if TYPE_CHECKING:` (annotations only, never imported)."""
    out: list[ast.AST] = []
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            todo += node.orelse
            continue
        out.append(node)
        todo += ast.iter_child_nodes(node)
    return out


def layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "meshems"


ALL = sorted(modules())


@pytest.mark.parametrize("module", [m for m in ALL if layer(m) == "core"])
def test_core_imports_only_what_pure_computation_needs(module: str) -> None:
    for name in imports_of(module):
        top = name.split(".")[0]
        if top == "meshems":
            assert layer(name) == "core", f"{module} imports {name}"
        else:
            assert top in CORE_STDLIB | CORE_THIRD_PARTY, f"{module} imports {name} (not on the allowlist)"


@pytest.mark.parametrize("module", ALL)
def test_each_layer_imports_only_the_layers_below_it(module: str) -> None:
    allowed = LAYERS[layer(module)]
    for name in imports_of(module):
        if (name.startswith("meshems") and name in modules()) or name == "meshems":
            assert layer(name) in allowed, f"{module} ({layer(module)}) imports {name} ({layer(name)})"


@pytest.mark.parametrize("module", [m for m in ALL if layer(m) == "adapters"])
def test_adapters_import_another_adapter_only_in_a_named_pair(module: str) -> None:
    me = module.rpartition(".")[2]
    for name in imports_of(module):
        if name.startswith("meshems.adapters.") and name in modules():
            assert (me, name.rpartition(".")[2]) in ADAPTER_PAIRS, f"{module} imports {name}"


def test_there_is_no_import_cycle() -> None:
    graph = {m: {n for n in imports_of(m) if n in modules() and n != m} for m in ALL}
    # a package's __init__ importing its own submodules is not a cycle of the design
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = [*stack[stack.index(n) :], n]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if n not in state:
                visit(n)
        stack.pop()
        state[m] = 2

    for m in ALL:
        if m not in state:
            visit(m)


def test_the_checks_see_relative_imports_and_submodules() -> None:
    assert "meshems.adapters.raft_journal" in imports_of("meshems.adapters.consensus")
    assert "meshems.core.node_duties" in imports_of("meshems.core.node")


@pytest.mark.parametrize("module", ALL)
def test_every_module_has_a_docstring_and_at_most_400_lines(module: str) -> None:
    path = modules()[module]
    assert ast.get_docstring(ast.parse(path.read_text())), f"{module} has no docstring"
    assert len(path.read_text().splitlines()) <= 400, f"{module} has more than 400 lines"
