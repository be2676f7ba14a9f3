"""Unit tests for `meshems.sim.sitefile`: validating a simulated site file.

`parse_site` turns a decoded YAML document into frozen objects or raises a ConfigError
whose message names the file and the offending key. The tables below pin down each
cross-reference rule (servers, unit ids, clones, faults) and each error's location.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from meshems.core.errors import ConfigError
from meshems.sim.sitefile import DeviceSpec, FaultSpec, ServerSpec, SiteFile, SiteParams, parse_site

SITE_N1 = Path(__file__).resolve().parents[2] / "cluster-configs" / "sites" / "site-n1.yaml"
SOURCE = "sites/test-site.yaml"


def minimal(**over: Any) -> dict[str, Any]:
    """The smallest valid site: one TCP server with one meter."""
    doc: dict[str, Any] = {
        "servers": [{"id": "main", "type": "tcp", "port": 15020}],
        "devices": [{"server": "main", "unit_id": 1, "model": "meter", "profile": "meter"}],
    }
    doc.update(over)
    return doc


def server(id_: str = "main", type_: str = "tcp", **over: Any) -> dict[str, Any]:
    return {"id": id_, "type": type_, **({"port": 15020} if type_ != "rtu-pty" else {}), **over}


def device(unit: int, server_: str = "main", model: str = "meter", **over: Any) -> dict[str, Any]:
    return {"server": server_, "unit_id": unit, "model": model, "profile": model, **over}


def fault(unit: int, kind: str = "silent", server_: str = "main", **over: Any) -> dict[str, Any]:
    return {"server": server_, "unit_id": unit, "kind": kind, **over}


# --- valid files ---------------------------------------------------------------------------


def test_the_shipped_site_of_n1_parses() -> None:
    site = parse_site(yaml.safe_load(SITE_N1.read_text()), str(SITE_N1))
    assert isinstance(site, SiteFile)
    assert site.site.seed == 1
    assert site.site.load_shape == "office"
    assert site.site.soc_pct == 60
    assert [(s.id, s.type, s.host, s.port) for s in site.servers] == [("main", "tcp", "127.0.0.1", 15021)]
    assert [(d.server, d.unit_id, d.model, d.count) for d in site.devices] == [
        ("main", 1, "meter", 1),
        ("main", 2, "battery", 1),
        ("main", 3, "pv", 1),
        ("main", 4, "relay", 1),
    ]
    assert site.faults == ()
    assert (site.control.host, site.control.port) == ("127.0.0.1", 15091)


def test_a_minimal_document_gets_the_defaults() -> None:
    site = parse_site(minimal(), SOURCE)
    assert site.site == SiteParams()
    assert site.site.speed == 1.0 and site.site.tick_s == 0.1 and site.site.loads == 4
    assert site.servers == (ServerSpec(id="main", type="tcp", host="127.0.0.1", port=15020),)
    assert site.devices == (DeviceSpec(server="main", unit_id=1, model="meter", profile="meter"),)
    assert site.faults == ()
    assert site.control.port == 0  # no control API


def test_a_parsed_site_is_frozen() -> None:
    site = parse_site(minimal(), SOURCE)
    with pytest.raises(ValidationError):
        site.site.seed = 5  # type: ignore[misc]
    assert isinstance(site.servers, tuple)


VALID = [
    ("rtu-pty with a link", minimal(servers=[server(type_="rtu-pty", link="/dev/pts/7")])),
    ("rtu-over-tcp with a port", minimal(servers=[server(type_="rtu-over-tcp")])),
    ("port zero (pick a free one)", minimal(servers=[server(port=0)])),
    ("clones up to unit 247", minimal(devices=[device(240, count=8)])),
    ("one device at unit 247", minimal(devices=[device(247)])),
    ("clones next to each other", minimal(devices=[device(1, count=3), device(4, model="pv", count=2)])),
    (
        "same unit id on two servers",
        minimal(servers=[server("a"), server("b", port=15030)], devices=[device(1, "a"), device(1, "b")]),
    ),
    ("a fault on a device", minimal(faults=[fault(1, "slow", delay_s=5)])),
    ("a fault on a clone", minimal(devices=[device(1, count=4)], faults=[fault(4, "exception", code=4)])),
    ("every fault kind", minimal(faults=[fault(1, k) for k in ("none", "silent", "garbage", "crc")])),
    ("site parameters", minimal(site={"seed": 7, "load_shape": "flat", "cloudiness": 0.5, "loads": 8})),
]


@pytest.mark.parametrize(("case", "doc"), VALID, ids=[v[0] for v in VALID])
def test_valid_documents_parse(case: str, doc: dict[str, Any]) -> None:
    before = copy.deepcopy(doc)
    site = parse_site(doc, SOURCE)
    assert len(site.servers) == len(doc["servers"])
    assert len(site.devices) == len(doc["devices"])
    assert len(site.faults) == len(doc.get("faults", []))
    assert doc == before  # the input is not modified


def test_faults_keep_their_parameters() -> None:
    site = parse_site(minimal(faults=[fault(1, "slow", delay_s=5), fault(1, "exception", code=4)]), SOURCE)
    assert site.faults == (
        FaultSpec(server="main", unit_id=1, kind="slow", delay_s=5.0),
        FaultSpec(server="main", unit_id=1, kind="exception", code=4),
    )


# --- errors ----------------------------------------------------------------------------------

ERRORS = [
    # (case, document, key the first message line must name, words it must contain)
    ("unknown top-level key", minimal(extra=1), "extra", "unknown key"),
    ("misspelt site parameter", minimal(site={"sed": 1}), "site.sed", "unknown key"),
    ("unknown server key", minimal(servers=[server(prot=2)]), "servers[0].prot", "unknown key"),
    ("unknown device key", minimal(devices=[device(1, units=2)]), "devices[0].units", "unknown key"),
    (
        "server declared twice",
        minimal(servers=[server("main"), server("aux", port=1), server("main", port=2)]),
        "servers[2].id",
        "declared twice",
    ),
    ("device on an unknown server", minimal(devices=[device(1, "ghost")]), "devices[0].server", "'ghost'"),
    (
        "device on an unknown server (second device)",
        minimal(devices=[device(1), device(2, "Main")]),
        "devices[1].server",
        "no server 'Main'",
    ),
    (
        "unit id taken twice",
        minimal(devices=[device(1), device(2), device(2, model="pv")]),
        "devices[2].unit_id",
        "unit 2 on 'main' is already devices[1]",
    ),
    (
        "a clone overlaps a later device",
        minimal(devices=[device(1, count=3), device(3, model="pv")]),
        "devices[1].unit_id",
        "unit 3 on 'main' is already devices[0]",
    ),
    (
        "clones overlap earlier clones",
        minimal(devices=[device(10, count=5), device(5, model="pv", count=6)]),
        "devices[1].unit_id",
        "unit 10 on 'main' is already devices[0]",
    ),
    ("clones past 247", minimal(devices=[device(246, count=3)]), "devices[0].count", "past 247"),
    ("one clone past 247", minimal(devices=[device(1), device(200, count=49)]), "devices[1].count", "247"),
    ("unit id above 247", minimal(devices=[device(248)]), "devices[0].unit_id", "247"),
    ("unit id zero", minimal(devices=[device(0)]), "devices[0].unit_id", "1"),
    ("count zero", minimal(devices=[device(1, count=0)]), "devices[0].count", "1"),
    ("fault on a missing unit", minimal(faults=[fault(2)]), "faults[0]", "no device 2 on server 'main'"),
    ("fault on an unknown server", minimal(faults=[fault(1, server_="aux")]), "faults[0]", "'aux'"),
    (
        "fault past the last clone",
        minimal(devices=[device(1, count=2)], faults=[fault(1), fault(3)]),
        "faults[1]",
        "no device 3",
    ),
    ("rtu-pty without link", minimal(servers=[server(type_="rtu-pty")]), "servers[0]", "needs link"),
    ("rtu-pty with an empty link", minimal(servers=[server(type_="rtu-pty", link="")]), "servers[0]", "link"),
    ("tcp without port", minimal(servers=[{"id": "main", "type": "tcp"}]), "servers[0]", "tcp needs port"),
    (
        "rtu-over-tcp without port",
        minimal(servers=[{"id": "main", "type": "rtu-over-tcp"}]),
        "servers[0]",
        "needs port",
    ),
    ("port out of range", minimal(servers=[server(port=70000)]), "servers[0].port", "65535"),
    ("bad server type", minimal(servers=[server(type_="udp")]), "servers[0].type", "'tcp'"),
    ("bad server id", minimal(servers=[server("Main!")]), "servers[0].id", "pattern"),
    ("bad fault kind", minimal(faults=[fault(1, "explode")]), "faults[0].kind", "'silent'"),
    ("bad device model", minimal(devices=[device(1, model="heat-pump")]), "devices[0].model", "'meter'"),
    ("no servers", minimal(servers=[]), "servers", "at least 1"),
    ("no devices", minimal(devices=[]), "devices", "at least 1"),
    ("missing devices", {"servers": [server()]}, "devices", "required"),
    ("soc above 100", minimal(site={"soc_pct": 101}), "site.soc_pct", "100"),
    ("non-positive speed", minimal(site={"speed": 0}), "site.speed", "greater than 0"),
]


@pytest.mark.parametrize(("case", "doc", "key", "words"), ERRORS, ids=[e[0] for e in ERRORS])
def test_errors_name_the_source_and_the_key(case: str, doc: dict[str, Any], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_site(doc, SOURCE)
    err = info.value
    first = err.message.splitlines()[0]
    assert first.startswith(f"{SOURCE}: {key}: "), first
    assert words in first
    assert err.code == "E_CONFIG"
    assert err.context.get("file") == SOURCE
    assert all(line.startswith(f"{SOURCE}: ") for line in err.message.splitlines())


def test_unknown_keys_are_flagged_as_probably_misspelt() -> None:
    with pytest.raises(ConfigError) as info:
        parse_site(minimal(sevrers=[server()]), SOURCE)
    assert info.value.message == f"{SOURCE}: sevrers: unknown key (misspelt?)"


def test_several_errors_are_reported_one_per_line() -> None:
    doc = minimal(colour="red", site={"seed": "x", "loads": 9})
    with pytest.raises(ConfigError) as info:
        parse_site(doc, SOURCE)
    lines = info.value.message.splitlines()
    keys = sorted(line.split(": ")[1] for line in lines)
    assert keys == ["colour", "site.loads", "site.seed"]


@pytest.mark.parametrize("doc", [None, [], [minimal()], "servers: []", 42, 1.5, True])
def test_a_non_mapping_document_is_refused(doc: object) -> None:
    with pytest.raises(ConfigError) as info:
        parse_site(doc, SOURCE)
    assert info.value.message == f"{SOURCE}: a site file must be a YAML mapping"
    assert info.value.context.get("file") == SOURCE


def test_an_empty_yaml_file_is_refused() -> None:
    with pytest.raises(ConfigError, match="must be a YAML mapping"):
        parse_site(yaml.safe_load(""), "empty.yaml")


@settings(max_examples=100, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 247), st.integers(1, 20)), min_size=1, max_size=6),
    st.lists(st.integers(1, 247), max_size=4),
)
def test_unit_id_rules_match_a_reference(clones: list[tuple[int, int]], faulted: list[int]) -> None:
    """Clones take consecutive unit ids; any overlap, run past 247 or fault on a free unit fails."""
    doc = minimal(
        devices=[device(unit, count=count) for unit, count in clones],
        faults=[fault(u) for u in faulted],
    )
    taken: set[int] = set()
    expected_error = None
    for i, (unit, count) in enumerate(clones):
        units = range(unit, unit + count)
        if units[-1] > 247 and not taken.intersection(range(unit, 248)):
            expected_error = f"devices[{i}].count"
            break
        if taken.intersection(units):
            expected_error = f"devices[{i}].unit_id"
            break
        taken.update(units)
    if expected_error is None:
        missing = [i for i, u in enumerate(faulted) if u not in taken]
        expected_error = f"faults[{missing[0]}]" if missing else None
    if expected_error is None:
        site = parse_site(doc, SOURCE)
        assert sum(d.count for d in site.devices) == len(taken)
    else:
        with pytest.raises(ConfigError) as info:
            parse_site(doc, SOURCE)
        assert info.value.message.startswith(f"{SOURCE}: {expected_error}: ")
