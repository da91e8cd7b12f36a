"""Fixtures of the console tests, loaded with `pytest_plugins = ["tests.console_fixtures"]`:
settings with people and their passwords, a worker on the dev server, a console server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
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
