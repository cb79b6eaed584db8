"""``/docs`` renders in a real browser with no internet: Debian's Chromium, driven by Playwright, loads the page from
a real server while every request to another host is refused, and lists every operation of the API."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlsplit

from playwright.sync_api import Route, sync_playwright

from taxiload.harness import TIMEOUT_SCALE, ServerProcess, call

# The system browser (apt-get install chromium; .ci/run installs it): Playwright downloads nothing.
CHROMIUM = Path(os.environ.get("TAXI_TEST_CHROMIUM", "/usr/bin/chromium"))
OPERATIONS = """els => els.map(e => [
    e.querySelector('.opblock-summary-method').textContent.trim(),
    e.querySelector('.opblock-summary-path').getAttribute('data-path'),
])"""


def test_docs_list_every_operation_without_the_internet(tmp_path):
    assert CHROMIUM.exists(), (
        f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does), or set TAXI_TEST_CHROMIUM"
    )
    env = {"TAXI_DATABASE_URL": f"sqlite:///{tmp_path}/docs.sqlite3", "TAXI_REDIS_URL": ""}
    with ServerProcess(env) as server:
        _, spec = call(f"{server.url}/docs/openapi.json")
        documented = sorted([method.upper(), path] for path, item in spec["paths"].items() for method in item)
        elsewhere: list[str] = []

        def offline(route: Route) -> None:
            if urlsplit(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:  # what a machine without internet would get, and the proof that nothing needed it
                elsewhere.append(route.request.url)
                route.abort("internetdisconnected")

        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
            try:
                page = browser.new_page()
                page.route("**/*", offline)
                page.goto(f"{server.url}/docs", timeout=30_000 * TIMEOUT_SCALE)
                page.wait_for_selector(".opblock", timeout=30_000 * TIMEOUT_SCALE)
                shown = sorted(page.eval_on_selector_all(".opblock", OPERATIONS))
                title = page.text_content(".info .title")
            finally:
                browser.close()
    assert ["POST", "/api/sign_up/"] in documented and ["GET", "/api/trip/{trip_id}/"] in documented
    assert shown == documented
    assert title is not None and title.startswith("taxi")
    assert elsewhere == []
