"""The console's policy-impact page: operations staff see what a proposed policy would
change over the decisions real runs recorded, before anyone pushes it."""

from __future__ import annotations

import re

import httpx
from markupsafe import escape
from temporalio.client import Client
from temporalio.worker import Worker

from tests.conftest import start_invoice
from tests.console_helpers import csrf_of, sign_in
from tether.core.config import Settings
from tether.worker import Runtime

pytest_plugins = ["tests.console_fixtures"]

MEDIUM = "r.ctx.amount > 1000 && r.ctx.amount <= 10000, notify, ap-pay-medium, -, -"
APPROVE_MEDIUM = (
    "r.ctx.amount > 1000 && r.ctx.amount <= 10000, approve, ap-pay-medium, role:ap-approver, 24h"
)


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


async def test_operations_see_the_impact_of_a_proposed_policy(
    client: Client,
    csettings: Settings,
    crt: Runtime,
    cworker: Worker,
    base_url: str,
) -> None:
    small = await start_invoice(client, csettings, "INV-1001", text="Invoice INV-1001, $250.00")
    medium = await start_invoice(client, csettings, "INV-1002", text="Invoice INV-1002, $4,800.00")
    assert (await small.result()).status == "paid" and (await medium.result()).status == "paid"
    async with (
        httpx.AsyncClient(base_url=base_url, timeout=60) as olga,
        httpx.AsyncClient(base_url=base_url, timeout=60) as alice,
    ):
        await sign_in(alice, "user:alice")
        assert (await alice.get("/policy/impact")).status_code == 403
        await sign_in(olga, "user:olga")
        page = await olga.get("/policy/impact")
        assert page.status_code == 200 and 'href="/policy/impact"' in page.text
        in_force = csettings.policy_path.read_text()
        assert MEDIUM in in_force and escape(MEDIUM) in page.text  # the form starts from it
        proposed = in_force.replace(MEDIUM, APPROVE_MEDIUM)
        form = {"csrf": csrf_of(page.text), "since": "1d", "policy": proposed}
        forged = await olga.post("/policy/impact", data={**form, "csrf": "x"})
        assert forged.status_code == 403
        shown = await olga.post("/policy/impact", data=form)
        assert shown.status_code == 200, shown.text
        text = _text(shown.text)
        recorded = [e for e in crt.ledger.events_of_kind("decision") if e.policy_version]
        assert f"{len(recorded)} decision(s) recorded since" in text
        assert "1 would change tier (1 stricter, 0 looser)" in text and "1 run(s) affected" in text
        assert "notify→approve 1" in text and "auto→approve" not in text
        assert f'href="/runs/{medium.id}"' in shown.text and small.id not in shown.text
        assert escape(APPROVE_MEDIUM) in shown.text  # the proposal stays beside its report

        broken = await olga.post("/policy/impact", data={**form, "policy": "p, x"})
        assert broken.status_code == 400 and "needs 8 fields" in _text(broken.text)
