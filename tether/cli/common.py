"""Helpers every `tether` command shares: consoles, settings, the app, stores, friendly
errors, tables.

`out` and `err` print plain text: no Rich markup, no highlighting, so values (ids, rules,
tiers, paths) reach the reader as written (`[notify: rule]` stays). Colour is asked for
with `Text` (see `red`).
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Collection, Coroutine, Iterable, Sequence
from functools import wraps
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text
from temporalio.service import RPCError, RPCStatusCode

from tether.core.config import Settings, load_settings
from tether.core.db import make_engine
from tether.errors import AppError, TetherError
from tether.governance.store import ApprovalStore
from tether.runtime.app import App, app_from_ref, import_ref, load_app
from tether.verification.events import RecordedEvent
from tether.verification.ledger import Ledger

# soft_wrap: a message stays one line however long (a pipe gets no inserted newlines);
# tables still fit the terminal, folding their own cells.
out = Console(soft_wrap=True, markup=False, highlight=False)
err = Console(stderr=True, soft_wrap=True, markup=False, highlight=False)
F = TypeVar("F", bound=Callable[..., Any])
Cell = str | Text
"""A table cell: a `str` is shown as written (never parsed as markup); a `Text` may
carry a style, which only a terminal shows."""


def refused(exc: RPCError) -> TetherError:
    """A call Temporal refused (an unknown namespace, say), as one line saying what to do."""
    message = exc.message.rstrip(".")
    if exc.status == RPCStatusCode.NOT_FOUND and "amespace" in message:
        hint = "create it (temporal operator namespace create) or set TETHER_NAMESPACE"
    else:
        hint = "check TETHER_NAMESPACE and TETHER_TEMPORAL_ADDRESS, and the server's log"
    return TetherError(f"Temporal refused the call ({exc.status.name}): {message}; {hint}")


def friendly(fn: F) -> F:
    """Turn Tether's own errors, and calls Temporal refuses, into one line and exit code 2."""

    @wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            try:
                return fn(*args, **kwargs)
            except RPCError as exc:
                raise refused(exc) from None
        except TetherError as exc:
            err.print(Text.assemble(("error:", "red"), f" {exc}"))
            raise typer.Exit(2) from None

    return run  # type: ignore[return-value]


APP_REF: list[str] = []
"""`tether --app REF`: the app named on the command line, which wins over `[app]`."""


def _settings() -> Settings:
    return load_settings()


def _app(settings: Settings) -> App:
    """The app this command serves: `--app`, else `[app]` of the settings."""
    if APP_REF:
        return app_option(APP_REF[0], settings)
    return load_app(settings)


def app_option(ref: str, settings: Settings) -> App:
    """The app `tether --app REF` names: a `tether.App`, or a plain function returning one
    (`module`, for `module:app`), imported with the `[app] path` folders first."""
    full = ref if ":" in ref else f"{ref}:app"
    paths = [str(p) for p in settings.app.path]
    try:
        value = import_ref(full, "app", paths)
        if isinstance(value, App):
            return value
        if inspect.isfunction(value):
            return app_from_ref(full, paths)  # calls it, and checks what it returns
    except AppError as exc:  # its messages name the [app] key; this one came from --app
        raise AppError(str(exc).replace(f"[app] app entry {full!r}", f"--app {ref!r}")) from None
    kind = f"the class {value.__name__}" if inspect.isclass(value) else f"a {type(value).__name__}"
    raise AppError(
        f"--app {ref!r} names {kind}, not a tether.App; name an App instance (e.g. app = "
        "App(workflows=[MyWorkflow], tools=[MyTools])) or a function that returns one"
    )


def check_tools(app: App) -> None:
    """AppError naming the first tools class a worker cannot build (`App.check_tools`)."""
    app.check_tools()


def _run(coro: Coroutine[Any, Any, Any]) -> Any:
    return asyncio.run(coro)


def _stores(settings: Settings) -> tuple[Ledger, ApprovalStore]:
    engine = make_engine(settings.database_url)
    return Ledger(engine), ApprovalStore(engine)


def event_line(e: RecordedEvent) -> str:
    """One ledger event as one line: `tether audit show`'s timeline (and the demo's).
    Print it as plain text (`out` does): tiers and rules in brackets are not Rich markup."""
    target = f"{e.action} {e.resource}".strip()
    why = f"tier={e.tier} rule={e.rule} " if e.tier else ""
    return f"#{e.seq:<4} step {e.step} {e.kind:<18} {target:<40} {why}by {e.actor} -> {e.outcome}"


def red(label: str, rest: str) -> Text:
    """`label` in red, then `rest` as written: a failure line (`ledger broken: …`)."""
    return Text.assemble((label, "red"), rest)


def _tsv(cell: Cell) -> str:
    plain = cell.plain if isinstance(cell, Text) else cell
    return plain.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")


def emit_table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[Cell]],
    *,
    ids: Collection[str] = (),
    console: Console | None = None,
) -> None:
    """Print a listing: a Rich table on a terminal, else tab-separated lines for scripts.

    On a terminal every cell is `Text` (brackets stay brackets) and no column ends in an
    ellipsis: the `ids` columns keep each value on one line when the terminal is wide
    enough for them, and fold onto the next line (every character kept) when it is not.
    Anywhere else (a pipe, a file) the output is a header line of the column names and
    one line per row, cells separated by tabs, nothing cut; a tab, newline or backslash
    inside a cell is written as `\\t`, `\\n` or `\\\\`. The title then goes to stderr,
    so stdout holds the data alone.
    """
    console = console or out
    table_rows = [[c if isinstance(c, Text) else Text(c) for c in row] for row in rows]
    if set(ids) - set(columns) or any(len(row) != len(columns) for row in table_rows):
        raise ValueError(f"rows and ids {sorted(ids)} must fit the columns {list(columns)}")
    if not console.is_terminal:
        err.print(title)
        lines = ["\t".join(_tsv(c) for c in columns)]
        lines += ["\t".join(_tsv(c) for c in row) for row in table_rows]
        console.file.write("".join(f"{line}\n" for line in lines))
        console.file.flush()
        return
    widths = [
        max([len(h), *(row[i].cell_len for row in table_rows)]) for i, h in enumerate(columns)
    ]
    id_width = sum(w + 3 for h, w in zip(columns, widths, strict=True) if h in ids)
    others = sum(h not in ids for h in columns)
    # One line per id only where that cannot crop it: Rich narrows a no_wrap column
    # (cutting it) once the other columns cannot shrink any further.
    one_line = id_width + 4 * others + 1 <= console.width
    table = Table(title=Text(title), title_justify="left")
    for header in columns:
        table.add_column(Text(header), overflow="fold", no_wrap=one_line and header in ids)
    for row in table_rows:
        table.add_row(*row)
    console.print(table)
