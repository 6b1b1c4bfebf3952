"""Fixtures of the IVR tests: the real browser of the browser tests, Debian's chromium driven
by Playwright (the desk, the wallboard, and the desk end to end with real phones).

One headless chromium per test that asks for ``browser``, closed after it. No browser download:
Playwright is pointed at the Debian package's binary (`scripts/test` installs it).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def chromium() -> str:
    """The chromium binary; a missing one fails the test (CI installs it), never skips it."""
    if not Path(CHROMIUM).exists():
        pytest.fail("no Debian chromium: apt-get install chromium")
    return CHROMIUM


@pytest.fixture
async def browser(chromium: str) -> AsyncIterator[Browser]:
    """A fresh headless chromium."""
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
        yield launched
        await launched.close()
