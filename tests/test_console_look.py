"""The console's look and accessibility, in Debian's `chromium` driven by Playwright.

Every page is walked at 1280 px and at 390 px wide with axe-core in the page
(`axe-playwright-python`): no serious or critical violation, and at 390 px the page is no
wider than the screen. A waiting inbox says "new requests" without reloading itself or
moving the focus. The landing page depends on the person's roles, a requester sees the
requests of their runs, the nav counts what waits and marks the current page. A test
draws the screenshots of docs/console.md (into docs/images/ with TETHER_SCREENSHOTS=1).
"""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest
from playwright.async_api import Browser, Page, expect
from temporalio.client import Client
from temporalio.worker import Worker

from tests.conftest import start_invoice
from tests.console_axe import Walk
from tests.console_helpers import (
    awaiting_approval,
    console_settings,
    password,
    serve,
    sign_in,
)
from tether.console.app import Viewer
from tether.console.auth import Session
from tether.console.requester import landing
from tether.core.config import Settings
from tether.worker import Runtime

pytest_plugins = ["tests.console_fixtures"]

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def csettings(settings: Settings, tmp_path: Path) -> Settings:
    """Browser settings: the session cookie Secure (a browser keeps it for 127.0.0.1)."""
    return console_settings(settings, tmp_path).model_copy(update={"console_secure_cookies": True})


async def browse(browser: Browser, base_url: str, person: str | None) -> Page:
    """A new browser page, signed in as `person` (None: signed out)."""
    context = await browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    page = await context.new_page()
    if person is not None:
        await page.goto("/login")
        await page.fill("input[name=person]", person)
        await page.fill("input[name=password]", password(person))
        await page.click("form.card button[type=submit]")
        await expect(page.locator("#person")).to_have_text(person)
    return page


async def test_every_page_passes_axe_at_1280_and_390_px(
    client: Client,
    csettings: Settings,
    crt: Runtime,
    cworker: Worker,
    base_url: str,
    chromium: Browser,
) -> None:
    # A run under notify (the feed has a row) and one waiting for an approval.
    notified = await start_invoice(client, csettings, "INV-1002", started_by="user:bob")
    assert (await notified.result()).status == "paid"
    handle, pending = await awaiting_approval(client, csettings, crt, "INV-1003", "user:bob")
    walk = Walk()

    signed_out = await browse(chromium, base_url, None)
    await walk.visit(signed_out, "/login", "sign-in")

    alice = await browse(chromium, base_url, "user:alice")
    await walk.visit(alice, "/inbox")
    await expect(alice.locator('header nav a[aria-current="page"]')).to_have_text(
        "Inbox 1 waiting for you"
    )
    await walk.visit(alice, f"/requests/{pending.request_id}", "a pending request")
    for path in ("/my-requests", "/feed", "/runs", "/overview", f"/runs/{handle.id}"):
        await walk.visit(alice, path)
    await walk.visit(alice, "/overview?days=abc", "the 422 page")
    await walk.visit(alice, "/no-such-page", "the 404 page")
    await alice.goto(f"/requests/{pending.request_id}")
    await alice.fill("textarea[name=comment]", "PO 4711 matches")
    await alice.click("button.approve")
    await expect(alice.locator("#decided h2")).to_have_text("Approved")
    await walk.check(alice, "a decided request")
    await walk.visit(alice, f"/runs/{handle.id}/replay", "a replay")

    bob = await browse(chromium, base_url, "user:bob")
    await bob.goto("/my-requests")
    row = bob.locator(f'#mine tr[data-request="{pending.request_id}"]')
    await expect(row).to_contain_text("approved")
    await expect(row).to_contain_text("PO 4711 matches")
    await walk.check(bob, "a requester's requests")

    olga = await browse(chromium, base_url, "user:olga")
    await walk.visit(olga, "/kill", "the kill switch")
    await olga.select_option("#target", "agent|agent:ops-helper")
    await olga.fill("textarea[name=reason]", "look test")
    await olga.click("form#engage button[type=submit]")
    await expect(olga.locator("h1")).to_have_text("Confirm the kill switch")
    await walk.check(olga, "the kill switch's confirmation")
    await olga.click("form#confirm button[type=submit]")
    await olga.goto("/kill")
    await expect(olga.locator("#kill-banner")).to_contain_text("agent:ops-helper")
    await walk.check(olga, "the kill switch with a banner")
    await walk.visit(olga, "/policy/impact", "policy impact")
    await olga.click("form#propose button[type=submit]")
    await expect(olga.locator("#impact-summary")).to_contain_text("would change tier")
    await walk.check(olga, "a policy impact report")

    assert walk.problems == [], "\n".join(walk.problems)
    assert len(walk.pages) == 18
    # The checker is not inert: an unlabelled field in faint grey is caught.
    await signed_out.evaluate(
        "document.querySelector('main').insertAdjacentHTML('beforeend',"
        " '<p id=faint>faint</p><input name=x>');"
        "document.getElementById('faint').style.color = '#bbb'"  # CSP: no style attributes
    )
    await walk.check(signed_out, "a broken page")
    found = " ".join(walk.problems)
    assert "label (critical)" in found and "color-contrast (serious)" in found


async def test_a_new_request_is_announced_without_reload_or_lost_focus(
    client: Client,
    csettings: Settings,
    crt: Runtime,
    cworker: Worker,
    base_url: str,
    chromium: Browser,
) -> None:
    first, _ = await awaiting_approval(client, csettings, crt, "INV-1003", "user:bob")
    alice = await browse(chromium, base_url, "user:alice")
    await alice.goto("/inbox")
    await expect(alice.locator("#inbox tbody tr")).to_have_count(1)
    await alice.evaluate("window.notReloaded = true; window.scrollTo(0, 0)")
    await alice.locator("#inbox a.open").first.focus()
    second, _ = await awaiting_approval(client, csettings, crt, "INV-1003", "user:dana")
    notice = alice.locator("#live-notice")
    await expect(notice).to_contain_text("1 new request", timeout=15_000)
    await expect(notice.locator("a")).to_have_text("Reload")
    assert await alice.evaluate("window.notReloaded === true")
    assert await alice.evaluate("document.activeElement.classList.contains('open')")
    # The count in the nav is updated in place; the list waits for the person.
    await expect(alice.locator("#nav-inbox .count")).to_contain_text("2")
    await expect(alice.locator("#inbox tbody tr")).to_have_count(1)
    await notice.locator("a").click()
    await expect(alice.locator("#inbox tbody tr")).to_have_count(2)
    await expect(notice).to_be_empty()
    await first.cancel()
    await second.cancel()


SHOTS = ("login", "inbox", "request", "run", "feed", "kill", "inbox-390")


async def test_screenshots_of_the_main_pages(
    client: Client,
    csettings: Settings,
    crt: Runtime,
    cworker: Worker,
    base_url: str,
    chromium: Browser,
    tmp_path: Path,
) -> None:
    """The pictures in docs/console.md, drawn from a real run (TETHER_SCREENSHOTS=1 writes
    them to docs/images/; otherwise to a temporary folder, to check they still draw)."""
    folder = ROOT / "docs" / "images" if os.environ.get("TETHER_SCREENSHOTS") else tmp_path
    folder.mkdir(parents=True, exist_ok=True)
    notified = await start_invoice(client, csettings, "INV-1002", started_by="user:dana")
    assert (await notified.result()).status == "paid"
    handle, pending = await awaiting_approval(client, csettings, crt, "INV-1003", "user:bob")

    async def shoot(page: Page, name: str) -> None:
        # No caret, no animation: the same page draws the same picture.
        await page.screenshot(
            path=folder / f"console-{name}.png", animations="disabled", caret="hide"
        )

    signed_out = await browse(chromium, base_url, None)
    await signed_out.set_viewport_size({"width": 1000, "height": 520})
    await signed_out.goto("/login")
    await shoot(signed_out, "login")

    alice = await browse(chromium, base_url, "user:alice")
    await alice.set_viewport_size({"width": 1000, "height": 520})
    await alice.goto("/inbox")
    await shoot(alice, "inbox")
    await alice.set_viewport_size({"width": 1000, "height": 900})
    await alice.goto(f"/requests/{pending.request_id}")
    await shoot(alice, "request")
    await alice.goto(f"/runs/{handle.id}")
    await shoot(alice, "run")
    await alice.set_viewport_size({"width": 1000, "height": 420})
    await alice.goto("/feed")
    await expect(alice.locator("#feed th.title")).to_contain_text(
        "Pay $4,800.00 to northwind for INV-1002"
    )
    await shoot(alice, "feed")
    await alice.set_viewport_size({"width": 390, "height": 700})
    await alice.goto("/inbox")
    await shoot(alice, "inbox-390")

    olga = await browse(chromium, base_url, "user:olga")
    await olga.set_viewport_size({"width": 1000, "height": 700})
    await olga.goto("/kill")
    await shoot(olga, "kill")
    await handle.cancel()

    docs = (ROOT / "docs" / "console.md").read_text()
    for name in SHOTS:
        png = folder / f"console-{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert png.stat().st_size < 200_000, f"{png.name} is {png.stat().st_size} bytes"
        assert f"images/console-{name}.png" in docs, f"docs/console.md does not show {name}"


async def test_landing_page_nav_and_my_requests_over_http(
    client: Client,
    csettings: Settings,
    crt: Runtime,
    cworker: Worker,
) -> None:
    handle, pending = await awaiting_approval(client, csettings, crt, "INV-1003", "user:bob")
    # httpx keeps a Secure cookie only for https: this console serves plain http.
    with serve(csettings.model_copy(update={"console_secure_cookies": False})) as base_url:
        await _landing_nav_and_mine(base_url, pending.request_id)
    await handle.cancel()


async def _landing_nav_and_mine(base_url: str, request_id: str) -> None:
    landing = {}
    for person in ("user:alice", "user:olga", "user:carol"):
        async with httpx.AsyncClient(base_url=base_url) as http:
            await sign_in(http, person)
            home = await http.get("/")
            assert home.status_code == 303
            landing[person] = home.headers["location"]
            if person == "user:alice":
                inbox = (await http.get("/inbox")).text
                assert '<a class="skip" href="#main">' in inbox and '<main id="main"' in inbox
                assert '<a href="/inbox" aria-current="page" id="nav-inbox" data-live>' in inbox
                assert '<span class="count">1<' in inbox
                assert 'href="/static/favicon.svg"' in inbox
                icon = await http.get("/static/favicon.svg")
                assert icon.headers["content-type"].startswith("image/svg+xml")
            if person == "user:carol":  # carol started nothing
                mine = (await http.get("/my-requests")).text
                assert 'id="mine-empty"' in mine and request_id not in mine
    # Approvers land in their inbox (olga is also the policy's controller, an approver,
    # before her kill-switch role counts), everyone else (auditors by default:
    # console_auditor_roles is empty) on the runs.
    assert landing == {"user:alice": "/inbox", "user:olga": "/inbox", "user:carol": "/runs"}
    async with httpx.AsyncClient(base_url=base_url) as http:
        await sign_in(http, "user:bob")
        mine = (await http.get("/my-requests")).text
        assert f'data-request="{request_id}"' in mine
        assert '<span class="badge pending">pending</span>' in mine


def test_the_landing_page_follows_the_roles() -> None:
    def who(
        *, may_approve: bool = False, may_kill: bool = False, may_audit: bool = False
    ) -> Viewer:
        return Viewer(
            person="user:x",
            session=Session.new("user:x"),
            may_approve=may_approve,
            may_kill=may_kill,
            may_audit=may_audit,
        )

    # An approver who also audits and holds the kill switch still opens their inbox.
    assert landing(who(may_approve=True, may_kill=True, may_audit=True)) == "/inbox"
    assert landing(who(may_kill=True, may_audit=True)) == "/kill"
    assert landing(who(may_audit=True)) == "/runs"  # auditors only
    assert landing(who()) == "/my-requests"  # a requester with no role
