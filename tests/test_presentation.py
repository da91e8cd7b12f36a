"""How a tool call reads: the title language, key fields, and declaration-time checks."""

from __future__ import annotations

import re

import pytest
from pydantic import BaseModel, JsonValue

from tether.activities.tools import REGISTRY, spec_of, tool
from tether.errors import AppError
from tether.governance.presentation import field_formats, format_value, key_values, render_title


class Pay(BaseModel):
    vendor: str
    amount: float
    invoice_id: str
    rush: bool = False


ARGS: dict[str, JsonValue] = {
    "vendor": "globex",
    "amount": 25000.0,
    "invoice_id": "INV-7",
    "rush": True,
}


@pytest.mark.parametrize(
    ("template", "text"),
    [
        ("Pay {amount:$} to {vendor} for {invoice_id}", "Pay $25,000.00 to globex for INV-7"),
        ("{amount:$EUR} {vendor:upper}", "EUR 25,000.00 GLOBEX"),
        ("{amount:,} rush: {rush}", "25,000 rush: yes"),
        ("{{literal}} {vendor}", "{literal} globex"),
    ],
)
def test_titles_render_in_the_small_language(template: str, text: str) -> None:
    assert render_title(template, ARGS) == text


def test_values_that_are_odd_never_break_a_title() -> None:
    assert render_title("{amount:$}", {"amount": "n/a"}) == "n/a"
    assert render_title("{amount:$}", {}) == "—"
    assert format_value(-12.5, "$") == "-$12.50" and format_value(0.25, "%") == "25.0%"
    assert key_values(("amount:$", "vendor", "nope"), ARGS) == [
        ("amount", "$25,000.00"),
        ("vendor", "globex"),
    ]


def test_a_declaration_naming_an_unknown_field_or_format_is_refused() -> None:
    async def pay(args: Pay) -> Pay:
        return args

    cases = [
        ({"title": "Pay {amout:$}"}, "names 'amout', which is not an argument; use one of"),
        ({"title": "Pay {amount:money}"}, "is not {field} or {field:FORMAT}"),
        ({"title": "Pay {vendor.__class__}"}, "is not {field} or {field:FORMAT}"),
        ({"title": "Pay {amount"}, "unmatched '{'"),
        ({"key_fields": ("amount:$", "total")}, "key_fields: 'total' is not an argument"),
        ({"editable": ("amount:$",)}, "editable: 'amount:$' is not an argument"),
        ({"editable": ("vendor",)}, "editable field 'vendor' appears in the resource"),
    ]
    for extra, message in cases:
        with pytest.raises(TypeError, match=re.escape(message)):
            tool(action="pay.test", resource="vendor/{vendor}", name="pay_test", **extra)(pay)  # type: ignore[arg-type]
    spec = spec_of(
        tool(
            action="pay.test",
            resource="vendor/{vendor}",
            name="pay_test_ok",
            title="Pay {amount:$} to {vendor}",
            key_fields=("amount:$",),
            editable=("amount",),
        )(pay)
    )
    REGISTRY.pop(spec.name)  # declared for this test only
    assert spec.title_of(ARGS) == "Pay $25,000.00 to globex" and spec.editable == ("amount",)


def test_edited_values_are_formatted_as_the_tool_presents_its_arguments() -> None:
    from tether.console.details import edit_rows, tool_formats
    from tether.verification.events import LedgerEvent

    # A key field's format wins over the title's; a field named in neither has none.
    formats = field_formats("Pay {amount:$} to {vendor:upper} by {rate:%}", ("amount:$EUR",))
    assert formats == {"amount": "$EUR", "vendor": "upper", "rate": "%"}
    assert field_formats("Pay {amount", ()) == {}  # a malformed title formats nothing
    event = LedgerEvent(
        idempotency_key="k",
        workflow_id="wf",
        run_id="run",
        step=3,
        kind="approval.edited",
        actor="user:alice",
        outcome="edited",
        payload={
            "edits": {"amount": 4800.0, "due_in_days": 30},
            "original": {"amount": 25000.0, "due_in_days": 14},
        },
    )
    rows = [(r.name, r.original, r.edited) for r in edit_rows(event, {"amount": "$"})]
    assert rows == [("amount", "$25,000.00", "$4,800.00"), ("due in days", "14", "30")]
    assert edit_rows(None, {}) == []

    def no_app() -> object:
        raise AppError("no [app] is configured")

    async def pay(args: Pay) -> Pay:
        return args

    spec = spec_of(
        tool(
            action="pay.test",
            resource="vendor/{vendor}",
            name="pay_test_formats",
            title="Pay {amount:$} to {vendor}",
        )(pay)
    )
    try:
        assert tool_formats("pay_test_formats", no_app) == {"amount": "$"}
    finally:
        REGISTRY.pop(spec.name)
    assert tool_formats("no_such_tool", no_app) == {}  # unformatted, not an error
