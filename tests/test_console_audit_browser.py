"""The auditor's pages in Debian's chromium (Playwright), at 1280 px and 390 px: an open
approval wait drawn to now, the same run halted by a kill switch and shown as halted,
stored content opened by a cleared person and refused to one who is not, and an error
page that keeps the navigation; axe-core finds no serious or critical violation."""

from __future__ import annotations

import pytest
from playwright.async_api import Browser, Error, Page, Response, expect
from temporalio.client import Client
from temporalio.worker import Worker

from tests.conftest import start_invoice
from tests.console_axe import assert_accessible
from tests.console_helpers import awaiting_approval
from tests.test_console_browser import csettings, signed_in  # noqa: F401 (fixtures)
from tether.core.config import Settings
from tether.runtime.kill import halt_pending
from tether.worker import Runtime

pytest_plugins = ["tests.console_fixtures"]

WIDTHS = (1280, 390)


async def visit(page: Page, url: str) -> Response | None:
    """`page.goto`, again when a navigation the page started itself aborted it."""
    for _ in range(3):
        try:
            return await page.goto(url)
        except Error as exc:
            if "ERR_ABORTED" not in exc.message:
                raise
    return await page.goto(url)


async def no_serious_violations(page: Page) -> None:
    await assert_accessible(page, page.url)


@pytest.mark.parametrize("width", WIDTHS)
async def test_an_open_wait_then_a_halt_on_the_run_page(
    client: Client,
    csettings: Settings,  # noqa: F811
    crt: Runtime,
    cworker: Worker,
    base_url: str,
    chromium: Browser,
    width: int,
) -> None:
    handle, _ = await awaiting_approval(client, csettings, crt, "INV-1003", "user:bob")
    carol = await signed_in(chromium, base_url, "user:carol")
    await carol.set_viewport_size({"width": width, "height": 900})
    await visit(carol, f"/runs/{handle.id}")
    await expect(carol.locator("#outcome")).to_have_text("in progress")
    timeline = carol.locator("svg.timeline")
    await expect(timeline).to_be_visible()
    await expect(timeline.locator('rect[data-open="1"]')).to_have_count(1)
    await expect(timeline.locator("text.now")).to_have_text("now")
    ticks = await timeline.locator('text.tick[text-anchor="middle"]').all_text_contents()
    assert ticks and len(ticks) == len(set(ticks)), ticks
    await expect(carol.locator("#run-input")).to_contain_text("INV-1003")
    await no_serious_violations(carol)  # the page updates in place while the run waits

    record = crt.kills.engage("agent", "agent:ap-clerk", reason="runaway", engaged_by="user:olga")
    assert (await halt_pending(client, crt.approvals, record)).halted == [handle.id]
    assert (await handle.result()).status == "halted"
    await carol.reload()
    await expect(carol.locator("#workflow-status")).to_have_text("completed")
    await expect(carol.locator("#outcome")).to_have_text("halted by kill switch")
    await expect(carol.locator("#halted-by")).to_contain_text("user:olga")
    await expect(carol.locator("#halted-by")).to_contain_text("runaway")
    await expect(timeline.locator('[data-mark="halted"]').first).to_be_visible()
    await expect(timeline.locator('rect[data-open="1"]')).to_have_count(0)
    row = carol.locator('#events tr[data-kind="approval.decided"]')
    await expect(row).to_contain_text("halted by kill switch")
    await expect(row.locator("td.comment")).to_contain_text("runaway")
    await visit(carol, "/runs?outcome=halted")
    await expect(carol.locator(f'tr[data-run="{handle.id}"]')).to_contain_text("halted")
    await no_serious_violations(carol)
    crt.kills.release("agent", "agent:ap-clerk", released_by="user:olga")


async def test_content_opens_for_the_cleared_and_errors_keep_navigation(
    client: Client,
    csettings: Settings,  # noqa: F811
    crt: Runtime,
    cworker: Worker,
    base_url: str,
    chromium: Browser,
) -> None:
    paid = await start_invoice(client, csettings, "INV-1001", started_by="user:dana")
    assert (await paid.result()).status == "paid"
    alice = await signed_in(chromium, base_url, "user:alice")
    await visit(alice, f"/runs/{paid.id}")
    await expect(alice.locator("#outcome")).to_have_text("paid")
    await expect(alice.locator("#run-result")).to_contain_text("rcpt-")
    link = alice.locator("a.content-link", has_text="prompt").first
    href = await link.get_attribute("href")
    assert href
    await link.click()
    await expect(alice.locator("#content")).to_contain_text("Extract the invoice fields")
    await expect(alice.locator("#sensitivity")).to_have_text("confidential")
    await no_serious_violations(alice)

    carol = await signed_in(chromium, base_url, "user:carol")
    await visit(carol, f"/runs/{paid.id}")
    await expect(carol.locator("a.content-link")).to_have_count(0)
    await expect(carol.locator("#content-hidden")).to_be_visible()
    for width in WIDTHS:
        await carol.set_viewport_size({"width": width, "height": 900})
        answer = await visit(carol, href)
        assert answer is not None and answer.status == 403
        await expect(carol.locator("#error-title")).to_have_text("Not allowed")
        await expect(carol.locator("#error-message")).to_contain_text("not cleared")
        await expect(carol.locator("#person")).to_have_text("user:carol")
        await no_serious_violations(carol)
        missing = await visit(carol, "/no/such/page")
        assert missing is not None and missing.status == 404
        await expect(carol.locator("#error-title")).to_have_text("Page not found")
        await no_serious_violations(carol)
        wrong = await visit(carol, "/logout")  # signing out is a form's POST
        assert wrong is not None and wrong.status == 405
        await expect(carol.locator("#person")).to_have_text("user:carol")
        await no_serious_violations(carol)
        await carol.go_back()
        await carol.locator("ul.next a", has_text="Search the runs").click()
        await expect(carol.locator("h1")).to_have_text("Runs")
