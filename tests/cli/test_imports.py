"""The CLI stays fast by importing only what a command uses: `import meshems.cli` and
`meshems --help` load no schema library, table library, numpy, Raft or HTTP server, and an
API command on a config validated before loads neither pydantic nor PyYAML."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from meshems.adapters.api_tls import ensure_zone_pki
from meshems.adapters.config_file import load_config
from meshems.adapters.secret import init_secret
from tests.conftest import write_config

HEAVY = ("pydantic", "rich", "numpy", "pysyncobj", "aiohttp", "yaml", "http.client", "meshems.core.config")
RUN = """
import json, sys
{code}
print(json.dumps(sorted(m for m in {heavy!r} if m in sys.modules)), file=sys.stderr)
"""


def loaded(
    code: str, env: dict[str, str] | None = None
) -> tuple[list[str], subprocess.CompletedProcess[str]]:
    """Which HEAVY modules a fresh interpreter holds after running `code`."""
    out = subprocess.run([sys.executable, "-c", RUN.format(code=code, heavy=HEAVY)], capture_output=True,
                         text=True, timeout=60, env=env)  # fmt: skip
    return json.loads(out.stderr.strip().splitlines()[-1]), out


def call_main(*argv: str) -> str:
    return f"from meshems.cli import main\ntry:\n    main({list(argv)!r})\nexcept SystemExit:\n    pass"


def test_importing_the_cli_loads_nothing_heavy() -> None:
    mods, _ = loaded("import meshems.cli, meshems.cli.parser")
    assert mods == []


def test_help_loads_nothing_heavy() -> None:
    mods, out = loaded(call_main("--help"))
    assert mods == [] and "COMMAND" in out.stdout
    mods, out = loaded(call_main("setpoint", "set", "--help"))
    assert mods == [] and "Example: meshems setpoint set" in out.stdout


def test_an_api_command_on_a_validated_config_needs_no_schema(tmp_path: Path) -> None:
    path = write_config(tmp_path)  # nothing runs on its ports: every node is unreachable
    init_secret(load_config(path).secret_path)
    ensure_zone_pki(load_config(path))  # the CA the client checks nodes against
    env = {**os.environ, "MESHEMS_CACHE_DIR": str(tmp_path / "cache")}
    first, out = loaded(call_main("status", "--config", str(path), "-o", "json"), env)
    assert "pydantic" in first and "E_UNREACHABLE" in out.stderr  # validated, then cached
    again, out = loaded(call_main("status", "--config", str(path), "-o", "json"), env)
    assert again == [] and "E_UNREACHABLE" in out.stderr
    assert [r["reachable"] for r in json.loads(out.stdout)] == [False, False, False]
