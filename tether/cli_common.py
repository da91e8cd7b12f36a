"""Helpers every `tether` command shares: consoles, settings, stores, friendly errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console

from governance.errors import TetherError
from governance.store import ApprovalStore
from tether.config import Settings, load_settings
from tether.db import make_engine
from verification.ledger import Ledger

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
            err.print(f"[red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None

    return run  # type: ignore[return-value]


def _settings() -> Settings:
    return load_settings()


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def _stores(settings: Settings) -> tuple[Ledger, ApprovalStore]:
    engine = make_engine(settings.database_url)
    return Ledger(engine), ApprovalStore(engine)
