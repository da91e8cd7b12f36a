"""What `tether` prints when it fails: every expected failure is one line naming the
value and what to do, and an exit code, never a traceback; from every command, for a
broken configuration, a bad `--app`, a call Temporal refuses, a workflow input the CLI
cannot build, a tools class a worker cannot build, and `sys.exit("message")`."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import typer.main
from temporalio.client import Client

from tests.conftest import new_id
from tests.test_cli_output import cli, one_line
from tether.cli.main import app
from tether.core.config import Settings

APP = """
import sys

from pydantic import BaseModel
from temporalio import workflow
from tether import App, tool


@workflow.defn(name="Echo")
class EchoWorkflow:
    @workflow.run
    async def run(self, text: str) -> str:
        return text


@workflow.defn(name="Tick")
class TickWorkflow:
    @workflow.run
    async def run(self) -> str:
        return "tick"


class Order(BaseModel):
    order_id: str


class NeedsUrl:
    def __init__(self, url: str) -> None:
        self.url = url

    @tool(action="orders.read", resource="order/{order_id}")
    async def read_order(self, args: Order) -> Order:
        return args


class Maker:
    def __init__(self) -> None:
        open("maker-called", "w").close()


async def demo(settings, app, console):
    sys.exit("the demo needs a bank; start one first")


app = App(workflows=[EchoWorkflow, TickWorkflow])
unbuildable = App(tools=[NeedsUrl])
"""

# -- failures ---------------------------------------------------------------------------

# Arguments that get every command past its usage check, to the point it reads settings.
ARGS: dict[str, tuple[str, ...]] = {
    "dev": (),
    "worker": (),
    "demo": (),
    "run": ("PayInvoice",),
    "status": ("some-run",),
    "approvals list": (),
    "approvals key": (),
    "approvals approve": ("apr-1", "--as", "user:alice"),
    "approvals reject": ("apr-1", "--as", "user:alice"),
    "policy lint": ("p.csv",),
    "policy test": ("p.tests.toml",),
    "policy push": ("p.csv", "--as", "user:alice"),
    "policy history": (),
    "policy explain": ("--agent", "a", "--action", "b", "--resource", "c"),
    "policy check": ("p.csv",),
    "policy impact": ("p.csv",),
    "audit verify": (),
    "audit checkpoint": ("-o", "cp.json"),
    "audit prove": ("1",),
    "audit verify-proof": ("proof.json", "--checkpoint", "cp.json"),
    "audit consistency": ("cp.json",),
    "audit show": ("wf",),
    "audit search": (),
    "audit what-if": ("wf", "--policy", "p.csv"),
    "audit replay": ("wf",),
    "audit export": ("wf", "-o", "b.json"),
    "audit verify-bundle": ("b.json",),
    "audit key": (),
    "review list": (),
    "review flag": ("wf", "1", "--as", "user:alice"),
    "kill engage": ("global", "--as", "user:ops"),
    "kill release": ("global", "--as", "user:ops"),
    "kill status": (),
    "budget set": ("agent:a", "--as", "user:ops"),
    "budget show": (),
    "budget clear": ("agent:a", "--as", "user:ops"),
    "console": (),
}
# These read their input files before any setting, so they name the missing file instead.
READ_FILES_FIRST = {"audit verify-proof", "audit verify-bundle"}
# Need no configuration at all: one hashes a password, one writes a new project, the
# witness takes everything on its command line.
NO_SETTINGS = {"console hash-password", "init", "witness"}


def _commands(command: object, path: tuple[str, ...] = ()) -> Iterator[str]:
    subcommands = getattr(command, "commands", None)
    if subcommands is None:
        yield " ".join(path)
        return
    if getattr(command, "invoke_without_command", False):
        yield " ".join(path)
    for name, sub in subcommands.items():
        yield from _commands(sub, (*path, name))


def test_a_broken_configuration_is_one_line_from_every_command(tmp_path: Path) -> None:
    commands = set(_commands(typer.main.get_command(app))) - {""}
    assert commands - NO_SETTINGS == set(ARGS), "give new commands their arguments in ARGS"
    broken = tmp_path / "broken.toml"
    broken.write_text("dev_port = [\n")

    def run(name: str) -> tuple[str, subprocess.CompletedProcess[str]]:
        return name, cli(tmp_path, *name.split(), *ARGS[name], TETHER_CONFIG=str(broken))

    with ThreadPoolExecutor(8) as pool:
        for name, done in pool.map(run, sorted(ARGS)):
            line = one_line(done)
            if name in READ_FILES_FIRST:
                assert line.startswith("error: cannot read"), (name, line)
            else:
                assert line.startswith(
                    f"error: configuration file {str(broken)!r} is not valid TOML"
                ), (name, line)


def test_expected_failures_are_one_line(tmp_path: Path) -> None:
    line = one_line(cli(tmp_path, "run", "NoSuchWorkflow"))
    assert "unknown workflow 'NoSuchWorkflow'" in line and "PayInvoice" in line

    invoice = '{"invoice_id": "INV-1", "text": "Invoice INV-1"}'
    line = one_line(
        cli(tmp_path, "run", "PayInvoice", "-i", invoice, TETHER_TEMPORAL_ADDRESS="127.0.0.1:1")
    )
    assert "cannot reach Temporal at '127.0.0.1:1'" in line and "tether dev" in line

    line = one_line(cli(tmp_path, "--config", "absent.toml", "kill", "status"))
    assert line == "error: --config 'absent.toml' is not a file"

    (tmp_path / "broken_app.py").write_text("def (\n")
    (tmp_path / "factory.py").write_text("def make(required):\n    return None\n")
    for ref, expected in [
        ("no_such_module:app", "cannot import 'no_such_module'"),
        ("os:sep", "names a str, not a tether.App"),
        ("factory:make", "calling it to get the app raised TypeError"),
        ("broken_app", "broken_app.py:1"),
        (":app", "is not 'module:Name'"),
    ]:
        line = one_line(cli(tmp_path, "--app", ref, "run", "PayInvoice"))
        assert line.startswith("error: ") and expected in line, (ref, line)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("approvals", "approve"), "Missing argument"),
        (("approvals", "approve", "apr-1"), "Missing option '--as'"),
        (("audit", "prove", "seven"), "Invalid value"),
        (("no-such-command",), "No such command"),
        (("kill", "status", "--no-such-flag"), "No such option"),
    ],
)
def test_usage_errors_exit_2_without_a_traceback(
    tmp_path: Path, args: tuple[str, ...], expected: str
) -> None:
    done = cli(tmp_path, *args)
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and expected in done.stderr, done.stderr


async def test_run_with_a_taken_id_is_one_line(
    client: Client, settings: Settings, tmp_path: Path
) -> None:
    """No worker polls this task queue, so the first run stays open and holds its id."""
    workflow_id = new_id("taken")
    invoice = '{"invoice_id": "INV-1", "text": "x"}'
    args = ["run", "PayInvoice", "-i", invoice, "--id", workflow_id, "--no-wait"]
    env = {
        "TETHER_TEMPORAL_ADDRESS": settings.temporal_address,
        "TETHER_TASK_QUEUE": settings.task_queue,
    }
    try:
        first = await asyncio.to_thread(cli, tmp_path, *args, **env)
        assert first.returncode == 0, first.stderr
        assert f"as {workflow_id}" in first.stdout
        line = one_line(await asyncio.to_thread(cli, tmp_path, *args, **env))
        assert f"a workflow with id {workflow_id!r} already exists" in line
    finally:
        await client.get_workflow_handle(workflow_id).terminate("test over")


# -- an app of the test's own ------------------------------------------------------------


@pytest.fixture
def project(tmp_path: Path) -> dict[str, str]:
    """A project in `tmp_path/project` whose `[app] path` is its `src` folder (not the
    working directory, `tmp_path`): the variables that select it."""
    src = tmp_path / "project" / "src"
    src.mkdir(parents=True)
    (src / "myapp.py").write_text(APP)
    config = tmp_path / "project" / "tether.toml"
    config.write_text('[app]\npath = ["src"]\ndemo = "myapp:demo"\n')
    return {"TETHER_CONFIG": str(config)}


def test_app_option_imports_from_the_app_path_and_names_the_option(
    tmp_path: Path, project: dict[str, str]
) -> None:
    line = one_line(cli(tmp_path, "--app", "myapp", "run", "NoSuch", **project))
    assert "unknown workflow 'NoSuch'" in line and "Echo, PayInvoice" not in line
    assert "Echo" in line and "[app] workflows" in line  # brackets printed as written

    line = one_line(cli(tmp_path, "--app", "no_such_module:app", "run", "Echo", **project))
    assert line.startswith("error: --app 'no_such_module:app': cannot import"), line
    assert "[app] app" not in line and str(tmp_path / "project" / "src") in line

    line = one_line(cli(tmp_path, "--app", "myapp:Maker", "run", "Echo", **project))
    assert "--app 'myapp:Maker' names the class Maker, not a tether.App" in line
    assert "a function that returns one" in line
    assert not (tmp_path / "maker-called").exists()  # the class was never called


def test_workflow_inputs_the_cli_cannot_build_are_one_line(
    tmp_path: Path, project: dict[str, str]
) -> None:
    line = one_line(cli(tmp_path, "--app", "myapp", "run", "Echo", "-i", "{}", **project))
    assert line == "error: --input does not fit str: Input should be a valid string at top level"
    line = one_line(cli(tmp_path, "--app", "myapp", "run", "Tick", "-i", '{"n": 1}', **project))
    assert line.startswith("error: workflow 'Tick' takes no input, but --input '{")
    assert line.endswith("was given; leave --input out")


async def test_a_plain_input_type_runs(
    client: Client, settings: Settings, tmp_path: Path, project: dict[str, str]
) -> None:
    workflow_id = new_id("echo")
    env = {"TETHER_TEMPORAL_ADDRESS": settings.temporal_address, **project}
    args = ["--app", "myapp", "run", "Echo", "-i", '"hello"', "--id", workflow_id, "--no-wait"]
    try:
        started = await asyncio.to_thread(cli, tmp_path, *args, **env)
        assert started.returncode == 0, started.stderr
        history = await client.get_workflow_handle(workflow_id).fetch_history()
        first = history.events[0].workflow_execution_started_event_attributes
        assert first.input.payloads[0].data == b'"hello"'
        # A workflow that takes no input starts with none.
        tick = await asyncio.to_thread(
            cli,
            tmp_path,
            "--app",
            "myapp",
            "run",
            "Tick",
            "--id",
            workflow_id + "-t",
            "--no-wait",
            **env,
        )
        assert tick.returncode == 0, tick.stderr
        history = await client.get_workflow_handle(workflow_id + "-t").fetch_history()
        assert not history.events[0].workflow_execution_started_event_attributes.input.payloads
    finally:
        await client.get_workflow_handle(workflow_id).terminate("test over")
        await client.get_workflow_handle(workflow_id + "-t").terminate("test over")


def test_a_tools_class_the_worker_cannot_build_is_named(
    tmp_path: Path, project: dict[str, str]
) -> None:
    line = one_line(cli(tmp_path, "--app", "myapp:unbuildable", "worker", **project))
    assert "tools class myapp:NeedsUrl cannot be built: its constructor needs (url)" in line
    assert "from_app(cls, context)" in line


async def test_a_namespace_temporal_does_not_know_is_one_line(
    settings: Settings, tmp_path: Path
) -> None:
    env = {
        "TETHER_TEMPORAL_ADDRESS": settings.temporal_address,
        "TETHER_NAMESPACE": "no-such-namespace",
        "TETHER_LOG_LEVEL": "ERROR",
    }
    invoice = '{"invoice_id": "INV-1", "text": "x"}'
    line = one_line(
        await asyncio.to_thread(cli, tmp_path, "run", "PayInvoice", "-i", invoice, **env)
    )
    assert line.startswith("error: Temporal refused the call (NOT_FOUND): Namespace"), line
    assert "no-such-namespace" in line and "TETHER_NAMESPACE" in line

    worker = await asyncio.to_thread(cli, tmp_path, "worker", **env)
    assert worker.returncode == 2 and "Traceback" not in worker.stderr, worker.stderr
    [line] = [x for x in worker.stderr.splitlines() if x.startswith("error:")]
    assert line.startswith("error: Temporal refused the worker: Namespace"), line
    assert "namespace 'no-such-namespace'" in line


def test_sys_exit_with_a_message_prints_it(tmp_path: Path, project: dict[str, str]) -> None:
    done = cli(tmp_path, "demo", **project)
    assert done.returncode == 1
    assert done.stderr.strip() == "the demo needs a bank; start one first"


def test_a_config_variable_naming_no_file_is_one_line(tmp_path: Path) -> None:
    absent = tmp_path / "absent.toml"
    line = one_line(cli(tmp_path, "kill", "status", TETHER_CONFIG=str(absent)))
    assert line == (
        f"error: TETHER_CONFIG is {str(absent)!r}, which is no file; point it at your "
        "tether.toml, or unset it to read ./tether.toml"
    )


def test_a_database_url_is_shown_without_its_password(tmp_path: Path) -> None:
    url = "postgres://tether:s3cret@db/tether"
    done = cli(tmp_path, "kill", "status", TETHER_DATABASE_URL=url)
    line = one_line(done)
    assert "'postgres://tether:***@db/tether' names no database SQLAlchemy knows" in line
    assert "s3cret" not in done.stderr + done.stdout
