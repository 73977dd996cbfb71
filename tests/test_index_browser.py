"""The fleet index in a real headless Chromium (Debian's ``chromium``, driven by Playwright).

The results root is served over HTTP from 127.0.0.1 and also opened from ``file://``; in
both, the filters must work, links must open the site reports, and no page may request
anything from elsewhere.
"""

from __future__ import annotations

import json
import os
import threading
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import pytest

from telemetry_lab import jobs, manifest as manifest_mod, render
from telemetry_lab.generate import Anomaly, SiteSpec, fleet_specs, generate
from telemetry_lab.params import AnalysisParams

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]
CRITICAL_SITE = "site-0002"


@pytest.fixture(scope="module")
def fleet_root(tmp_path_factory) -> dict:
    """Four sites of 20,000 rows run through a slice with the report hook, and the index.
    One site gets an overheating bearing past 95 degC, which the rules call critical."""
    base = tmp_path_factory.mktemp("browser")
    specs = fleet_specs(4, 20_000, seed=21, anomaly_rate=0.5)
    i = next(k for k, s in enumerate(specs) if s.site_id == CRITICAL_SITE)
    specs[i] = SiteSpec(**{**specs[i].__dict__, "anomalies": (
        Anomaly("overheat_ramp", "sensor_09", 4.0, 8.0, 420.0),)})
    manifest = generate(specs, str(base / "data"), workers=2)
    root = base / "results root"  # a space in the path, as file:// URLs must cope with
    paths = jobs.Paths(str(root), "browser-run")
    summary = jobs.run_slice(manifest_mod.entries(manifest), paths, AnalysisParams(),
                             log=lambda line: None, on_result=render.site_report_hook(paths))
    assert summary.count("OK") == 4, [f.line() for f in summary.files]
    render.write_index(str(root))
    docs = {p.stem: json.loads(p.read_text()) for p in (root / "results" / "latest").glob("*.json")}
    health = {d["site_id"]: d["report"]["equipment_health"] for d in docs.values()}
    assert health[CRITICAL_SITE] == "critical"
    assert sum(h == "critical" for h in health.values()) < len(health)
    return {"root": root, "docs": docs, "health": health}


@pytest.fixture(scope="module")
def http_base(fleet_root):
    handler = partial(_QuietHandler, directory=str(fleet_root["root"]))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(timeout=10)


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture(scope="module")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        message = f"{CHROMIUM} not found: apt-get install -y chromium"
        if os.environ.get("CI"):
            pytest.fail(message)  # CI installs it; a missing browser is a broken setup there
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture(params=["http", "file"])
def index_url(request, fleet_root, http_base) -> str:
    if request.param == "http":
        return f"{http_base}/index.html"
    return (fleet_root["root"] / "index.html").as_uri()


@pytest.fixture
def page(browser, index_url):
    context = browser.new_context()
    pg = context.new_page()
    requests: list[str] = []
    pg.on("request", lambda r: requests.append(r.url))
    pg.goto(index_url)
    yield pg
    origin = index_url.rsplit("/", 1)[0]
    foreign = [u for u in requests if not u.startswith(origin)]
    assert foreign == [], "pages must load nothing from elsewhere"
    context.close()


def visible_sites(pg) -> list[str]:
    return pg.locator("#sites tbody tr:visible").evaluate_all(
        "rows => rows.map(r => r.getAttribute('data-site'))")


def test_all_sites_listed_worst_first(page, fleet_root):
    sites = visible_sites(page)
    assert sorted(sites) == sorted(fleet_root["health"])
    assert sites[0] == CRITICAL_SITE
    assert page.locator("#shown-count").inner_text() == str(len(sites))


def test_filter_to_critical(page, fleet_root):
    page.select_option("#filter-health", "critical")
    expected = sorted(s for s, h in fleet_root["health"].items() if h == "critical")
    assert sorted(visible_sites(page)) == expected
    assert page.locator("#shown-count").inner_text() == str(len(expected))
    page.select_option("#filter-health", "")
    assert len(visible_sites(page)) == len(fleet_root["health"])


def test_filter_by_site_id_and_region(page, fleet_root):
    page.fill("#filter-site", "SITE-0003")
    assert visible_sites(page) == ["site-0003"]
    page.fill("#filter-site", "")
    region = fleet_root["docs"]["site-0001"]["region"]
    page.select_option("#filter-region", region)
    expected = sorted(d["site_id"] for d in fleet_root["docs"].values() if d["region"] == region)
    assert sorted(visible_sites(page)) == expected
    page.select_option("#filter-health", "critical")
    assert visible_sites(page) == ([] if region != fleet_root["docs"][CRITICAL_SITE]["region"]
                                   else [CRITICAL_SITE])


def test_link_opens_the_site_report(page, index_url):
    page.fill("#filter-site", CRITICAL_SITE)
    page.locator("#sites tbody tr:visible a.site-link").click()
    page.wait_for_load_state()
    assert page.url.endswith(f"reports/latest/{CRITICAL_SITE}.html")
    assert page.locator("#site-id").inner_text() == CRITICAL_SITE
    badge = page.locator("#health")
    assert badge.inner_text() == "critical"
    # The badge is coloured by the inlined stylesheet: red for critical.
    assert badge.evaluate("el => getComputedStyle(el).backgroundColor") == "rgb(192, 24, 43)"
    assert page.locator("figure.timeline").count() >= 1
    assert page.locator("figure.psd line.dominant").count() == 9
