"""Helpers every `tether` command shares: consoles, settings, stores, friendly errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from tether.core.config import Settings, load_settings
from tether.core.db import make_engine
from tether.errors import TetherError
from tether.governance.store import ApprovalStore
from tether.runtime.app import App, app_from_ref, load_app
from tether.verification.events import RecordedEvent
from tether.verification.ledger import Ledger

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def friendly(fn: F) -> F:
    """Turn Tether's own errors into one line and exit code 2."""

    @wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except TetherError as exc:
            err.print(Text.assemble(("error:", "red"), f" {exc}"), highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return run  # type: ignore[return-value]


APP_REF: list[str] = []
"""`tether --app REF`: the app named on the command line, which wins over `[app]`."""


def _settings() -> Settings:
    return load_settings()


def _app(settings: Settings) -> App:
    """The app this command serves: `--app`, else `[app]` of the settings."""
    if APP_REF:
        return app_from_ref(APP_REF[0])
    return load_app(settings)


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def _stores(settings: Settings) -> tuple[Ledger, ApprovalStore]:
    engine = make_engine(settings.database_url)
    return Ledger(engine), ApprovalStore(engine)


def event_line(e: RecordedEvent) -> str:
    """One ledger event as one line: `tether audit show`'s timeline (and the demo's).
    Print it with `markup=False`: tiers and rules in brackets are not Rich markup."""
    target = f"{e.action} {e.resource}".strip()
    why = f"tier={e.tier} rule={e.rule} " if e.tier else ""
    return f"#{e.seq:<4} step {e.step} {e.kind:<18} {target:<40} {why}by {e.actor} -> {e.outcome}"
