"""`meshems io probe` against a `meshems sim` process serving an SDM630 meter (float32 input
registers) and an 8-channel relay board (coils): reads every table with no config, writes a
coil and a register only behind --yes, and names the failure when nothing answers."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import free_ports
from tests.integration.conftest import meshems_cli, sim_process

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def sim_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    folder = tmp_path_factory.mktemp("probe")
    (port,) = free_ports(1)
    site = {
        "site": {"seed": 3, "start_h": 12, "loads": 8},
        "servers": [{"id": "a", "type": "tcp", "host": "127.0.0.1", "port": port}],
        "devices": [
            {"server": "a", "unit_id": 1, "model": "meter", "profile": "sdm630"},
            {"server": "a", "unit_id": 2, "model": "battery", "profile": "battery"},
            {"server": "a", "unit_id": 4, "model": "relay", "profile": "waveshare-relay-8ch"},
        ],
    }
    with sim_process(folder, site):
        yield port


def probe(port: int, *args: str) -> subprocess.CompletedProcess[str]:
    return meshems_cli("io", "probe", "--host", "127.0.0.1", "--port", str(port), *args, timeout=30)


def values(res: subprocess.CompletedProcess[str]) -> list:
    assert res.returncode == 0, res.stderr
    return [v["value"] for v in json.loads(res.stdout)["values"]]


def test_float32_input_registers_of_a_meter_read_with_no_config(sim_port: int) -> None:
    volts = values(probe(sim_port, "--unit", "1", "--table", "input", "--address", "0", "--count", "3",
                         "--type", "float32", "-o", "json"))  # fmt: skip
    assert len(volts) == 3 and all(200 < v < 260 for v in volts), volts
    swapped = values(probe(sim_port, "--unit", "1", "--table", "input", "--address", "0", "--type", "float32",
                           "--order", "CDAB", "-o", "json"))  # fmt: skip
    assert not 200 < swapped[0] < 260  # the wrong word order shows as a wrong value
    table = probe(sim_port, "--unit", "1", "--table", "input", "--address", "0", "--type", "float32")
    assert table.returncode == 0 and "input, float32 ABCD" in table.stdout


def test_a_coil_is_written_only_with_yes_then_read_back(sim_port: int) -> None:
    assert values(probe(sim_port, "--unit", "4", "--table", "coil", "--address", "2", "-o", "json")) == [1.0]
    refused = probe(sim_port, "--unit", "4", "--table", "coil", "--address", "2", "--write", "0")
    assert refused.returncode == 2 and "--yes" in refused.stderr
    assert values(probe(sim_port, "--unit", "4", "--table", "coil", "--address", "2", "-o", "json")) == [1.0]
    written = probe(sim_port, "--unit", "4", "--table", "coil", "--address", "2", "--write", "0", "--yes",
                    "-o", "json")  # fmt: skip
    assert values(written) == [0.0]
    inputs = values(probe(sim_port, "--unit", "4", "--table", "discrete", "--address", "0", "--count", "8",
                          "-o", "json"))  # fmt: skip
    assert len(inputs) == 8 and set(inputs) <= {0.0, 1.0}


def test_a_register_write_goes_through_its_type_and_a_read_only_table_is_refused(sim_port: int) -> None:
    # the battery's setpoint (holding, int32 in W), written with function 16 and read back
    written = probe(sim_port, "--unit", "2", "--address", "40075", "--type", "int32", "--scale", "0.001",
                    "--write", "12.5", "--yes", "-o", "json")  # fmt: skip
    assert values(written) == [12.5]
    refused = probe(sim_port, "--unit", "1", "--table", "input", "--address", "0", "--write", "1", "--yes")
    assert refused.returncode == 2 and "read-only" in refused.stderr


def test_nothing_listening_and_a_missing_unit_are_named(sim_port: int, tmp_path: Path) -> None:
    (closed,) = free_ports(1)
    res = probe(closed, "--address", "0", "--timeout", "0.3")
    assert res.returncode == 1 and "E_CONNECT" in res.stderr, res.stderr
    res = probe(sim_port, "--unit", "9", "--address", "0", "--timeout", "0.3")
    assert res.returncode == 1 and ("E_TIMEOUT" in res.stderr or "E_EXCEPTION" in res.stderr), res.stderr
    res = meshems_cli("io", "probe", "--address", "0")
    assert res.returncode == 2 and "--host" in res.stderr
