"""The console over real HTTP: a uvicorn server, a real worker on the dev server, SQLite.

Security: every state-changing route needs a session and that session's CSRF token; an
approver cannot decide outside their role by editing a form field or the URL (the
workflow refuses and records it); output is escaped. Then the approver's and auditor's
pages: inbox, decide, notify feed and flag, kill switch, runs, run page, replay, bundle,
overview.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy import text
from temporalio.client import Client
from temporalio.worker import Worker
from typer.testing import CliRunner

from tests.conftest import bank_of, start_invoice
from tests.console_helpers import XSS, awaiting_approval, csrf_of, password, serve, sign_in
from tether.console import approve, audit, create_app, kill, signin
from tether.console import feed as feed_pages
from tether.console.auth import check_credential
from tether.core.config import Settings
from tether.governance.approvals import ApprovalStatus
from tether.governance.feed import FeedStore, Notification
from tether.governance.reviews import ReviewStatus, review_id
from tether.verification.bundle import verify_bundle
from tether.verification.trust import Trust
from tether.worker import Runtime, build_worker

pytest_plugins = ["tests.console_fixtures"]  # its fixtures


def browser(base_url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base_url, follow_redirects=False, timeout=60)


async def test_every_state_changing_route_needs_a_session_and_its_csrf_token(
    csettings: Settings, crt: Runtime, base_url: str
) -> None:
    app = create_app(csettings)
    routes = [
        r
        for r in [
            *app.routes,
            *signin.router.routes,
            *approve.router.routes,
            *feed_pages.router.routes,
            *kill.router.routes,
            *audit.router.routes,
        ]
        if isinstance(r, APIRoute) and r.methods
    ]
    posts = sorted(r.path for r in routes if "POST" in (r.methods or ()))
    assert set(posts) >= {
        "/login",
        "/logout",
        "/requests/{request_id}/decide",
        "/feed/flag",
        "/kill/engage",
        "/kill/release",
        "/checkpoints",
    }
    # Every other route is a read.
    assert all((r.methods or set()) <= {"GET", "HEAD", "POST"} for r in routes)
    form = {"kind": "global", "reason": "test", "verdict": "approve", "step": "1", "confirm": "1"}
    async with browser(base_url) as anonymous, browser(base_url) as olga:
        token = await sign_in(olga, "user:olga")
        for path in posts:
            url = path.replace("{request_id}", "r-1")
            if path != "/login":
                no_session = await anonymous.post(url, data={**form, "csrf": token})
                assert no_session.status_code in (401, 403), (path, no_session.status_code)
            for bad in ({}, {"csrf": ""}, {"csrf": token[:-2] + "xx"}):
                refused = await olga.post(url, data={**form, **bad})
                assert refused.status_code == 403, (path, bad, refused.status_code)
                assert "security token" in refused.text
        # A token of another session does not count either.
        async with browser(base_url) as alice:
            alice_token = await sign_in(alice, "user:alice")
            stolen = await olga.post("/kill/engage", data={**form, "csrf": alice_token})
            assert stolen.status_code == 403
        assert crt.kills.status() == []  # nothing was engaged by any of these
        # The same form with the right token does change state.
        engaged = await olga.post("/kill/engage", data={**form, "csrf": token})
        assert engaged.status_code == 200 and "Engaged" in engaged.text
        assert [r.kind.value for r in crt.kills.status()] == ["global"]


async def test_sign_in_sessions_cookies_and_headers(csettings: Settings, base_url: str) -> None:
    async with browser(base_url) as http:
        start = await http.get("/inbox")
        assert start.status_code == 303 and start.headers["location"].startswith("/login")
        page = await http.get("/login")
        csrf = csrf_of(page.text)
        wrong = await http.post(
            "/login", data={"csrf": csrf, "person": "user:alice", "password": "nope"}
        )
        assert wrong.status_code == 401 and "wrong password" in wrong.text
        csrf = csrf_of(wrong.text)
        off_site = await http.post(
            "/login",
            data={
                "csrf": csrf,
                "person": "user:alice",
                "password": password("user:alice"),
                "next": "//evil.example/",
            },
        )
        assert off_site.status_code == 303 and off_site.headers["location"] == "/"
        cookie = off_site.headers["set-cookie"]
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Max-Age=28800" in cookie
        inbox = await http.get("/inbox")
        assert inbox.status_code == 200 and "user:alice" in inbox.text
        assert "script-src 'self'" in inbox.headers["content-security-policy"]
        assert inbox.headers["x-frame-options"] == "DENY"
        # A forged cookie is no session.
        http.cookies.set("tether_session", "eyJwIjoidXNlcjphbGljZSJ9.forged.sig")
        assert (await http.get("/inbox")).status_code == 303
    # Tokens work as passwords when configured as token-sha256.
    from tether.console.auth import token_credential

    assert check_credential(token_credential("t0ken-abc"), "t0ken-abc")
    assert not check_credential(token_credential("t0ken-abc"), "t0ken-abd")


async def test_a_trusted_proxy_names_the_person_and_others_cannot(
    csettings: Settings,
) -> None:
    proxied = csettings.model_copy(
        update={
            "console_proxy_header": "X-Forwarded-User",
            "console_trusted_proxies": ["10.0.0.0/8"],
        }
    )
    with serve(proxied) as url:
        async with browser(url) as http:
            # Our loopback address is not a trusted proxy: the header is ignored.
            spoofed = await http.get("/inbox", headers={"X-Forwarded-User": "alice"})
            assert spoofed.status_code == 303
    trusted = proxied.model_copy(update={"console_trusted_proxies": ["127.0.0.1"]})
    with serve(trusted) as url:
        async with browser(url) as http:
            page = await http.get("/inbox", headers={"X-Forwarded-User": "alice"})
            assert page.status_code == 200 and "user:alice" in page.text
            token = csrf_of(page.text)
            # The session is bound to the person the proxy names.
            other = await http.get("/inbox", headers={"X-Forwarded-User": "bob"})
            assert "user:bob" in other.text and csrf_of(other.text) != token
            agent = await http.get("/inbox", headers={"X-Forwarded-User": "agent:ap-clerk"})
            assert agent.status_code == 303


async def test_an_approver_cannot_decide_outside_their_role_or_their_own_request(
    client: Client,
    csettings: Settings,
    crt: Runtime,
    cworker: Worker,
    base_url: str,
) -> None:
    handle, pending = await awaiting_approval(client, csettings, crt, "INV-1003", "user:bob")
    url = f"/requests/{pending.request_id}"
    async with browser(base_url) as bob, browser(base_url) as carol, browser(base_url) as alice:
        bob_csrf = await sign_in(bob, "user:bob")
        carol_csrf = await sign_in(carol, "user:carol")
        alice_csrf = await sign_in(alice, "user:alice")
        # Not offered: not in the inbox, the page is not theirs.
        assert pending.request_id not in (await bob.get("/inbox")).text
        assert pending.request_id not in (await carol.get("/inbox")).text
        assert pending.request_id in (await alice.get("/inbox")).text
        assert (await bob.get(url)).status_code == 404
        assert (await carol.get(url)).status_code == 404
        # Posting anyway, with a forged approver field: the session decides who this is.
        forged = {"verdict": "approve", "comment": "", "approver": "user:alice"}
        as_carol = await carol.post(f"{url}/decide", data={**forged, "csrf": carol_csrf})
        assert as_carol.status_code == 403
        assert "&#39;user:carol&#39; does not hold &#39;role:ap-approver&#39;" in as_carol.text
        assert "vendor/globex" not in as_carol.text
        as_bob = await bob.post(f"{url}/decide", data={**forged, "csrf": bob_csrf})
        assert as_bob.status_code == 403 and "cannot approve" in as_bob.text
        refused = [e for e in crt.ledger.events(handle.id) if e.kind == "approval.refused"]
        assert sorted(e.actor for e in refused) == ["user:bob", "user:carol"]
        # A reject without a reason is not a way to see the request either.
        peek = await carol.post(
            f"{url}/decide", data={"verdict": "reject", "comment": "", "csrf": carol_csrf}
        )
        assert peek.status_code == 404 and "vendor/globex" not in peek.text
        assert crt.approvals.get(pending.request_id).status is ApprovalStatus.PENDING
        # A rejection needs a reason.
        empty = await alice.post(
            f"{url}/decide", data={"verdict": "reject", "comment": " ", "csrf": alice_csrf}
        )
        assert empty.status_code == 400 and "needs a reason" in empty.text
        page = await alice.get(url)
        assert page.status_code == 200
        for shown in ("payments.pay", "vendor/globex", "ap-pay-large", pending.policy_version):
            assert shown in page.text
        assert "25000" in page.text and "INV-1003" in page.text  # the arguments, rendered
        assert "model call" in page.text  # what influenced it: the extraction
        done = await alice.post(
            f"{url}/decide", data={"verdict": "approve", "comment": "PO 7", "csrf": alice_csrf}
        )
        # Post/redirect/get: the decision answers with the request's page, decided.
        assert done.status_code == 303 and done.headers["location"] == url
        decided_page = await alice.get(url)
        assert 'id="decided"' in decided_page.text and "Approved by <strong" in decided_page.text
        assert 'id="decided-by">user:alice<' in decided_page.text and "PO 7" in decided_page.text
        assert 'id="decide"' not in decided_page.text

        def refusals() -> int:
            return sum(e.kind == "approval.refused" for e in crt.ledger.events(handle.id))

        before = refusals()
        # The same form posted again (a resubmitted page) counted once: no refusal.
        again = await alice.post(
            f"{url}/decide", data={"verdict": "approve", "comment": "PO 7", "csrf": alice_csrf}
        )
        assert again.status_code == 303 and again.headers["location"] == f"{url}?again=1"
        assert "Already decided" in (await alice.get(again.headers["location"])).text
        assert refusals() == before
        # Another person's late attempt is a real one: the workflow refuses and records it.
        late = await bob.post(
            f"{url}/decide", data={"verdict": "reject", "comment": "no", "csrf": bob_csrf}
        )
        assert late.status_code in (403, 404)
        assert refusals() == before + 1
    result = await handle.result()
    assert result.status == "paid"
    decided = [e for e in crt.ledger.events(handle.id) if e.kind == "approval.decided"]
    assert decided[0].actor == "user:alice" and decided[0].payload["comment"] == "PO 7"


async def test_output_is_escaped(
    client: Client, csettings: Settings, crt: Runtime, cworker: Worker, base_url: str
) -> None:
    handle, pending = await awaiting_approval(client, csettings, crt, "INV-XSS", "user:bob")
    assert XSS in pending.args_summary
    async with browser(base_url) as alice:
        await sign_in(alice, "user:alice")
        for url in ("/inbox", f"/requests/{pending.request_id}", f"/runs/{handle.id}"):
            page = await alice.get(url)
            assert page.status_code == 200, url
            assert "<script>document" not in page.text, url
        request_page = await alice.get(f"/requests/{pending.request_id}")
        assert "&lt;script&gt;document.title=&#39;pwned&#39;&lt;/script&gt;" in request_page.text
    await handle.cancel()


async def test_kill_switch_page_is_for_its_roles_and_halts_pending_requests(
    client: Client, csettings: Settings, crt: Runtime, cworker: Worker, base_url: str
) -> None:
    handle, _ = await awaiting_approval(client, csettings, crt, "INV-1003", "user:bob")
    async with browser(base_url) as alice, browser(base_url) as olga:
        alice_csrf = await sign_in(alice, "user:alice")
        olga_csrf = await sign_in(olga, "user:olga")
        assert "Kill switch" not in (await alice.get("/inbox")).text
        assert (await alice.get("/kill")).status_code == 403
        denied = await alice.post(
            "/kill/engage",
            data={"kind": "global", "reason": "x", "csrf": alice_csrf},
        )
        assert denied.status_code == 403 and crt.kills.status() == []
        assert (await olga.get("/kill")).status_code == 200
        bad = await olga.post(
            "/kill/engage", data={"kind": "planet", "reason": "x", "csrf": olga_csrf}
        )
        assert bad.status_code == 400 and "planet" in bad.text
        page = (await olga.get("/kill")).text
        # The scope is picked from what exists; nothing is pre-selected.
        assert 'value="agent|agent:ap-clerk"' in page and 'value="action|payments.pay"' in page
        assert 'value="" selected disabled' in page
        agent = {"target": "agent|agent:ap-clerk", "csrf": olga_csrf}
        blank = await olga.post("/kill/engage", data={**agent, "reason": "  "})
        assert blank.status_code == 400 and "needs a reason" in blank.text
        typo = await olga.post(
            "/kill/engage", data={**agent, "target": "agent|agent:ap-clerc", "reason": "x"}
        )
        assert typo.status_code == 400 and "&#39;agent:ap-clerc&#39;" in typo.text
        # The first post shows what it would halt and engages nothing.
        review = await olga.post("/kill/engage", data={**agent, "reason": "runaway"})
        assert review.status_code == 200 and 'id="halt-count">1<' in review.text
        assert "vendor/globex" in review.text and crt.kills.status() == []
        engaged = await olga.post(
            "/kill/engage", data={**agent, "reason": "runaway", "confirm": "1"}
        )
        assert engaged.status_code == 200 and "Halted 1 pending approval" in engaged.text
        # Every page says a switch is engaged, to everyone.
        banner = (await alice.get("/inbox")).text
        assert 'id="kill-banner"' in banner and "agent:ap-clerk (runaway, by user:olga)" in banner
        result = await handle.result()
        assert result.status == "halted" and "runaway" in result.message
        assert "agent:ap-clerk" in (await olga.get("/kill")).text
        released = await olga.post(
            "/kill/release",
            data={"kind": "agent", "value": "agent:ap-clerk", "csrf": olga_csrf},
        )
        assert released.status_code == 200 and crt.kills.status() == []
    kinds = [e.kind for e in crt.ledger.events_of_kind("kill.engaged")]
    assert kinds == ["kill.engaged"]


async def test_notify_feed_flag_runs_the_compensation(
    client: Client, csettings: Settings, crt: Runtime, cworker: Worker, base_url: str
) -> None:
    handle = await start_invoice(client, csettings, "INV-1002", started_by="user:dana")
    assert (await handle.result()).status == "paid"
    async with browser(base_url) as alice:
        csrf = await sign_in(alice, "user:alice")
        for _ in range(200):
            feed = await alice.get("/feed")
            if handle.id in feed.text and "/feed/flag" in feed.text:
                break
            await asyncio.sleep(0.05)
        # Each row reads as the tool presents it, with its run.
        assert "Pay $4,800.00 to northwind for INV-1002" in feed.text
        assert "ap-pay-medium" in feed.text and f'href="/runs/{handle.id}"' in feed.text
        step = next(n.step for n in crt_feed(crt) if n.workflow_id == handle.id)
        blank = await alice.post(
            "/feed/flag",
            data={"workflow_id": handle.id, "step": str(step), "reason": " \t", "csrf": csrf},
        )
        assert blank.status_code == 400 and "needs a reason" in blank.text
        form = {"workflow_id": handle.id, "step": str(step), "reason": "wrong", "csrf": csrf}
        # The first post shows what the compensation will undo, and flags nothing.
        asked = await alice.post("/feed/flag", data=form)
        assert asked.status_code == 200 and "Confirm the flag" in asked.text
        assert "compensation <strong>refund_vendor</strong>" in asked.text
        assert "Pay $4,800.00 to northwind for INV-1002" in asked.text
        window = FeedStore(crt.ledger.engine).get_review(review_id(handle.id, step))
        assert window.status is ReviewStatus.OPEN and bank_of(crt).refunds("INV-1002") == []
        flagged = await alice.post("/feed/flag", data={**form, "confirm": "1"})
        assert flagged.status_code == 200 and "Flagged: compensated" in flagged.text
        again = await alice.post(
            "/feed/flag",
            data={**form, "reason": "again", "confirm": "1"},
        )
        assert again.status_code == 403 and "Refused" in again.text
        confirm_again = await alice.post("/feed/flag", data={**form, "reason": "again"})
        assert confirm_again.status_code == 403 and "Refused" in confirm_again.text
    window = FeedStore(crt.ledger.engine).get_review(review_id(handle.id, step))
    assert window.status is ReviewStatus.COMPENSATED and window.flagged_by == "user:alice"
    assert len(bank_of(crt).refunds("INV-1002")) == 1


def crt_feed(crt: Runtime) -> list[Notification]:
    return FeedStore(crt.ledger.engine).list_feed(100)


async def test_auditor_pages_runs_run_replay_bundle_checkpoint_overview(
    client: Client, csettings: Settings, crt: Runtime, cworker: Worker, base_url: str
) -> None:
    paid = await start_invoice(client, csettings, "INV-1001", started_by="user:dana")
    denied = await start_invoice(client, csettings, "INV-1004", started_by="user:dana")
    assert (await paid.result()).status == "paid"
    assert (await denied.result()).status == "denied"
    async with browser(base_url) as carol:
        csrf = await sign_in(carol, "user:carol")
        runs = await carol.get("/runs", params={"tier": "deny"})
        assert denied.id in runs.text and paid.id not in runs.text
        by_agent = await carol.get("/runs", params={"agent": "agent:ap-clerk", "kind": "decision"})
        assert denied.id in by_agent.text and paid.id in by_agent.text
        bad_time = await carol.get("/runs", params={"since": "yesterday"})
        assert bad_time.status_code == 400
        assert "&#39;yesterday&#39; is not an ISO 8601 time" in bad_time.text
        page = await carol.get(f"/runs/{paid.id}")
        assert page.status_code == 200
        assert "Chain intact" in page.text and "<svg" in page.text
        assert 'data-kind="tool.executed"' in page.text and "No checkpoint" in page.text
        assert ">completed<" in page.text and "Replay holds" in page.text
        signed = await carol.post("/checkpoints", data={"csrf": csrf, "back": f"/runs/{paid.id}"})
        assert "Signed a checkpoint" in signed.text
        page = await carol.get(f"/runs/{paid.id}")
        assert "Checkpoint holds" in page.text and "not yet" not in page.text
        replay = await carol.get(f"/runs/{paid.id}/replay")
        assert "Replay holds" in replay.text
        bundle = await carol.get(f"/runs/{paid.id}/bundle")
        assert bundle.status_code == 200
        assert "attachment" in bundle.headers["content-disposition"]
        assert verify_bundle(bundle.content, Trust.gather(csettings.audit_trusted_keys)) == []
        assert (await carol.get("/runs/no-such-run")).status_code == 404
        overview = await carol.get("/overview", params={"days": 1})
        assert overview.status_code == 200
        assert overview.text.count("<svg") >= 3 and "ap-no-bank-changes" in overview.text
        # An edited ledger row shows at once, named, on every run's page.
        seq = next(e.seq for e in crt.ledger.events(paid.id) if e.kind == "tool.executed")
        with crt.ledger.engine.begin() as conn:
            conn.execute(
                text("UPDATE ledger_events SET outcome = 'failed' WHERE seq = :seq"), {"seq": seq}
            )
        broken = await carol.get(f"/runs/{denied.id}")
        assert f"Chain broken</span> at entry {seq}" in broken.text
        assert "Checkpoint does not hold" in broken.text


async def test_auditor_roles_limit_the_audit_pages(csettings: Settings) -> None:
    limited = csettings.model_copy(update={"console_auditor_roles": ["role:ops"]})
    with serve(limited) as url:
        async with browser(url) as carol, browser(url) as olga:
            await sign_in(carol, "user:carol")
            await sign_in(olga, "user:olga")
            assert (await carol.get("/runs")).status_code == 403
            assert (await olga.get("/runs")).status_code == 200


def test_hash_password_command_and_settings_check(tmp_path: Path) -> None:
    from tether.cli.main import app

    result = CliRunner().invoke(
        app, ["console", "hash-password"], input="s3cret-enough\ns3cret-enough\n"
    )
    assert result.exit_code == 0, result.output
    hashed = result.output.strip().splitlines()[-1]
    assert check_credential(hashed, "s3cret-enough")
    assert not check_credential(hashed, "s3cret-enougH")
    Settings(console_users={"user:zoe": hashed})
    with pytest.raises(ValueError, match="hash-password"):
        Settings(console_users={"user:zoe": "plaintext"})
    with pytest.raises(ValueError, match="agent identities never sign in"):
        Settings(console_users={"agent:ap-clerk": hashed})


async def test_a_quorum_request_leaves_the_inbox_of_whoever_approved(
    client: Client, csettings: Settings, tmp_path: Path
) -> None:
    policy = tmp_path / "quorum.csv"
    text = csettings.policy_path.read_text()
    assert "role:ap-approver, 24h" in text
    policy.write_text(text.replace("role:ap-approver, 24h", "role:ap-approver#2, 24h"))
    quorum = csettings.model_copy(update={"policy_path": policy})
    runtime = Runtime.from_settings(quorum)
    try:
        async with build_worker(client, quorum, runtime):
            handle, pending = await awaiting_approval(
                client, quorum, runtime, "INV-1003", "user:dana"
            )
            assert pending.quorum == 2
            url = f"/requests/{pending.request_id}"
            with serve(quorum) as base:
                async with browser(base) as alice, browser(base) as bob:
                    alice_csrf = await sign_in(alice, "user:alice")
                    bob_csrf = await sign_in(bob, "user:bob")
                    first = await alice.post(
                        f"{url}/decide", data={"verdict": "approve", "csrf": alice_csrf}
                    )
                    assert first.status_code == 303
                    counted = await alice.get(first.headers["location"])
                    assert "Your approval counted; the quorum needs more approvers" in counted.text
                    assert pending.request_id not in (await alice.get("/inbox")).text
                    again = await alice.get(url)
                    assert "has already approved" in again.text and 'id="decide"' not in again.text
                    assert "1 of 2 approved (user:alice)" in again.text
                    refused = [e for e in runtime.ledger.events(handle.id) if "refused" in e.kind]
                    twice = await alice.post(
                        f"{url}/decide", data={"verdict": "approve", "csrf": alice_csrf}
                    )
                    assert twice.headers["location"] == f"{url}?counted=1"
                    assert refused == [
                        e for e in runtime.ledger.events(handle.id) if "refused" in e.kind
                    ]
                    assert pending.request_id in (await bob.get("/inbox")).text
                    second = await bob.post(
                        f"{url}/decide", data={"verdict": "approve", "csrf": bob_csrf}
                    )
                    assert second.status_code == 303
                    decided = await bob.get(second.headers["location"])
                    assert 'id="decided-by">user:alice, user:bob<' in decided.text
                    # alice's form posted again once the quorum was met: counted once.
                    repost = await alice.post(
                        f"{url}/decide", data={"verdict": "approve", "csrf": alice_csrf}
                    )
                    assert repost.headers["location"] == f"{url}?again=1"
            assert (await handle.result()).status == "paid"
    finally:
        runtime.ledger.engine.dispose()
