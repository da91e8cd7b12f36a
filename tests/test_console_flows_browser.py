"""The console's flows in Debian's chromium (Playwright), each at 1280 px and at 390 px,
with axe-core run on every page state the flow visits (`tests.console_axe`: the whole
page, shared header and navigation included).

Sessions: signing out closes the session (the old cookie no longer opens the inbox), a
changed password closes the sessions opened with the old one, a throttled sign-in says
when to try again. Single sign-on through the test's OIDC provider. Where each person
lands, and a requester's own requests. The kill switch from pick-list to confirmation,
banner and the halted run, and its release. A flag from the notify feed, confirmed on a
page that says what the compensation will undo.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, BrowserContext, Page, expect
from pydantic import SecretStr
from temporalio.client import Client
from temporalio.worker import Worker

from tests.conftest import bank_of, free_port, start_invoice
from tests.console_axe import assert_accessible
from tests.console_helpers import awaiting_approval, console_settings, password, serve_asgi
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, oidc_provider
from tether.console import create_app, hash_password
from tether.console.auth import COOKIE
from tether.core.config import Settings
from tether.governance.feed import FeedStore
from tether.worker import Runtime

pytest_plugins = ["tests.console_fixtures"]

WIDTHS = (1280, 390)


@pytest.fixture
def csettings(settings: Settings, tmp_path: Path) -> Settings:
    """Secure cookies (a browser keeps them for 127.0.0.1), a session secret that outlives
    one server (as in production), and auditors named, so that a person with no role is
    a requester and lands on their own requests."""
    return console_settings(settings, tmp_path).model_copy(
        update={
            "console_secure_cookies": True,
            "console_session_secret": SecretStr(secrets.token_hex(32)),
            "console_auditor_roles": ["role:ops"],
        }
    )


async def opened(browser: Browser, base_url: str, width: int) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(base_url=base_url, viewport={"width": width, "height": 900})
    return context, await context.new_page()


async def sign_in(page: Page, person: str, secret: str = "") -> None:
    """Fill in and send the sign-in form the page shows."""
    await expect(page.locator("h1")).to_have_text("Sign in")
    await page.fill("input[name=person]", person)
    await page.fill("input[name=password]", secret or password(person))
    await page.click("form.card button[type=submit]")


@pytest.mark.parametrize("width", WIDTHS)
async def test_signing_out_closes_the_session_for_a_copied_cookie(
    base_url: str, chromium: Browser, width: int
) -> None:
    context, page = await opened(chromium, base_url, width)
    await page.goto("/inbox")
    await assert_accessible(page, "sign-in")
    await sign_in(page, "user:alice")
    await expect(page.locator("#person")).to_have_text("user:alice")
    await assert_accessible(page, "the inbox")
    (kept,) = [c for c in await context.cookies() if c["name"] == COOKIE]
    # The cookie copied into another browser opens the inbox there...
    thief, stolen = await opened(chromium, base_url, width)
    await thief.add_cookies(
        [{"name": COOKIE, "value": kept["value"], "url": base_url, "secure": True}]
    )
    await stolen.goto("/inbox")
    await expect(stolen.locator("#person")).to_have_text("user:alice")
    await page.get_by_role("button", name="Sign out").click()
    await expect(page.locator("h1")).to_have_text("Sign in")
    await expect(page.locator("#person")).to_have_count(0)
    await assert_accessible(page, "signed out")
    # ...until she signs out: still signed by this server and unexpired, but its session
    # is closed on the server.
    await stolen.reload()
    await expect(stolen.locator("h1")).to_have_text("Sign in")
    await expect(stolen.locator("#person")).to_have_count(0)
    await thief.close()
    await context.close()


@pytest.mark.parametrize("width", WIDTHS)
async def test_a_changed_password_closes_the_open_browser_session(
    csettings: Settings, chromium: Browser, width: int
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    context, page = await opened(chromium, url, width)
    with serve_asgi(create_app(csettings), "console server", port):
        await page.goto("/inbox")
        await sign_in(page, "user:alice")
        await expect(page.locator("#person")).to_have_text("user:alice")
    with serve_asgi(create_app(csettings), "console server", port):
        await page.reload()  # served anew as configured: the session is still open
        await expect(page.locator("#person")).to_have_text("user:alice")
    users = dict(csettings.console_users)
    users["user:alice"] = hash_password("a-new-password-for-alice")
    changed = csettings.model_copy(update={"console_users": users})
    with serve_asgi(create_app(changed), "console server", port):
        await page.reload()  # the same browser, its cookie kept
        await expect(page.locator("h1")).to_have_text("Sign in")
        await assert_accessible(page, "sign-in after a password change")
        await sign_in(page, "user:alice", "a-new-password-for-alice")
        await expect(page.locator("#person")).to_have_text("user:alice")
        await expect(page).to_have_url(f"{url}/inbox")
    await context.close()


@pytest.mark.parametrize("width", WIDTHS)
async def test_a_throttled_sign_in_says_when_to_try_again(
    csettings: Settings, chromium: Browser, width: int
) -> None:
    limited = csettings.model_copy(update={"console_login_attempts": 2})
    port = free_port()
    with serve_asgi(create_app(limited), "console server", port):
        context, page = await opened(chromium, f"http://127.0.0.1:{port}", width)
        await page.goto("/login")
        for _ in range(2):
            await sign_in(page, "user:alice", "wrong")
            await expect(page.locator("p.error")).to_have_text("Unknown person or wrong password.")
        await assert_accessible(page, "a failed sign-in")
        # Locked: the right password is not even checked now, and the page says for how
        # long, in words.
        await sign_in(page, "user:alice")
        alert = page.get_by_role("alert")
        await expect(alert).to_contain_text("Too many failed sign-ins. Try again in")
        await expect(alert).to_contain_text("minutes")
        await expect(page.locator("#person")).to_have_count(0)
        await assert_accessible(page, "a throttled sign-in")
        await context.close()


@pytest.fixture
def provider() -> Iterator[Provider]:
    with oidc_provider() as found:
        yield found


@pytest.mark.parametrize("width", WIDTHS)
async def test_single_sign_on_through_the_provider_in_the_browser(
    csettings: Settings, provider: Provider, chromium: Browser, width: int
) -> None:
    sso = csettings.model_copy(
        update={
            "console_oidc_issuer": provider.issuer,
            "console_oidc_client_id": CLIENT_ID,
            "console_oidc_client_secret": SecretStr(CLIENT_SECRET),
            "console_oidc_claim": "preferred_username",
        }
    )
    port = free_port()
    with serve_asgi(create_app(sso), "console server", port):
        context, page = await opened(chromium, f"http://127.0.0.1:{port}", width)
        await page.goto("/")
        link = page.get_by_role("link", name="Sign in with single sign-on")
        await expect(link).to_be_visible()
        await assert_accessible(page, "sign-in with single sign-on offered")
        # The provider signs alice in at once and sends the browser back; an approver
        # lands in her inbox.
        await link.click()
        await expect(page.locator("#person")).to_have_text("user:alice")
        await expect(page.locator("h1")).to_have_text("Waiting for your decision")
        await assert_accessible(page, "the inbox after single sign-on")
        assert len(provider.verified) == 1  # the token endpoint checked the PKCE verifier
        await page.get_by_role("button", name="Sign out").click()
        # A refusal at the provider signs nobody in and says so on the sign-in page.
        provider.refuse = True
        await page.get_by_role("link", name="Sign in with single sign-on").click()
        await expect(page.get_by_role("alert")).to_contain_text("the person said no")
        await expect(page.locator("#person")).to_have_count(0)
        await assert_accessible(page, "a refused single sign-on")
        await context.close()


@pytest.mark.parametrize("width", WIDTHS)
async def test_each_person_lands_by_role_and_a_requester_follows_their_request(
    client: Client,
    csettings: Settings,
    crt: Runtime,
    cworker: Worker,
    base_url: str,
    chromium: Browser,
    width: int,
) -> None:
    handle, pending = await awaiting_approval(client, csettings, crt, "INV-1003", "user:carol")
    landed: dict[str, str] = {}
    for person in ("user:alice", "user:olga", "user:carol"):
        context, page = await opened(chromium, base_url, width)
        await page.goto("/")
        await sign_in(page, person)
        await expect(page.locator("#person")).to_have_text(person)
        landed[person] = page.url.removeprefix(base_url)
        await expect(page.locator('header nav a[aria-current="page"]')).to_have_count(1)
        await assert_accessible(page, f"{person}'s landing page")
        if person == "user:carol":
            # carol holds no role: she started the run and follows its request here.
            row = page.locator(f'#mine tr[data-request="{pending.request_id}"]')
            await expect(row).to_contain_text("pending")
            alice, approver = await opened(chromium, base_url, width)
            await approver.goto(f"/requests/{pending.request_id}")
            await sign_in(approver, "user:alice")
            await approver.fill("textarea[name=comment]", "PO 4711 matches")
            await approver.click("button.approve")
            await expect(approver.locator("#decided h2")).to_have_text("Approved")
            await alice.close()
            await page.reload()
            await expect(row).to_contain_text("approved")
            await expect(row).to_contain_text("PO 4711 matches")
            await assert_accessible(page, "a requester's decided request")
        await context.close()
    # Approvers (olga is the policy's controller) open their inbox; a person with no role
    # (auditors are named here) their own requests.
    assert landed == {
        "user:alice": "/inbox",
        "user:olga": "/inbox",
        "user:carol": "/my-requests",
    }
    assert (await handle.result()).status == "paid"


@pytest.mark.parametrize("width", WIDTHS)
async def test_the_kill_switch_from_pick_list_to_a_halted_run_and_release(
    client: Client,
    csettings: Settings,
    crt: Runtime,
    cworker: Worker,
    base_url: str,
    chromium: Browser,
    width: int,
) -> None:
    handle, pending = await awaiting_approval(client, csettings, crt, "INV-1003", "user:bob")
    context, olga = await opened(chromium, base_url, width)
    await olga.goto("/kill")
    await sign_in(olga, "user:olga")
    await expect(olga.locator("#none-engaged")).to_be_visible()
    # Nothing is chosen until olga chooses: the pick-list lists what exists.
    assert await olga.locator("#target").input_value() == ""
    assert "agent|agent:ap-clerk" in await olga.locator("#target option").evaluate_all(
        "options => options.map(o => o.value)"
    )
    await assert_accessible(olga, "the kill switch")
    await olga.select_option("#target", "agent|agent:ap-clerk")
    await olga.fill("textarea[name=reason]", "runaway payments")
    await olga.click("form#engage button[type=submit]")
    await expect(olga.locator("h1")).to_have_text("Confirm the kill switch")
    await expect(olga.locator("#halt-count")).to_have_text("1")
    await expect(olga.locator("#halts")).to_contain_text(pending.request_id)
    assert crt.kills.status() == []  # the first post engages nothing
    await assert_accessible(olga, "the kill switch's confirmation")
    await olga.click("form#confirm button[type=submit]")
    banner = olga.locator("#kill-banner")
    await expect(banner).to_contain_text("agent:ap-clerk")
    await expect(banner).to_contain_text("runaway payments")
    await assert_accessible(olga, "the kill switch engaged")
    assert (await handle.result()).status == "halted"
    await olga.goto(f"/runs/{handle.id}")
    await expect(olga.locator("#outcome")).to_have_text("halted by kill switch")
    await expect(olga.locator("#halted-by")).to_contain_text("user:olga")
    await expect(banner).to_be_visible()  # on every page while it is engaged
    await assert_accessible(olga, "a halted run")
    await olga.goto("/kill")
    await olga.get_by_role("button", name="Release").click()
    await expect(olga.locator("#result")).to_contain_text("Released: agent 'agent:ap-clerk'")
    await expect(olga.locator("#kill-banner")).to_have_count(0)
    await assert_accessible(olga, "the kill switch's release")
    await olga.goto("/kill")
    await expect(olga.locator("#none-engaged")).to_be_visible()
    await assert_accessible(olga, "the kill switch released")
    await context.close()


@pytest.mark.parametrize("width", WIDTHS)
async def test_a_flag_is_confirmed_with_what_it_undoes_then_refunds(
    client: Client,
    csettings: Settings,
    crt: Runtime,
    cworker: Worker,
    chromium: Browser,
    width: int,
) -> None:
    # Everyone audits here (the default), so the feed links each row to its run.
    auditing = csettings.model_copy(update={"console_auditor_roles": []})
    handle = await start_invoice(client, csettings, "INV-1002", started_by="user:dana")
    assert (await handle.result()).status == "paid"
    feed = FeedStore(crt.ledger.engine)
    for _ in range(200):
        if any(n.workflow_id == handle.id for n in feed.list_feed(100)):
            break
        await asyncio.sleep(0.05)
    port = free_port()
    with serve_asgi(create_app(auditing), "console server", port):
        await _flag(chromium, f"http://127.0.0.1:{port}", width, crt, handle.id)


async def _flag(chromium: Browser, base_url: str, width: int, crt: Runtime, run: str) -> None:
    context, alice = await opened(chromium, base_url, width)
    await alice.goto("/feed")
    await sign_in(alice, "user:alice")
    row = alice.locator(f'#feed tr[data-workflow="{run}"]')
    await expect(row.locator("th")).to_contain_text("Pay $4,800.00 to northwind for INV-1002")
    await expect(row.locator("th .fields")).to_contain_text("amount $4,800.00")
    await expect(row.locator(f'a[href="/runs/{run}"]')).to_be_visible()
    await expect(row.locator("time.countdown")).to_be_visible()  # the window's time left
    await assert_accessible(alice, "the notify feed")
    await row.get_by_label("Reason to flag Pay $4,800.00 to northwind for INV-1002").fill(
        "northwind was paid twice this month"
    )
    await row.get_by_role("button", name="Flag…").click()
    await expect(alice.locator("h1")).to_have_text("Confirm the flag")
    await expect(alice.locator("#flag-undoes")).to_contain_text("refund_vendor")
    await expect(alice.locator("#flag-reason")).to_have_text("northwind was paid twice this month")
    assert bank_of(crt).refunds("INV-1002") == []  # nothing is flagged before the confirmation
    await assert_accessible(alice, "the flag's confirmation")
    await alice.get_by_role("button", name="Flag and undo").click()
    await expect(alice.locator("#result")).to_contain_text("Flagged: compensated")
    await assert_accessible(alice, "a flag done")
    assert len(bank_of(crt).refunds("INV-1002")) == 1
    await alice.goto("/feed")
    await expect(row).to_contain_text("compensated by user:alice")
    await context.close()
