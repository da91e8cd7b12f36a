"""Fixtures of the console tests, loaded with `pytest_plugins = ["tests.console_fixtures"]`:
settings with people and their passwords, a worker on the dev server, a console server,
and Debian's chromium driven by Playwright (never a downloaded browser).
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright
from temporalio.client import Client
from temporalio.worker import Worker

from tests.console_helpers import console_settings, serve
from tether.core.config import Settings
from tether.worker import Runtime, build_worker


@pytest.fixture
def csettings(settings: Settings, tmp_path: Path) -> Settings:
    return console_settings(settings, tmp_path)


@pytest.fixture
def crt(csettings: Settings) -> Iterator[Runtime]:
    runtime = Runtime.from_settings(csettings)
    yield runtime
    runtime.ledger.engine.dispose()


@pytest.fixture
async def cworker(client: Client, csettings: Settings, crt: Runtime) -> AsyncIterator[Worker]:
    async with build_worker(client, csettings, crt) as w:
        yield w


@pytest.fixture
def base_url(csettings: Settings) -> Iterator[str]:
    with serve(csettings) as url:
        yield url


@pytest.fixture(scope="module")
async def chromium() -> AsyncIterator[Browser]:
    """One browser per test module (each test opens its own contexts in it)."""
    path = shutil.which("chromium")
    if path is None:
        pytest.fail("Debian's chromium is not installed: apt-get install -y chromium")
    async with async_playwright() as p:
        browser = await p.chromium.launch(
            executable_path=path, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        try:
            yield browser
        finally:
            await browser.close()
