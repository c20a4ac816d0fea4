"""The headless browser of the browser tests: Debian's chromium driven by pip playwright (never
`playwright install`), and a Label Studio login as an annotator would do it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage"]


@pytest.fixture(scope="module")
def browser():
    """One chromium per test module; a missing chromium fails (or skips with RUN_WITHOUT_BROWSER=1)."""
    if not CHROMIUM.is_file():
        if os.environ.get("RUN_WITHOUT_BROWSER") == "1":
            pytest.skip("no /usr/bin/chromium and RUN_WITHOUT_BROWSER=1")
        pytest.fail("no /usr/bin/chromium: run scripts/install_chromium.sh (Debian package)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        yield b
        b.close()


def login(browser, base: str, email: str, password: str):
    """A new page logged into the Label Studio at ``base``; every request off that server is refused
    (the UI must not need the internet)."""
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.route("**/*", lambda route: route.abort() if not route.request.url.startswith(base) else route.continue_())
    page.goto(f"{base}/user/login/")
    page.fill("input[name=email]", email)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    page.wait_for_load_state("networkidle")
    assert "/user/login" not in page.url, "login failed"
    return page
