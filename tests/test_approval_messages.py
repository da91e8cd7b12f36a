"""Approval messages end to end: a PayInvoice run that needs approval sends e-mail (to a
local SMTP sink this test serves), a Slack incoming-webhook message and a signed JSON
webhook (to a local HTTP receiver), each with signed one-time links; following a link
asks for sign-in, lands on the request page, and the approver approves there. Refused
links (reused, expired, forged, another person's) land on a page that says so; a failing
channel is retried and recorded, and never fails the run.
"""

from __future__ import annotations

import asyncio
import email
import json
import re
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import Message
from pathlib import Path
from urllib.parse import unquote

import httpx
import pytest
from playwright.async_api import Browser, expect
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.client import Client, WorkflowExecutionStatus

from tests.conftest import free_port, replayer_for, start_invoice
from tests.console_axe import assert_accessible
from tests.console_helpers import console_settings, csrf_of, password, serve_asgi
from tether.activities.notify import verify_webhook
from tether.console import create_app
from tether.core.config import Settings
from tether.governance.links import LinkProblem, LinkRefused, issue_link, verify_link
from tether.runtime.approvals import decide_request, signing_key
from tether.worker import Runtime, build_worker

pytest_plugins = ["tests.console_fixtures"]  # chromium

LINK_SECRET = "l" * 40
HOOK_SECRET = "h" * 24
LINK = re.compile(r"https?://[^\s<>|\"]+/r/[A-Za-z0-9_\-.]+")


# -- a local SMTP sink ---------------------------------------------------------------------


@dataclass
class SmtpSink:
    """A small SMTP server (RFC 5321's core verbs) on a loopback port, keeping what arrives.

    `refuse_connections` first connections are answered 421 (service not available), a
    transient failure the sender retries."""

    port: int = 0
    messages: list[Message] = field(default_factory=list)
    refuse_connections: int = 0
    connections: int = 0
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.connections <= self.refuse_connections:
            writer.write(b"421 try again later\r\n")
            await writer.drain()
            writer.close()
            return
        writer.write(b"220 sink ESMTP\r\n")
        data: list[bytes] | None = None
        while line := await reader.readline():
            if data is not None:
                if line in (b".\r\n", b".\n"):
                    self.messages.append(email.message_from_bytes(b"".join(data)))
                    self.arrived.set()
                    data = None
                    writer.write(b"250 queued\r\n")
                else:
                    data.append(line[1:] if line.startswith(b"..") else line)
                continue
            verb = line[:4].upper()
            if verb == b"EHLO":
                writer.write(b"250-sink\r\n250 8BITMIME\r\n")
            elif verb == b"DATA":
                data = []
                writer.write(b"354 end with .\r\n")
            elif verb == b"QUIT":
                writer.write(b"221 bye\r\n")
                await writer.drain()
                break
            else:  # HELO, MAIL, RCPT, RSET, NOOP
                writer.write(b"250 ok\r\n")
            await writer.drain()
        writer.close()


@pytest.fixture
async def smtp() -> AsyncIterator[SmtpSink]:
    sink = SmtpSink()
    server = await asyncio.start_server(sink.handle, "127.0.0.1", 0)
    sink.port = server.sockets[0].getsockname()[1]
    async with server:
        yield sink


# -- a local webhook receiver --------------------------------------------------------------


@dataclass
class Receiver:
    url: str = ""
    posts: list[tuple[str, dict[str, str], bytes]] = field(default_factory=list)
    answers: dict[str, int] = field(default_factory=dict)
    """Path to the status code it answers (200 when absent)."""


@contextmanager
def receiver() -> Iterator[Receiver]:
    got = Receiver()

    async def hook(request: Request) -> Response:
        path = request.url.path
        got.posts.append((path, dict(request.headers), await request.body()))
        code = got.answers.get(path, 200)
        return JSONResponse({"ok": code < 300}, status_code=code)

    app = Starlette(routes=[Route("/{name}", hook, methods=["POST"])])
    with serve_asgi(app, "webhook receiver") as url:
        got.url = url
        yield got


@pytest.fixture
def hooks() -> Iterator[Receiver]:
    with receiver() as got:
        yield got


def message_settings(
    settings: Settings, tmp_path: Path, smtp: SmtpSink, hooks: Receiver, port: int
) -> Settings:
    return console_settings(settings, tmp_path).model_copy(
        update={
            "console_public_url": f"http://127.0.0.1:{port}",
            "approval_link_secret": SecretStr(LINK_SECRET),
            "approval_email_addresses": {
                "user:alice": "alice@example.com",
                "user:bob": "bob@example.com",
            },
            "approval_slack_webhooks": {"role:ap-approver": SecretStr(f"{hooks.url}/slack")},
            "approval_webhooks": {"role:ap-approver": f"{hooks.url}/hook"},
            "approval_webhook_secret": SecretStr(HOOK_SECRET),
            "smtp_host": "127.0.0.1",
            "smtp_port": smtp.port,
            "smtp_security": "none",
        }
    )


async def until(check: object, what: str, tries: int = 400) -> None:
    for _ in range(tries):
        if callable(check) and check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


def mail_to(sink: SmtpSink, address: str) -> Message:
    found = [m for m in sink.messages if m["To"] == address]
    assert found, f"no mail to {address}"
    return found[-1]


def link_in(message: Message) -> str:
    payload = message.get_payload(decode=True)
    assert isinstance(payload, bytes)
    found = LINK.search(payload.decode())
    assert found, "the message has no link"
    return found.group(0)


async def follow_signing_in(http: httpx.AsyncClient, link: str, person: str) -> httpx.Response:
    """Follow `link` unsigned-in, sign in where it sends us, and follow on; the last answer."""
    first = await http.get(link)
    assert first.status_code == 303
    login = first.headers["location"]
    assert login.startswith("/login?next=/r/"), login
    next_page = unquote(login.split("next=", 1)[1])
    page = await http.get(login)
    assert f'value="{next_page}"' in page.text  # the sign-in form keeps where to go next
    signed = await http.post(
        "/login",
        data={
            "csrf": csrf_of(page.text),
            "person": person,
            "password": password(person),
            "next": next_page,
        },
    )
    assert signed.status_code == 303 and signed.headers["location"] == next_page
    return await http.get(next_page)


async def test_an_approval_goes_out_by_mail_slack_and_webhook_and_a_link_leads_to_deciding(
    client: Client, settings: Settings, tmp_path: Path, smtp: SmtpSink, hooks: Receiver
) -> None:
    port = free_port()
    s = message_settings(settings, tmp_path, smtp, hooks, port)
    runtime = Runtime.from_settings(s)
    with serve_asgi(create_app(s), "console server", port=port) as base:
        async with build_worker(client, s, runtime):
            handle = await start_invoice(client, s, "INV-1003", started_by="user:dana")
            await until(lambda: len(smtp.messages) >= 2 and len(hooks.posts) >= 2, "messages")
            alice_mail = mail_to(smtp, "alice@example.com")
            bob_mail = mail_to(smtp, "bob@example.com")
            request_id = alice_mail["X-Tether-Request"]
            # The subject reads as the tool presents the step.
            assert alice_mail["Subject"] == "Approval needed: Pay $25,000.00 to globex for INV-1003"
            alice_link, bob_link = link_in(alice_mail), link_in(bob_mail)
            assert alice_link.startswith(f"{base}/r/") and alice_link != bob_link
            claim = verify_link(LINK_SECRET, alice_link.rsplit("/", 1)[1])
            pending = runtime.approvals.get(request_id)
            assert claim.request_id == request_id and claim.person == "user:alice"
            assert pending.deadline is not None
            assert claim.expires == pending.deadline.replace(microsecond=0)

            # The generic webhook: signed like the notify webhook, a link per approver.
            (_, headers, body) = next(p for p in hooks.posts if p[0] == "/hook")
            verify_webhook(
                HOOK_SECRET, headers["x-tether-timestamp"], body, headers["x-tether-signature"]
            )
            sent = json.loads(body)
            assert sent["request_id"] == request_id and sent["action"] == "payments.pay"
            assert set(sent["links"]) == {"user:alice", "user:bob"}
            slack = json.loads(next(p for p in hooks.posts if p[0] == "/slack")[2])
            assert "Open as alice" in slack["text"] and request_id in slack["text"]

            async with httpx.AsyncClient(base_url=base, timeout=60) as alice:
                # A link alone decides nothing: it asks for sign-in, then shows the request.
                landed = await follow_signing_in(alice, alice_link, "user:alice")
                assert landed.status_code == 303
                url = landed.headers["location"]
                assert url == f"/requests/{request_id}"
                page = await alice.get(url)
                assert page.status_code == 200 and 'id="decide"' in page.text
                assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
                # The same link again: used once.
                again = await alice.get(alice_link)
                assert again.status_code == 410 and 'data-problem="used"' in again.text
                # Bob's link, followed by alice: another person's; it stays unused.
                other = await alice.get(bob_link)
                assert other.status_code == 403 and 'data-problem="other-person"' in other.text
                # Forged and expired links.
                token = alice_link.rsplit("/", 1)[1]
                forged = await alice.get(f"/r/{token[:-2]}xx")
                assert forged.status_code == 400 and 'data-problem="forged"' in forged.text
                stale = issue_link(
                    LINK_SECRET, request_id, "user:alice", datetime.now(UTC) - timedelta(seconds=1)
                )
                expired = await alice.get(f"/r/{stale}")
                assert expired.status_code == 410 and 'data-problem="expired"' in expired.text
                # Approve on the request page.
                done = await alice.post(
                    f"{url}/decide",
                    data={"verdict": "approve", "comment": "via mail", "csrf": csrf_of(page.text)},
                )
                assert done.status_code == 303
            assert (await handle.result()).status == "paid"
            # The run with its message activity replays. tests/histories/invoice-messages.json
            # keeps one such history for every run of the suite, recorded from this test
            # under the workflow id 'invoice-messages' (the replay test names a history by
            # its file, and the request id is derived from the workflow id).
            history = await handle.fetch_history()
            replayed = await replayer_for().replay_workflow(history, raise_on_replay_failure=False)
            assert replayed.replay_failure is None, replayed.replay_failure
            async with httpx.AsyncClient(base_url=base, timeout=60) as bob:
                # Bob's unused link still opens the (now decided) request for bob.
                decided = await follow_signing_in(bob, bob_link, "user:bob")
                assert decided.headers["location"] == f"/requests/{request_id}"
                shown = await bob.get(decided.headers["location"])
                assert 'id="decided"' in shown.text
    notified = [e for e in runtime.ledger.events(handle.id) if e.kind == "approval.notified"]
    assert sorted(str(e.payload["delivery"]) for e in notified) == [
        "email:user:alice",
        "email:user:bob",
        "slack:role:ap-approver",
        "webhook:role:ap-approver",
    ]
    assert all(e.outcome == "sent" for e in notified)
    assert all("/r/" not in json.dumps(e.payload) for e in notified)  # no link in the ledger
    followed = [e for e in runtime.ledger.events(handle.id) if e.kind == "approval.link_followed"]
    assert sorted(e.actor for e in followed) == ["user:alice", "user:bob"]
    runtime.ledger.engine.dispose()


async def test_a_failing_channel_is_retried_recorded_and_never_fails_the_run(
    client: Client, settings: Settings, tmp_path: Path, smtp: SmtpSink, hooks: Receiver
) -> None:
    smtp.refuse_connections = 1  # the first attempt's first e-mail meets a 421
    hooks.answers["/slack"] = 404  # a Slack webhook that was deleted: permanent
    port = free_port()
    s = message_settings(settings, tmp_path, smtp, hooks, port)
    runtime = Runtime.from_settings(s)
    async with build_worker(client, s, runtime):
        handle = await start_invoice(client, s, "INV-1003", started_by="user:dana")

        def notified() -> list[str]:
            return sorted(
                f"{e.payload['delivery']}={e.outcome}"
                for e in runtime.ledger.events(handle.id)
                if e.kind == "approval.notified"
            )

        await until(lambda: len(notified()) == 4, "every delivery recorded")
        assert notified() == [
            "email:user:alice=sent",
            "email:user:bob=sent",
            "slack:role:ap-approver=failed",
            "webhook:role:ap-approver=sent",
        ]
        # Retried once for the 421: the webhook delivered on the first attempt is not
        # sent again, and each person gets one e-mail.
        assert sum(p[0] == "/hook" for p in hooks.posts) == 1
        assert sum(p[0] == "/slack" for p in hooks.posts) == 1
        assert sorted(m["To"] for m in smtp.messages) == ["alice@example.com", "bob@example.com"]
        events = runtime.ledger.events(handle.id)
        failed = next(e for e in events if str(e.payload.get("delivery")).startswith("slack"))
        error = str(failed.payload["error"])
        assert "404" in error and "/slack" not in error  # the URL (a secret) is not recorded
        # Still waiting for a person.
        assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
        await handle.terminate("test over")
    runtime.ledger.engine.dispose()


def test_links_are_bound_signed_and_expire() -> None:
    soon = datetime.now(UTC) + timedelta(hours=1)
    token = issue_link(LINK_SECRET, "apr-1", "user:alice", soon)
    claim = verify_link(LINK_SECRET, token)
    assert (claim.request_id, claim.person) == ("apr-1", "user:alice")
    payload, mac = token.split(".")
    # Another person's or request's claim under the same MAC does not verify.
    other = issue_link(LINK_SECRET, "apr-1", "user:bob", soon).split(".")[0]
    for bad in (f"{other}.{mac}", f"{payload}.{mac[:-1]}A", payload, ""):
        with pytest.raises(LinkRefused) as refused:
            verify_link(LINK_SECRET, bad)
        assert refused.value.problem is LinkProblem.FORGED
    with pytest.raises(LinkRefused) as wrong_key:
        verify_link("k" * 40, token)
    assert wrong_key.value.problem is LinkProblem.FORGED
    with pytest.raises(LinkRefused) as late:
        verify_link(LINK_SECRET, token, now=soon + timedelta(seconds=1))
    assert late.value.problem is LinkProblem.EXPIRED


def test_channels_need_a_link_secret_a_public_url_and_smtp(settings: Settings) -> None:
    base = {"approval_email_addresses": {"user:alice": "a@example.com"}}
    with pytest.raises(ValueError, match="approval_link_secret"):
        Settings(**base)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="console_public_url"):
        Settings(**base, approval_link_secret=LINK_SECRET)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="smtp_host"):
        Settings(
            **base,  # type: ignore[arg-type]
            approval_link_secret=LINK_SECRET,
            console_public_url="https://tether.example.com",
        )
    with pytest.raises(ValueError, match="approval_webhook_secret"):
        Settings(
            approval_webhooks={"role:ap-approver": "https://hooks.example.com/x"},
            approval_link_secret=LINK_SECRET,
            console_public_url="https://tether.example.com",
        )


async def test_a_decision_does_not_wait_for_a_channel_that_keeps_failing(
    client: Client, settings: Settings, tmp_path: Path, smtp: SmtpSink, hooks: Receiver
) -> None:
    smtp.refuse_connections = 10_000  # the SMTP server is down for good
    s = message_settings(settings, tmp_path, smtp, hooks, free_port()).model_copy(
        update={"approval_slack_webhooks": {}, "approval_webhooks": {}}
    )
    runtime = Runtime.from_settings(s)
    async with build_worker(client, s, runtime):
        handle = await start_invoice(client, s, "INV-1003", started_by="user:dana")
        await until(lambda: smtp.connections >= 2, "a retried delivery")
        pending = runtime.approvals.list()[0]
        await decide_request(
            client,
            runtime.approvals,
            runtime.ledger,
            pending.request_id,
            approver="user:alice",
            approve=True,
            comment="",
            key=signing_key(s),
        )
        assert (await handle.result()).status == "paid"
        history = await handle.fetch_history()
    # The decided request's message activity was cancelled, not left retrying.
    assert any(
        e.HasField("activity_task_cancel_requested_event_attributes") for e in history.events
    )
    notified = [e for e in runtime.ledger.events(handle.id) if e.kind == "approval.notified"]
    assert notified == []  # nothing was delivered, and the run never waited for it
    runtime.ledger.engine.dispose()


@pytest.mark.parametrize("width", [1280, 390])
async def test_a_mailed_link_in_the_browser_signs_in_lands_on_the_request_and_approves(
    client: Client,
    settings: Settings,
    tmp_path: Path,
    smtp: SmtpSink,
    hooks: Receiver,
    chromium: Browser,
    width: int,
) -> None:
    port = free_port()
    s = message_settings(settings, tmp_path, smtp, hooks, port).model_copy(
        update={"console_secure_cookies": True}  # browsers keep it for http://127.0.0.1
    )
    runtime = Runtime.from_settings(s)
    with serve_asgi(create_app(s), "console server", port=port):
        async with build_worker(client, s, runtime):
            handle = await start_invoice(client, s, "INV-1003", started_by="user:dana")
            await until(lambda: len(smtp.messages) >= 2, "the e-mails")
            link = link_in(mail_to(smtp, "alice@example.com"))
            context = await chromium.new_context(
                viewport={"width": width, "height": 900}, bypass_csp=True
            )
            page = await context.new_page()
            await page.goto(link)
            await expect(page.locator("h1")).to_have_text("Sign in")
            await assert_accessible(page, "sign-in from a link")
            await page.fill("input[name=person]", "user:alice")
            await page.fill("input[name=password]", password("user:alice"))
            await page.click("button[type=submit]")
            request_id = mail_to(smtp, "alice@example.com")["X-Tether-Request"]
            await expect(page).to_have_url(re.compile(rf"/requests/{request_id}$"))
            await expect(page.locator("form#decide")).to_have_count(1)
            await assert_accessible(page, "the request a link opened")
            # The same link again: a plain page says it was used; nothing is decided.
            await page.goto(link)
            await expect(page.locator("h1")).to_have_text("This link was already used")
            await assert_accessible(page, "a used link")
            await page.go_back()
            await page.click("button.approve")
            await expect(page.locator("#decided h2")).to_have_text("Approved")
            await assert_accessible(page, "the request approved from a link")
            assert (await handle.result()).status == "paid"
            await context.close()
    runtime.ledger.engine.dispose()
