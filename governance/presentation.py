"""How a person reads a tool call: a title template over its arguments, and key fields.

A tool declares `title="Pay {amount:$} to {vendor} for {invoice_id}"`. The language is
deliberately small — not `str.format`, which reaches attributes and indexes:

- `{field}`: an argument (a field of the tool's arguments model), shown as text;
- `{field:FORMAT}` with FORMAT one of `FORMATS`: `$` money (two decimals, thousands
  separated; `$EUR` names the currency), `,` a number with thousands separators,
  `%` a fraction as a percentage, `upper`, `lower`;
- `{{` and `}}` are literal braces. Nothing else: no attributes, no indexes, no nesting.

`compile_template` checks a template against the model's field names once, at
declaration time (TypeError naming the unknown field and the known ones); `render_title`
is pure and deterministic (workflow code calls it) and never raises on odd values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping

from pydantic import JsonValue

FORMATS = ("$", ",", "%", "upper", "lower")
"""Format names a template may use after a colon; `$` may name a currency (`$EUR`)."""

_TOKEN = re.compile(r"\{\{|\}\}|\{([^{}]*)\}|[{}]")
_FIELD = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)(?::(\$[A-Z]{3}|\$|,|%|upper|lower))?$")


def template_fields(template: str) -> list[tuple[str, str]]:
    """The (field, format) pairs of `template`; ValueError when it is not well formed."""
    found: list[tuple[str, str]] = []
    for match in _TOKEN.finditer(template):
        token = match.group(0)
        if token in ("{{", "}}"):
            continue
        if token in ("{", "}"):
            raise ValueError(f"template {template!r} has an unmatched {token!r}; write {token * 2}")
        field = _FIELD.match(match.group(1).strip())
        if field is None:
            raise ValueError(
                f"template {template!r}: {token!r} is not {{field}} or {{field:FORMAT}} "
                f"with FORMAT one of {', '.join(FORMATS)} (or $ and a currency code, $EUR)"
            )
        found.append((field.group(1), field.group(2) or ""))
    return found


def compile_template(template: str, known: Iterable[str], what: str) -> str:
    """`template` when every field it names is in `known`; TypeError naming the rest."""
    names = sorted(known)
    try:
        fields = template_fields(template)
    except ValueError as exc:
        raise TypeError(f"{what}: {exc}") from None
    for name, _ in fields:
        if name not in names:
            raise TypeError(
                f"{what}: template {template!r} names {name!r}, which is not an argument; "
                f"use one of {', '.join(names)}"
            )
    return template


def check_fields(
    fields: Iterable[str], known: Iterable[str], what: str, *, formats: bool = False
) -> tuple[str, ...]:
    """`fields` as a tuple when each is in `known` (with `formats`, each may carry a
    `:FORMAT`, as in a template); TypeError naming the first that is not."""
    names = sorted(known)
    chosen = tuple(fields)
    for entry in chosen:
        parsed = _FIELD.match(entry) if formats else None
        name = parsed.group(1) if parsed else entry
        if name not in names or (not formats and ":" in entry):
            raise TypeError(f"{what}: {entry!r} is not an argument; use one of {', '.join(names)}")
    return chosen


def key_values(fields: Iterable[str], args: Mapping[str, JsonValue]) -> list[tuple[str, str]]:
    """(label, value) rows of the key fields (`name` or `name:FORMAT`) of `args`."""
    rows: list[tuple[str, str]] = []
    for entry in fields:
        parsed = _FIELD.match(entry)
        if parsed is None or parsed.group(1) not in args:
            continue
        name = parsed.group(1)
        rows.append((name.replace("_", " "), format_value(args[name], parsed.group(2) or "")))
    return rows


def format_value(value: JsonValue, fmt: str = "") -> str:
    """One argument as a person reads it (`fmt` as in a template)."""
    number = (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
    )
    if fmt.startswith("$") and number is not None:
        code = fmt[1:]
        sign = "-" if number < 0 else ""
        text = f"{abs(number):,.2f}"
        return f"{sign}{code} {text}" if code else f"{sign}${text}"
    if fmt == "," and number is not None:
        return f"{number:,.0f}" if number == int(number) else f"{number:,}"
    if fmt == "%" and number is not None:
        return f"{number * 100:.1f}%"
    if value is None:
        text = "—"
    elif isinstance(value, str):
        text = value
    elif isinstance(value, bool):
        text = "yes" if value else "no"
    elif number is not None:
        text = str(int(number)) if number == int(number) else str(number)
    else:
        text = json.dumps(value, ensure_ascii=False, sort_keys=True)
    if fmt == "upper":
        return text.upper()
    if fmt == "lower":
        return text.lower()
    return text


def render_title(template: str, args: Mapping[str, JsonValue]) -> str:
    """`template` filled in from `args`; "" for an empty or malformed template."""
    if not template:
        return ""
    try:
        template_fields(template)
    except ValueError:
        return ""

    def one(match: re.Match[str]) -> str:
        token = match.group(0)
        if token == "{{":
            return "{"
        if token == "}}":
            return "}"
        field = _FIELD.match(match.group(1).strip())
        assert field is not None  # template_fields checked it
        return format_value(args.get(field.group(1)), field.group(2) or "")

    return _TOKEN.sub(one, template)[:200]


def field_formats(title: str, key_fields: Iterable[str]) -> dict[str, str]:
    """The format each argument is read with: its key field's `:FORMAT`, else the one the
    title template gives it (`{amount:$}`); arguments named in neither are absent."""
    formats: dict[str, str] = {}
    try:
        fields = template_fields(title) if title else []
    except ValueError:
        fields = []
    for name, fmt in fields:
        if fmt:
            formats.setdefault(name, fmt)
    for entry in key_fields:
        parsed = _FIELD.match(entry)
        if parsed is not None and parsed.group(2):
            formats[parsed.group(1)] = parsed.group(2)
    return formats
