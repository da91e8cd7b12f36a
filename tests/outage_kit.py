"""Helpers of the outage tests: private endpoints on the test server, invoices it answers."""

from __future__ import annotations

from typing import Any

from tests.model_server import ModelServer
from tether.verification.events import LedgerEvent
from tether.worker import Runtime


def private_endpoints(
    server: ModelServer, *names: str, timeout_seconds: float = 1.5, **extra: Any
) -> list[dict[str, Any]]:
    """Private endpoints (model `m-<name>`) that may take the example's confidential
    invoices; the second and later ones stream their answers."""
    return [
        {
            "name": n,
            "base_url": server.base_url(n),
            "model": f"m-{n}",
            "private": True,
            "data_classes": ["confidential"],
            "timeout_seconds": timeout_seconds,
            "stream": i > 0,
            **extra,
        }
        for i, n in enumerate(names)
    ]


def invoice_answers(server: ModelServer, prefix: str, count: int) -> list[str]:
    """Invoices `<prefix>-001`… whose fields the server answers (auto tier: under $1000)."""
    invoices = [f"{prefix}-{i:03d}" for i in range(1, count + 1)]
    for i, invoice in enumerate(invoices):
        server.answer(
            f"Invoice {invoice}",
            {"invoice_id": invoice, "vendor": "acme-office", "amount": 100.0 + i},
        )
    return invoices


def events(runtime: Runtime, workflow_id: str, kind: str) -> list[LedgerEvent]:
    return [e for e in runtime.ledger.events(workflow_id) if e.kind == kind]
