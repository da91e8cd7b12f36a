"""Model usage totals from the ledger: per workflow, per agent and per endpoint.

Each `model.call` event carries the call's tokens and cost (the provider's usage figures,
or an estimate marked `tokens_estimated`), so totals need nothing but the ledger; the
control plane's rolling agent budgets are settled from the same figures by `call_model`.
Pure: no I/O beyond iterating the events given.
"""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, Field

from tether.verification.events import LedgerEvent


class UsageTotals(BaseModel):
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    estimated_calls: int = 0
    """Calls whose tokens were estimated (the provider reported no usage)."""


class UsageReport(BaseModel):
    total: UsageTotals = Field(default_factory=UsageTotals)
    by_workflow: dict[str, UsageTotals] = Field(default_factory=dict)
    by_agent: dict[str, UsageTotals] = Field(default_factory=dict)
    by_endpoint: dict[str, UsageTotals] = Field(default_factory=dict)


def _add(totals: UsageTotals, event: LedgerEvent) -> None:
    p = event.payload
    inp, out, cost = p.get("input_tokens"), p.get("output_tokens"), p.get("cost_usd")
    totals.calls += 1
    totals.input_tokens += inp if isinstance(inp, int) else 0
    totals.output_tokens += out if isinstance(out, int) else 0
    totals.cost_usd += float(cost) if isinstance(cost, int | float) else 0.0
    totals.estimated_calls += 1 if p.get("tokens_estimated") else 0


def usage_report(events: Iterable[LedgerEvent]) -> UsageReport:
    """Sum every `model.call` event of `events`."""
    report = UsageReport()
    for event in events:
        if event.kind != "model.call":
            continue
        endpoint = str(event.payload.get("endpoint") or event.payload.get("provider") or "")
        _add(report.total, event)
        _add(report.by_workflow.setdefault(event.workflow_id, UsageTotals()), event)
        _add(report.by_agent.setdefault(event.agent, UsageTotals()), event)
        _add(report.by_endpoint.setdefault(endpoint, UsageTotals()), event)
    return report
