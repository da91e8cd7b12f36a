"""The auditor's pages over real HTTP: a run's header (business outcome, input, result),
comments and reasons in its events, the timeline, stored content opened by cleared roles
only, a run halted by a kill switch shown and counted as halted, and error pages that
keep the navigation and speak plainly."""

from __future__ import annotations

import re

import httpx
from temporalio.client import Client
from temporalio.worker import Worker

from tests.conftest import replayer_for, start_invoice
from tests.console_helpers import awaiting_approval, sign_in
from tether.core.config import Settings
from tether.runtime.kill import halt_pending
from tether.worker import Runtime

pytest_plugins = ["tests.console_fixtures"]

LINK = re.compile(r'href="(/runs/[^"]+/content/[^"]+)"')


def browser(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, follow_redirects=False, timeout=60)


async def test_run_header_timeline_and_content_for_cleared_roles(
    client: Client, csettings: Settings, crt: Runtime, cworker: Worker, base_url: str
) -> None:
    paid = await start_invoice(client, csettings, "INV-1001", started_by="user:dana")
    assert (await paid.result()).status == "paid"
    async with browser(base_url) as alice, browser(base_url) as carol:
        await sign_in(alice, "user:alice")  # an approver: holds a role, so cleared
        await sign_in(carol, "user:carol")  # signed in, may audit, holds no role
        page = (await alice.get(f"/runs/{paid.id}")).text
        assert 'id="outcome">paid<' in page
        assert "INV-1001" in page.split('id="run-input"')[1].split("</details>")[0]
        assert "&#34;status&#34;: &#34;paid&#34;" in page.split('id="run-result"')[1]
        assert "PayInvoice" in page and 'aria-labelledby="timeline-title"' in page
        assert "+0 ms" not in page and ">start<" in page
        links = LINK.findall(page)
        assert links, "a cleared person sees the stored content as links"
        opened = await alice.get(links[0].replace("&amp;", "&"))
        assert opened.status_code == 200 and "matches its digest" in opened.text
        prompt = next(u for u in links if "prompt" in page.split(u)[1][:40])
        shown = (await alice.get(prompt)).text
        assert "Extract the invoice fields" in shown and 'id="sensitivity">confidential<' in shown
        # Not cleared: digests only, no links, and the address itself refuses.
        theirs = (await carol.get(f"/runs/{paid.id}")).text
        assert not LINK.search(theirs) and 'id="content-hidden"' in theirs
        refused = await carol.get(links[0])
        assert refused.status_code == 403 and "not cleared" in refused.text
        assert 'href="/runs"' in refused.text  # navigation kept
        # Content is served only under a run that names it.
        other = links[0].replace(paid.id, "another-run")
        assert (await alice.get(other)).status_code == 404
        bogus = await alice.get(f"/runs/{paid.id}/content/sha256:{'0' * 64}")
        assert bogus.status_code == 404


async def test_a_halted_run_is_shown_searched_and_counted_as_halted(
    client: Client, csettings: Settings, crt: Runtime, cworker: Worker, base_url: str
) -> None:
    handle, _ = await awaiting_approval(client, csettings, crt, "INV-1003", "user:bob")
    record = crt.kills.engage("agent", "agent:ap-clerk", reason="runaway", engaged_by="user:olga")
    assert (await halt_pending(client, crt.approvals, record)).halted == [handle.id]
    result = await handle.result()
    assert result.status == "halted"
    # The halted-outcome path replays (the patch marker is in this run's history).
    replayed = await replayer_for().replay_workflow(
        await handle.fetch_history(), raise_on_replay_failure=False
    )
    assert replayed.replay_failure is None
    crt.kills.release("agent", "agent:ap-clerk", released_by="user:olga")
    async with browser(base_url) as carol:
        await sign_in(carol, "user:carol")
        page = (await carol.get(f"/runs/{handle.id}")).text
        assert 'id="outcome">halted by kill switch<' in page
        halted_by = page.split('id="halted-by">')[1].split("</p>")[0]
        assert "user:olga" in halted_by and "runaway" in halted_by
        assert 'data-outcome="halted"' in page and "rejected" not in page.split("<tbody>")[1]
        assert 'data-mark="halted"' in page
        found = (await carol.get("/runs", params={"outcome": "halted"})).text
        assert handle.id in found and "halted by kill switch" in found
        rejected = (await carol.get("/runs", params={"outcome": "rejected"})).text
        assert handle.id not in rejected
        overview = (await carol.get("/overview", params={"days": 1})).text
        outcomes = overview.split('id="approval-outcomes"')[1].split("</section>")[0]
        assert ">halted<" in outcomes
        waits = overview.split('id="approval-waits"')[1].split("</section>")[0]
        assert "payments.pay vendor/globex" in waits and "apr-" not in waits
        latency = overview.split('id="model-latency"')[1].split("</section>")[0]
        assert 'id="latency-na"' in latency and "0 ms" not in latency


async def test_error_pages_keep_navigation_and_speak_plainly(
    csettings: Settings, base_url: str
) -> None:
    async with browser(base_url) as alice, browser(base_url) as anonymous:
        await sign_in(alice, "user:alice")
        pages = {
            403: await alice.get("/kill"),
            404: await alice.get("/no/such/page"),
            405: await alice.get("/checkpoints"),
            422: await alice.get("/overview", params={"days": "abc"}),
        }
        for code, page in pages.items():
            assert page.status_code == code, (code, page.text)
            assert page.headers["content-type"].startswith("text/html")
            assert 'id="error-title"' in page.text and f"Error {code}." in page.text
            assert 'href="/inbox"' in page.text and 'id="person">user:alice<' in page.text
            assert "console_" not in page.text and '"detail"' not in page.text
        assert "operations staff" in pages[403].text
        assert "Page not found" in pages[404].text
        assert "Not available this way" in pages[405].text
        assert "POST" in pages[405].headers.get("allow", "")
        assert "&#39;abc&#39;" in pages[422].text
        missing = await anonymous.get("/no/such/page")
        assert missing.status_code == 404 and 'href="/login"' in missing.text
