"""Debian's Chromium, headless, driven by Playwright, with every host but loopback unreachable."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import pytest


def chromium_path() -> str:
    """Where Chromium is installed; fails under CI (or REQUIRE_CHROMIUM) when it is not, else skips."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    if os.environ.get("CI") or os.environ.get("REQUIRE_CHROMIUM"):
        pytest.fail("Chromium is required here (CI) but not installed: apt-get install chromium")
    pytest.skip("Chromium is not installed (apt-get install chromium)")


BROWSER_ARGS = [
    "--no-sandbox",  # as root in CI; the pages are the service's own
    "--disable-gpu",
    "--disable-dev-shm-usage",
    # Any host but the service fails to resolve: a page that needs a CDN breaks.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]


@dataclass
class Watched:
    """What a page did that a user would notice or a reviewer would refuse."""

    origin: str
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    foreign_requests: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)


@contextmanager
def launched_browser() -> Iterator:
    from playwright.sync_api import sync_playwright

    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=BROWSER_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def watched_page(browser, origin: str, **context_options) -> Iterator[tuple]:
    """A page in a new context (its own session storage), and what it logged and fetched."""
    context = browser.new_context(**context_options)
    page = context.new_page()
    watched = Watched(origin)
    page.on("console", lambda message: message.type == "error" and watched.console_errors.append(message.text))
    page.on("pageerror", lambda error: watched.page_errors.append(str(error)))

    def dialog(dialog_opened) -> None:
        watched.dialogs.append(dialog_opened.message)
        dialog_opened.dismiss()

    page.on("dialog", dialog)

    def requested(request) -> None:
        watched.requests.append(request.url)
        if not request.url.startswith(origin + "/"):
            watched.foreign_requests.append(request.url)

    page.on("request", requested)
    try:
        yield page, watched
    finally:
        context.close()
