"""Debian's Chromium driven by Playwright: what a person sees of a page.

The tests that use it skip without ``/usr/bin/chromium`` on a laptop, never when
``CI=true`` (.ci/run installs it).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = "/usr/bin/chromium"
#: Headless in a container: no sandbox, no GPU, nothing fetched from outside.
_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def require_chromium() -> None:
    """Skip the test without Chromium; in CI, fail it."""
    if not Path(CHROMIUM).exists() or shutil.which("chromium") is None:
        if os.environ.get("CI") == "true":
            raise RuntimeError(f"{CHROMIUM} is required in CI (.ci/run installs it)")
        pytest.skip(f"no {CHROMIUM} here")


@contextmanager
def chromium_page(width: int, height: int) -> Iterator[Page]:
    """A new page of a ``width``×``height`` window of a headless Chromium, closed after."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=_ARGS)
        try:
            yield browser.new_page(viewport={"width": width, "height": height})
        finally:
            browser.close()
