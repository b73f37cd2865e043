"""A real browser for the console's tests: Debian's chromium driven by Playwright, against the app
served by a real HTTP server thread on 127.0.0.1.

Playwright's own browser download (``playwright install``) is never used: ``make system-tools``
installs Debian's ``chromium`` and Playwright launches it by path. Every page records what it
requested and every console error, so a test can assert that nothing left the app and nothing failed.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from flask import Flask
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from werkzeug.serving import make_server

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
#: Where the README's screenshots go; the tests write them only with UPDATE_SCREENSHOTS=1.
DOCS = Path(__file__).resolve().parent.parent / "docs"


@contextmanager
def chromium() -> Iterator[Browser]:
    """Debian's chromium, headless; a clear failure when it is not installed."""
    path = CHROMIUM if os.path.isabs(CHROMIUM) else shutil.which(CHROMIUM)
    if not path or not os.path.exists(path):
        raise RuntimeError(
            f"{CHROMIUM} is missing: run `make system-tools` as root (Debian package chromium)"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def live_server(app: Flask) -> Iterator[str]:
    """Serve ``app`` on a free port of 127.0.0.1 from a thread; yields its base URL."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, name="console-test-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(10)
        server.server_close()


@dataclass
class Tab:
    """A browser page with what it requested and every console error or uncaught exception."""

    page: Page
    base: str
    requests: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def goto(self, path: str) -> int:
        response = self.page.goto(self.base + path)
        assert response is not None
        return response.status

    def answered(self, status: int) -> None:
        """Forget the browser's "failed to load" error for an answer the test expected (a 403 page)."""
        sign = f"status of {status} "
        self.errors[:] = [
            e for e in self.errors if not (e.startswith("Failed to load resource") and sign in e)
        ]

    def outside(self) -> list[str]:
        """Every request that went anywhere but the app under test."""
        return [url for url in self.requests if not url.startswith(self.base + "/")]

    def screenshot(self, name: str) -> None:
        """Save a full-page screenshot to ``docs/`` when UPDATE_SCREENSHOTS=1."""
        if os.environ.get("UPDATE_SCREENSHOTS") == "1":
            DOCS.mkdir(exist_ok=True)
            self.page.screenshot(path=str(DOCS / name), full_page=True)


@contextmanager
def tab(browser: Browser, base: str, *, javascript: bool = True) -> Iterator[Tab]:
    """A fresh browser context (no cookies) and page on ``base``, recording requests and errors."""
    context: BrowserContext = browser.new_context(
        java_script_enabled=javascript, viewport={"width": 1280, "height": 800}
    )
    page = context.new_page()
    page.set_default_timeout(15_000)
    recorded = Tab(page, base)
    page.on("request", lambda request: recorded.requests.append(request.url))
    page.on("console", lambda msg: recorded.errors.append(msg.text) if msg.type == "error" else None)
    page.on("pageerror", lambda exc: recorded.errors.append(str(exc)))
    try:
        yield recorded
    finally:
        context.close()


#: For each visible form control on the page, whether it has a label (``<label for>``, a wrapping
#: ``<label>``, ``aria-label`` or ``aria-labelledby``); buttons need a text.
UNLABELLED_CONTROLS_JS = """
() => {
  const missing = [];
  for (const el of document.querySelectorAll('input, select, textarea, button')) {
    if (el.type === 'hidden') continue;
    const named = el.tagName === 'BUTTON'
      ? el.textContent.trim() !== '' || el.hasAttribute('aria-label')
      : (el.labels && el.labels.length > 0 && [...el.labels].every(l => l.textContent.trim() !== ''))
        || el.hasAttribute('aria-label') || el.hasAttribute('aria-labelledby');
    if (!named) missing.push(el.outerHTML.slice(0, 120));
  }
  return missing;
}
"""
