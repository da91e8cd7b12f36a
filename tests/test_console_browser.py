"""The console in a real headless browser (Debian's `chromium`, driven by Playwright).

An approver signs in, sees the pending request, approves it and watches the workflow
complete; the approver who started a run neither sees nor can open its request; a
rejection's reason reaches the agent (with JavaScript off: the pages need none); a tool
argument holding `<script>` renders as text.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, expect
from temporalio.client import Client
from temporalio.worker import Worker

from tests.conftest import bank_of
from tests.console_axe import assert_accessible, assert_accessible_without_script
from tests.console_helpers import XSS, awaiting_approval, console_settings, password
from tether.core.config import Settings
from tether.worker import Runtime

pytest_plugins = ["tests.console_fixtures"]


@pytest.fixture
def csettings(settings: Settings, tmp_path: Path) -> Settings:
    """The console as configured by default: its session cookie is Secure, which a
    browser keeps for http://127.0.0.1 (other clients only for https)."""
    return console_settings(settings, tmp_path).model_copy(update={"console_secure_cookies": True})


async def signed_in(
    browser: Browser, base_url: str, person: str, *, javascript: bool = True, width: int = 1280
) -> Page:
    context = await browser.new_context(
        base_url=base_url,
        java_script_enabled=javascript,
        viewport={"width": width, "height": 900},
    )
    page = await context.new_page()
    await page.goto("/inbox")
    await expect(page.locator("h1")).to_have_text("Sign in")
    await page.fill("input[name=person]", person)
    await page.fill("input[name=password]", password(person))
    await page.click("button[type=submit]")
    await expect(page.locator("#person")).to_have_text(person)
    (cookie,) = [c for c in await context.cookies() if c["name"] == "tether_session"]
    assert cookie.get("secure") and cookie.get("httpOnly")
    return page


async def test_approve_in_the_browser_and_watch_the_run_complete(
    client: Client,
    csettings: Settings,
    crt: Runtime,
    cworker: Worker,
    base_url: str,
    chromium: Browser,
) -> None:
    handle, pending = await awaiting_approval(client, csettings, crt, "INV-1003", "user:bob")

    # bob started the run: his own request is neither listed nor open to him.
    bob = await signed_in(chromium, base_url, "user:bob")
    await bob.reload()
    await expect(bob.locator("#empty")).to_have_text("Nothing waits for you.")
    await bob.goto(f"/requests/{pending.request_id}")
    await expect(bob.locator("p.error")).to_contain_text("is not waiting for your decision")
    await expect(bob.locator("form#decide")).to_have_count(0)
    await assert_accessible(bob, "a request not offered")

    alice = await signed_in(chromium, base_url, "user:alice")
    row = alice.locator(f'tr[data-request="{pending.request_id}"]')
    await expect(row.locator("a.open")).to_have_text("Pay $25,000.00 to globex for INV-1003")
    await expect(row.locator("time.countdown")).to_have_text(
        # hours and minutes left of the 24h deadline (the page script counts them down)
        re.compile(r"^2[34]h \d+m$")
    )
    await row.locator("a.open").click()
    await expect(alice.locator("h1")).to_have_text("Pay $25,000.00 to globex for INV-1003")
    await expect(alice.locator("#rule")).to_have_text("ap-pay-large")
    await expect(alice.locator("#policy-version")).to_have_text(pending.policy_version)
    args = alice.locator("#arguments")
    await expect(args).to_contain_text("INV-1003")
    await expect(args).to_contain_text("globex")
    await expect(alice.locator("#influences")).to_contain_text("model call")
    await assert_accessible(alice, "a pending request")
    await alice.fill("textarea[name=comment]", "PO 4711 matches")
    await alice.click("button.approve")
    # The decision redirects to the request's page, now decided (reloading posts nothing).
    await expect(alice.locator("#decided h2")).to_have_text("Approved")
    await expect(alice.locator("#decided-by")).to_have_text("user:alice")
    await expect(alice.locator("#decided-comment")).to_have_text("PO 4711 matches")
    await assert_accessible(alice, "an approved request")
    await alice.reload()
    await expect(alice.locator("#decided-by")).to_have_text("user:alice")
    await alice.click(f"a[href='/runs/{handle.id}']")
    # The run page refreshes itself while the workflow runs.
    await expect(alice.locator("#workflow-status")).to_have_text("completed", timeout=30_000)
    await expect(alice.locator('#events tr[data-kind="tool.executed"]')).to_have_count(1)
    await expect(alice.locator("svg.timeline")).to_be_visible()
    result = await handle.result()
    assert result.status == "paid" and result.receipt_id


async def test_a_rejection_reason_reaches_the_agent_without_javascript(
    client: Client,
    csettings: Settings,
    crt: Runtime,
    cworker: Worker,
    base_url: str,
    chromium: Browser,
) -> None:
    handle, pending = await awaiting_approval(client, csettings, crt, "INV-1003", "user:dana")
    bob = await signed_in(chromium, base_url, "user:bob", javascript=False)
    await bob.click(f'tr[data-request="{pending.request_id}"] a.open')
    await bob.click("button.reject")  # no reason: refused by the console, nothing sent
    await expect(bob.locator("#refused")).to_contain_text("needs a reason")
    await assert_accessible_without_script(
        chromium, bob, "a rejection refused for want of a reason"
    )
    await bob.fill("textarea[name=comment]", "duplicate of INV-0999")
    await bob.click("button.reject")
    await expect(bob.locator("#decided")).to_have_class(re.compile(r"\brejected\b"))
    await expect(bob.locator("#decided-by")).to_have_text("user:bob")
    await expect(bob.locator("#decided-comment")).to_have_text("duplicate of INV-0999")
    await assert_accessible_without_script(chromium, bob, "a rejected request")
    result = await handle.result()
    assert result.status == "rejected"
    assert "duplicate of INV-0999" in result.message
    assert bank_of(crt).payments("INV-1003") == 0


async def test_a_script_in_a_tool_argument_renders_as_text(
    client: Client,
    csettings: Settings,
    crt: Runtime,
    cworker: Worker,
    base_url: str,
    chromium: Browser,
) -> None:
    handle, pending = await awaiting_approval(client, csettings, crt, "INV-XSS", "user:bob")
    alice = await signed_in(chromium, base_url, "user:alice")
    dialogs: list[str] = []
    alice.on("dialog", lambda d: dialogs.append(d.message))
    await alice.goto(f"/requests/{pending.request_id}")
    cell = alice.locator("#arguments tr", has_text="invoice_id").locator("td")
    await expect(cell).to_have_text(XSS)
    # The headline names the argument as text; had the script run, the title would be 'pwned'.
    assert await alice.title() == f"Pay $30,000.00 to globex for {XSS} · Tether console"
    await expect(alice.locator("h1")).to_have_text(f"Pay $30,000.00 to globex for {XSS}")
    assert await alice.locator("h1 script").count() == 0
    assert await alice.locator("#arguments script").count() == 0
    assert dialogs == []
    await assert_accessible(alice, "a request with a script in an argument")
    await handle.cancel()


async def test_approve_with_a_raise_in_the_browser_is_decided_anew_and_paid_once(
    client: Client,
    csettings: Settings,
    crt: Runtime,
    cworker: Worker,
    base_url: str,
    chromium: Browser,
) -> None:
    handle, _ = await awaiting_approval(client, csettings, crt, "INV-1003", "user:bob")
    alice = await signed_in(chromium, base_url, "user:alice")
    await alice.get_by_role("link", name="Decide: Pay $25,000.00 to globex for INV-1003").click()
    await expect(alice.locator("h1")).to_have_text("Pay $25,000.00 to globex for INV-1003")
    await expect(alice.locator("#why")).to_contain_text("amount is more than 10000")
    await expect(alice.locator(".model-call .prompt")).to_contain_text("Invoice INV-1003")
    await expect(alice.locator(".model-call .badge")).to_have_text("confidential data")
    # A raise past 100k crosses into the controllers' rule: the edit is decided anew.
    await alice.get_by_label("amount").fill("120000")
    await alice.fill("textarea[name=comment]", "late fee agreed with globex")
    await alice.click("button.approve")
    # The values as the tool's presentation reads them (its key field "amount:$").
    await expect(alice.locator("#edited")).to_contain_text("amount from $25,000.00 to $120,000.00")
    await assert_accessible(alice, "a request edited into another rule")
    olga = await signed_in(chromium, base_url, "user:olga")
    reopened = olga.get_by_role("link", name="Decide: Pay $120,000.00 to globex for INV-1003")
    await expect(reopened).to_be_visible()
    await reopened.click()
    await expect(olga.locator("#rule")).to_have_text("ap-pay-huge")
    await expect(olga.locator("#edited")).to_contain_text("user:alice")
    await expect(olga.locator("fieldset#edits")).to_have_count(0)  # a re-decision is as is
    await assert_accessible(olga, "an edit decided anew")
    await olga.click("button.approve")
    await expect(olga.locator("#decided-by")).to_have_text("user:olga")
    await expect(olga.locator("#decided-edits")).to_have_text(
        "With changes: amount from $25,000.00 to $120,000.00."
    )
    result = await handle.result()
    assert result.status == "paid" and result.receipt_id
    # The bank paid the edited amount, once; the run's ledger shows the edit.
    assert bank_of(crt).payments("INV-1003") == 1
    events = crt.ledger.events(handle.id)
    (edited,) = [e for e in events if e.kind == "approval.edited"]
    assert edited.payload["edits"] == {"amount": 120000.0}
    (executed,) = [e for e in events if e.kind == "tool.executed"]
    assert executed.payload["args_digest"] == edited.payload["edited_digest"]
    await olga.goto(f"/runs/{handle.id}")
    await expect(olga.locator('#events tr[data-kind="approval.edited"]')).to_have_count(1)


@pytest.mark.parametrize("width", [1280, 390])
async def test_approve_with_a_cut_shows_both_amounts_formatted_and_pays_the_cut(
    client: Client,
    csettings: Settings,
    crt: Runtime,
    cworker: Worker,
    base_url: str,
    chromium: Browser,
    width: int,
) -> None:
    handle, pending = await awaiting_approval(client, csettings, crt, "INV-1003", "user:bob")
    alice = await signed_in(chromium, base_url, "user:alice", width=width)
    await alice.goto(f"/requests/{pending.request_id}")
    await expect(alice.locator("fieldset#edits")).to_be_visible()
    await assert_accessible(alice, "a request with an editable amount")
    # A cut never lowers the tier: alice's approval (bound to the edited arguments) stands.
    await alice.get_by_label("amount").fill("4,800")
    await alice.fill("textarea[name=comment]", "credit note CN-17 applied")
    await alice.click("button.approve")
    await expect(alice.locator("#decided h2")).to_have_text("Approved")
    await expect(alice.locator("#decided-edits")).to_have_text(
        "With changes: amount from $25,000.00 to $4,800.00."
    )
    await expect(alice.locator("#edited")).to_contain_text("amount from $25,000.00 to $4,800.00")
    await expect(alice.locator("#decided")).not_to_contain_text("4800.0")
    await assert_accessible(alice, "a request approved with a cut")
    assert (await handle.result()).status == "paid"
    assert bank_of(crt).payments("INV-1003") == 1
    events = crt.ledger.events(handle.id)
    (edited,) = [e for e in events if e.kind == "approval.edited"]
    assert edited.payload["edits"] == {"amount": 4800.0}
    (executed,) = [e for e in events if e.kind == "tool.executed"]
    assert executed.payload["args_digest"] == edited.payload["edited_digest"]
