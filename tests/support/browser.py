"""A real headless Chromium (Debian's `chromium` package, which `make test` installs) driven by
Playwright for Python through the system executable (Playwright cannot download browsers here).
Screenshots go under the test output folder: LOYALTY_TEST_OUTPUT, else test-output/ in the repo."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, sync_playwright

CHROMIUM_FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--disable-dev-shm-usage"]


def chromium_path() -> str | None:
    return os.environ.get("LOYALTY_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot_dir() -> Path:
    folder = Path(os.environ.get("LOYALTY_TEST_OUTPUT", Path(__file__).resolve().parents[2] / "test-output"))
    folder = folder / "screenshots"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def chromium() -> Iterator[Browser]:
    """The system Chromium, headless, closed afterwards."""
    executable = chromium_path()
    if executable is None:
        raise RuntimeError("no chromium on PATH: `make test` installs Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            yield browser
        finally:
            browser.close()
