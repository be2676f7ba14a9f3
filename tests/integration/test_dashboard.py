"""The live dashboard in a real headless Chromium (Debian's `chromium` + `chromium-driver`,
driven by selenium) against a wired 3-node cluster: the login with a read token (`?token=`)
leaves a HttpOnly cookie and a bare URL, the page shows the leader, its zone import changes
within 3 s (the simulated sites move), and a screenshot is kept as an artefact."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from meshems.adapters.api_tls import client_context
from meshems.ops.supervisor import LocalCluster
from tests.integration.conftest import meshems_cli

pytestmark = pytest.mark.integration
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
#: a limit the sites stay under, so the batteries do not hold the import flat at its target
POLICY = {"import_limit_kw": 200.0, "shed_order": ["n1-relays:4", "n2-relays:4", "n3-relays:4"]}
#: five simulated minutes a second, with clouds: the sites' load and PV move from second to second
SITE = {"speed": 300.0, "cloudiness": 0.5}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def spki_hash(cert_path: Path) -> str:
    """base64(sha256(SubjectPublicKeyInfo)): what --ignore-certificate-errors-spki-list takes."""
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    der = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.b64encode(hashlib.sha256(der).digest()).decode()


@pytest.fixture
def browser(make_cluster: Any) -> Iterator[tuple[LocalCluster, Any]]:
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("needs Debian's chromium and chromium-driver (scripts/setup installs them)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (the test extra)")
    cluster = make_cluster(wired=True, policy=POLICY, site=SITE)
    profile = tempfile.mkdtemp(prefix="meshems-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    # trust exactly the zone's node certificates (their keys), not every bad certificate
    spkis = ",".join(spki_hash(cluster.cfg.tls_dir / f"{n.id}.crt") for n in cluster.cfg.nodes)
    for arg in (
        "--headless=new",
        "--no-sandbox",  # the tests run as root; only here
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1280,1400",
        f"--user-data-dir={profile}",
        f"--ignore-certificate-errors-spki-list={spkis}",
    ):
        opts.add_argument(arg)
    service = webdriver.ChromeService(executable_path=DRIVER)
    driver = None
    try:
        driver = webdriver.Chrome(options=opts, service=service)
        driver.set_page_load_timeout(20)
        yield cluster, driver
    finally:
        if driver is not None:
            driver.quit()  # ends chromium and chromedriver
        service.stop()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(fn: Any, timeout_s: float, what: str) -> Any:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout_s} s")


def artefacts(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("MESHEMS_ARTEFACTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_the_dashboard_shows_the_leader_and_a_live_zone_import(
    browser: tuple[LocalCluster, Any], tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    cluster, driver = browser
    leader = cluster.wait_leader()
    node = cluster.cfg.node("n1")
    base = f"https://127.0.0.1:{node.api_port}"
    res = meshems_cli(
        "token", "create", "--config", cluster.config_path, "--role", "read", "--name", "web", "-o", "json"
    )
    assert res.returncode == 0, res.stderr
    driver.get(f"{base}/dashboard?token={json.loads(res.stdout)['token']}")  # the read role is enough
    assert driver.current_url == f"{base}/dashboard", "the login must drop the token from the URL"
    (cookie,) = [c for c in driver.get_cookies() if c["name"] == "meshems_token"]
    assert cookie["httpOnly"] and cookie["secure"] and cookie.get("sameSite") == "Strict"

    def text(css: str) -> str:
        return driver.find_element(By.CSS_SELECTOR, css).text

    shown = wait_for(
        lambda: [e.text for e in driver.find_elements(By.CSS_SELECTOR, "#members li.leader")],
        15,
        "the leader highlighted",
    )
    assert shown == [f"{leader}" + (" (this node)" if leader == "n1" else "") + " — leader"], shown
    assert len(driver.find_elements(By.CSS_SELECTOR, "#members li")) == 3
    assert text("#link") == "live"

    first = wait_for(lambda: text("#import-kw") not in ("", "–") and text("#import-kw"), 15, "zone import")
    started = time.monotonic()
    changed = wait_for(lambda: text("#import-kw") != first and text("#import-kw"), 3.0, "import changed")
    took = time.monotonic() - started
    print(f"zone import on the page: {first} -> {changed} kW after {took:.2f} s (leader {leader})")
    assert text("#limit-kw") == "200.00"
    assert driver.find_elements(By.CSS_SELECTOR, "#batteries tbody tr"), "batteries listed"
    assert driver.find_elements(By.CSS_SELECTOR, "#chart canvas"), "the chart is drawn"
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#decisions tbody tr"), 10, "dispatch reasons")

    shot = artefacts(tmp_path) / "dashboard.png"
    assert driver.save_screenshot(str(shot))
    data = shot.read_bytes()
    assert data.startswith(PNG_MAGIC) and len(data) > 10_000, f"{shot}: {len(data)} bytes"
    print(f"screenshot: {shot} ({len(data)} bytes)")


def test_without_credentials_the_page_and_the_feed_are_refused(browser: tuple[LocalCluster, Any]) -> None:
    cluster, driver = browser
    node = cluster.cfg.node("n2")
    driver.get(f"https://127.0.0.1:{node.api_port}/v1/events")
    assert "E_AUTH_FAIL" in driver.page_source
    driver.get(f"https://127.0.0.1:{node.api_port}/dashboard?token=wrong-token")
    assert "E_AUTH_FAIL" in driver.page_source
    assert not [c for c in driver.get_cookies() if c["name"] == "meshems_token"]


def test_an_open_event_stream_ends_when_its_node_stops(make_cluster: Any) -> None:
    """SIGTERM with a feed open: the node ends the stream and exits on its own (aiohttp alone
    would wait up to 60 s for the handler, and the supervisor would kill it after 5 s)."""
    cluster = make_cluster()
    node = cluster.cfg.node("n3")
    conn = http.client.HTTPSConnection(
        "127.0.0.1", node.api_port, context=client_context(cluster.cfg.tls_dir, cert=""), timeout=10
    )
    try:
        conn.request("GET", "/v1/events", headers={"Authorization": f"Bearer {cluster.client.token}"})
        resp = conn.getresponse()
        assert resp.status == 200 and resp.getheader("Content-Type", "").startswith("text/event-stream")
        events = [line for line in (resp.readline() for _ in range(8)) if line.startswith(b"data:")]
        assert json.loads(events[-1][len(b"data:") :])["members"], events
        started = time.monotonic()
        rc = cluster.stop("n3", grace_s=5.0)
        took = time.monotonic() - started
        rest = resp.read()  # the end of the stream, not a timeout
    finally:
        conn.close()
    print(f"n3 stopped {took:.2f} s after SIGTERM with a stream open (rc {rc}); {len(rest)} bytes after")
    assert rc == 0 and took < 4.0, (rc, took)
