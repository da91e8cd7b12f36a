"""`tether`: the command line. Thin: every command calls the library the tests call.

Errors Tether raises on purpose print as one line naming the value and what to do, and
exit 2; a check that fails (audit verify) exits 1. The commands live by topic: the stack
here, `run` in `run.py`, and a module per group (`approvals`, `policy`, `audit`, …).
"""

from __future__ import annotations

import inspect
import os
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from tether.cli.approvals import approvals_app
from tether.cli.audit import audit_app
from tether.cli.common import APP_REF, _app, _run, _settings, check_tools, err, friendly, out
from tether.cli.kill import budget_app, kill_app
from tether.cli.policy import policy_app
from tether.cli.review import review_app
from tether.cli.run import run, status
from tether.cli.witness import witness
from tether.console.cli import console_app
from tether.core.config import Settings
from tether.errors import TetherError

app = typer.Typer(
    help="Tether: governed, durable, evidenced AI agents on Temporal.", no_args_is_help=True
)
app.add_typer(approvals_app, name="approvals")
app.add_typer(policy_app, name="policy")
app.add_typer(audit_app, name="audit")
app.add_typer(review_app, name="review")
app.add_typer(kill_app, name="kill")
app.add_typer(budget_app, name="budget")
app.add_typer(console_app, name="console")
app.command("witness")(witness)


@app.callback()
def _options(
    app_ref: Annotated[
        str | None,
        typer.Option(
            "--app",
            help="The app to serve: 'module:attribute' naming a tether.App (default: "
            "the app section of tether.toml).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option("--config", help="The configuration file (default: ./tether.toml)."),
    ] = None,
) -> None:
    """Tether: governed, durable, evidenced AI agents on Temporal."""
    if config is not None:
        if not config.is_file():
            err.print(f"error: --config {str(config)!r} is not a file")
            raise typer.Exit(2)
        os.environ["TETHER_CONFIG"] = str(config)
    APP_REF.clear()
    if app_ref:
        APP_REF.append(app_ref)


# -- stack ------------------------------------------------------------------------------


@app.command()
@friendly
def init(
    directory: Annotated[Path, typer.Argument(help="The new project's folder.")],
    force: Annotated[
        bool,
        typer.Option(
            help="Write into a folder that is not empty (your pyproject.toml and .gitignore "
            "are kept)."
        ),
    ] = False,
) -> None:
    """Create a new project: a refund agent, its policy, model script and tests."""
    from tether.cli.init import AUTHOR_FILES, scaffold

    files = scaffold(directory, force=force)
    for name, hint in AUTHOR_FILES.items():
        if directory / name not in files:
            out.print(f"kept your {name} as it is: {hint}")
    out.print(f"created {len(files)} files in {directory}; next: cd {directory} && pytest")


@app.command()
@friendly
def dev() -> None:
    """Start the Temporal dev server (state under .tether/), a worker and the console."""
    from tether.cli.dev import run_dev

    app_args = ["--app", APP_REF[0]] if APP_REF else []
    raise typer.Exit(run_dev(_settings(), out, app_args))


def _validation_failure(exc: RuntimeError, settings: Settings) -> TetherError | None:
    """The SDK's 'Worker validation failed: …' (an unknown namespace, say) as one line."""
    text = str(exc)
    if not text.startswith("Worker validation failed:"):
        return None
    why = text.removeprefix("Worker validation failed:").split(": Status {")[0].strip()
    return TetherError(
        f"Temporal refused the worker: {why}; check namespace {settings.namespace!r} "
        f"(TETHER_NAMESPACE) on {settings.temporal_address!r}, or create it with "
        "'temporal operator namespace create'"
    )


@app.command()
@friendly
def worker() -> None:
    """Run a worker for the app in the foreground (Ctrl-C or SIGTERM drains and stops)."""
    from tether.worker import run_worker

    settings = _settings()
    served = _app(settings)
    check_tools(served)
    try:
        _run(run_worker(settings, served))
    except RuntimeError as exc:
        refused = _validation_failure(exc, settings)
        if refused is None:
            raise
        raise refused from None


@app.command()
@friendly
def demo(
    agent: str = typer.Option(
        "native", "--agent", help="Who drives the tools: native, or an adapter (pydantic-ai)."
    ),
) -> None:
    """Run the app's demo scenario (its `demo` setting) on embedded defaults."""
    from tether.runtime.app import import_ref

    settings = _settings()
    if not settings.app.demo:
        raise TetherError(
            "this app declares no demo; set demo = 'module:function' in the app section of "
            "tether.toml (an async function taking settings, app and a Rich console)"
        )
    run_demo = import_ref(settings.app.demo, "demo", [str(p) for p in settings.app.path])
    served = _app(settings)
    check_tools(served)
    # The demo's own lines are Rich markup (its colours): a console that reads markup.
    console = Console(soft_wrap=True)
    if agent == "native":
        raise typer.Exit(_run(run_demo(settings, served, console)))
    if "agent" not in inspect.signature(run_demo).parameters:
        raise TetherError(
            f"this app's demo {settings.app.demo!r} takes no agent, so --agent {agent!r} "
            "cannot run; drop --agent or give the demo function an agent parameter"
        )
    raise typer.Exit(_run(run_demo(settings, served, console, agent=agent)))


app.command("run")(run)
app.command("status")(status)


def main() -> None:
    """The `tether` command: run it, then leave without the interpreter's finalisation.

    The Temporal SDK's native threads may still call into Python while the interpreter
    shuts down, which now and then aborts an exiting process (rc 134) after its work was
    done. So, like the worker, the command flushes its output and ends the process itself
    with the command's own exit code. `sys.exit("message")` in a command (or in an app's
    demo) prints the message to stderr and exits 1, as Python itself would.
    """
    code = 0
    try:
        app()  # standalone: usage errors print their own message and raise SystemExit
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            code = 1
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    main()
