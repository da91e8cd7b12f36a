"""What a benchmark hands back: its figures (for `--json`) and a table (for people)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pydantic import JsonValue
from rich.console import Console, RenderableType
from rich.table import Table


@dataclass
class Report:
    figures: dict[str, JsonValue]
    """One JSON object; `benchmark` names the benchmark."""
    table: RenderableType
    """The same figures for a terminal."""


def progress_console() -> Console:
    """Where progress bars go: stderr, so stdout carries only the table or the JSON."""
    return Console(stderr=True)


def _flatten(prefix: str, value: JsonValue) -> Iterator[tuple[str, str]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield from _flatten(f"{prefix}.{key}" if prefix else key, inner)
    elif isinstance(value, list):
        yield prefix, ", ".join(str(v) for v in value)
    elif isinstance(value, float):
        yield prefix, f"{value:,.3f}".rstrip("0").rstrip(".")
    elif isinstance(value, int) and not isinstance(value, bool):
        yield prefix, f"{value:,}"
    else:
        yield prefix, str(value)


def flat_table(title: str, figures: dict[str, JsonValue]) -> Table:
    """Any figures as a two-column table of dotted keys and values."""
    table = Table(title=title, show_header=True)
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in _flatten("", figures):
        table.add_row(key, value)
    return table
