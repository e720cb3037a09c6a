"""Headless Chromium for the dashboard tests: Debian's /usr/bin/chromium driven by Playwright.

Only Playwright's Python package is used, never its browser download. Without
the browser (OCTORELAY_CHROMIUM overrides its path) or the package, the tests
skip, unless OCTORELAY_REQUIRE_BROWSER=1 (as in CI) makes that a failure. Every page records its console errors,
uncaught exceptions and CSP violations, and fails the test on any JS dialog
(an `alert()` is what a successful XSS would look like).
"""
from __future__ import annotations

import os
import pathlib
import shutil

import pytest

CHROMIUM = os.environ.get("OCTORELAY_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARTIFACTS = pathlib.Path(__file__).resolve().parents[1] / "artifacts"  # tests/artifacts
TIMEOUT_MS = 10_000

# Reported as console errors, so a violation fails the test like any other error.
REPORT_CSP = """document.addEventListener("securitypolicyviolation",
  (e) => console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`));"""


def _unavailable(reason: str):
    if os.environ.get("OCTORELAY_REQUIRE_BROWSER") == "1":
        pytest.fail(f"a browser is required here: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -e '.[dev]')")
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    args = ["--no-sandbox"] if os.geteuid() == 0 else []  # Chromium's sandbox refuses to run as root
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=args, timeout=30_000)
        yield browser
        browser.close()


class Tab:
    """One browser page on the dashboard, with what it logged."""

    def __init__(self, page, base_url: str):
        self.page = page
        self.base_url = base_url
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.allowed: tuple[str, ...] = ()  # console errors a test expects (see assert_clean)
        page.set_default_timeout(TIMEOUT_MS)
        page.add_init_script(REPORT_CSP)
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))
        page.on("pageerror", lambda exc: self.errors.append(f"uncaught: {exc}"))
        page.on("dialog", self._dialog)

    def _dialog(self, dialog):
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def goto(self, path: str):
        self.page.goto(self.base_url + path)
        self.page.wait_for_load_state("networkidle")
        return self.page

    def sign_in(self, token: str):
        page = self.goto("/dashboard/signin")
        page.get_by_label("Admin token").fill(token)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url("**/dashboard/")
        return page

    def screenshot(self, name: str) -> pathlib.Path:
        ARTIFACTS.mkdir(exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def assert_clean(self):
        """No dialog fired, no console error, uncaught exception or CSP violation, except
        errors containing one of `self.allowed` (e.g. the browser's line for an expected 401)."""
        assert not self.dialogs, f"a JS dialog fired: {self.dialogs}"
        unexpected = [e for e in self.errors if not any(x in e for x in self.allowed)]
        assert not unexpected, unexpected


@pytest.fixture
def tab(browser, live):
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = Tab(context.new_page(), live)
    yield tab
    context.close()
    tab.assert_clean()
