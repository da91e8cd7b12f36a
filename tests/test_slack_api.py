"""Approval messages through Slack's Web API (`chat.postMessage` with a bot token), against
a local HTTP server this test serves that speaks the API's shape: a bearer token in the
`Authorization` header, a JSON body, HTTP 200 with `{"ok": true, "ts": ...}`, or
`{"ok": false, "error": ...}` for what Slack refuses, and HTTP 429 when rate limited.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.client import Client

from tests.conftest import start_invoice
from tests.console_helpers import console_settings, serve_asgi
from tether.activities.slack import SlackError, post_message
from tether.core.config import Settings
from tether.governance.links import verify_link
from tether.runtime.approvals import decide_request, signing_key
from tether.worker import Runtime, build_worker

TOKEN = "xoxb-test-bot-token"
LINK_SECRET = "s" * 40


@dataclass
class SlackApi:
    """What the local Slack API received, and how it answers."""

    url: str = ""
    posts: list[tuple[dict[str, str], dict[str, object]]] = field(default_factory=list)
    refuse: dict[str, str] = field(default_factory=dict)
    """Channel to the `error` Slack answers for it (with ok:false)."""
    rate_limited: int = 0
    """How many next posts are answered 429 Too Many Requests."""


@pytest.fixture
def slack() -> Iterator[SlackApi]:
    api = SlackApi()

    async def post_message_endpoint(request: Request) -> Response:
        headers = dict(request.headers)
        if api.rate_limited:
            api.rate_limited -= 1
            return Response(status_code=429, headers={"Retry-After": "1"})
        if headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"ok": False, "error": "invalid_auth"})
        if not headers.get("content-type", "").startswith("application/json"):
            return JSONResponse({"ok": False, "error": "invalid_form_data"})
        body = json.loads(await request.body())
        api.posts.append((headers, body))
        channel = str(body.get("channel", ""))
        if channel in api.refuse:
            return JSONResponse({"ok": False, "error": api.refuse[channel]})
        return JSONResponse({"ok": True, "channel": channel, "ts": f"1700000000.{len(api.posts)}"})

    app = Starlette(
        routes=[Route("/api/chat.postMessage", post_message_endpoint, methods=["POST"])]
    )
    with serve_asgi(app, "Slack API") as url:
        api.url = f"{url}/api"
        yield api


def slack_settings(
    settings: Settings, tmp_path: Path, api: SlackApi, channels: dict[str, str]
) -> Settings:
    return console_settings(settings, tmp_path).model_copy(
        update={
            "console_public_url": "http://127.0.0.1:8400",
            "approval_link_secret": SecretStr(LINK_SECRET),
            "approval_slack_token": SecretStr(TOKEN),
            "approval_slack_api_url": api.url,
            "approval_slack_channels": channels,
        }
    )


async def until(check: object, what: str) -> None:
    for _ in range(400):
        if callable(check) and check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"never happened: {what}")


async def _approve(client: Client, s: Settings, runtime: Runtime) -> None:
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


async def test_an_approval_goes_to_a_role_channel_and_a_persons_own_channel(
    client: Client, settings: Settings, tmp_path: Path, slack: SlackApi
) -> None:
    s = slack_settings(
        settings, tmp_path, slack, {"role:ap-approver": "C-APPROVERS", "user:alice": "D-ALICE"}
    )
    runtime = Runtime.from_settings(s)
    async with build_worker(client, s, runtime):
        handle = await start_invoice(client, s, "INV-1003", started_by="user:dana")
        await until(lambda: len(slack.posts) >= 2, "two Slack messages")
        sent = {str(body["channel"]): (headers, body) for headers, body in slack.posts}
        assert set(sent) == {"C-APPROVERS", "D-ALICE"}
        headers, role_message = sent["C-APPROVERS"]
        assert headers["authorization"] == f"Bearer {TOKEN}"
        assert headers["content-type"].startswith("application/json")
        text = str(role_message["text"])
        assert "*Approval needed:* Pay $25,000.00 to globex for INV-1003" in text
        assert "payments.pay on vendor/globex" in text
        assert "Open as alice" in text and "Open as bob" in text  # every approver's link
        # alice's own channel holds her link only, signed for her and this request.
        own = str(sent["D-ALICE"][1]["text"])
        assert "Open as alice" in own and "Open as bob" not in own
        token = own.split("/r/", 1)[1].split("|", 1)[0]
        claim = verify_link(LINK_SECRET, token)
        pending = runtime.approvals.list()[0]
        assert claim.person == "user:alice" and claim.request_id == pending.request_id
        await _approve(client, s, runtime)
        assert (await handle.result()).status == "paid"
    notified = [e for e in runtime.ledger.events(handle.id) if e.kind == "approval.notified"]
    assert sorted((e.payload["delivery"], e.outcome) for e in notified) == [
        ("slack-api:role:ap-approver", "sent"),
        ("slack-api:user:alice", "sent"),
    ]
    assert TOKEN not in json.dumps([e.payload for e in notified])
    runtime.ledger.engine.dispose()


async def test_a_channel_slack_refuses_is_recorded_as_failed_and_the_run_goes_on(
    client: Client, settings: Settings, tmp_path: Path, slack: SlackApi
) -> None:
    slack.refuse["C-GONE"] = "channel_not_found"
    slack.rate_limited = 1  # the first attempt is rate limited: retried, then refused
    s = slack_settings(settings, tmp_path, slack, {"role:ap-approver": "C-GONE"})
    runtime = Runtime.from_settings(s)
    async with build_worker(client, s, runtime):
        handle = await start_invoice(client, s, "INV-1003", started_by="user:dana")

        def failed() -> list[object]:
            events = runtime.ledger.events(handle.id)
            return [e for e in events if e.kind == "approval.notified" and e.outcome == "failed"]

        await until(failed, "the refused delivery recorded")
        (event,) = [e for e in runtime.ledger.events(handle.id) if e.kind == "approval.notified"]
        error = str(event.payload["error"])
        assert "channel 'C-GONE'" in error and "'channel_not_found'" in error
        assert "approval_slack_channels" in error  # what to fix
        assert len(slack.posts) == 1  # refused for good: not sent again
        await _approve(client, s, runtime)
        assert (await handle.result()).status == "paid"
    runtime.ledger.engine.dispose()


def test_post_message_reads_slacks_answers(slack: SlackApi) -> None:
    assert post_message(slack.url, TOKEN, "C-OK", "hello").startswith("1700000000.")
    with pytest.raises(SlackError) as bad:
        post_message(slack.url, "xoxb-wrong", "C-OK", "hello")
    assert bad.value.permanent and "'invalid_auth'" in str(bad.value)
    assert "xoxb-wrong" not in str(bad.value)  # the token never reaches an error
    slack.rate_limited = 1
    with pytest.raises(SlackError) as limited:
        post_message(slack.url, TOKEN, "C-OK", "hello")
    assert not limited.value.permanent and "Retry-After 1" in str(limited.value)
    slack.refuse["C-BUSY"] = "ratelimited"
    with pytest.raises(SlackError) as busy:
        post_message(slack.url, TOKEN, "C-BUSY", "hello")
    assert not busy.value.permanent
    with pytest.raises(SlackError) as gone:
        post_message(f"{slack.url}/nowhere", TOKEN, "C-OK", "hello")
    assert gone.value.permanent and "HTTP 404" in str(gone.value)


def test_slack_channels_need_a_token() -> None:
    common = {
        "approval_link_secret": SecretStr(LINK_SECRET),
        "console_public_url": "https://tether.example.com",
    }
    with pytest.raises(ValueError, match="approval_slack_token is empty"):
        Settings(approval_slack_channels={"role:ap-approver": "C1"}, **common)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"approval_slack_api_url 'slack\.example'"):
        Settings(
            approval_slack_channels={"role:ap-approver": "C1"},
            approval_slack_token=SecretStr(TOKEN),
            approval_slack_api_url="slack.example",
            **common,  # type: ignore[arg-type]
        )
    Settings(
        approval_slack_channels={"role:ap-approver": "C1"},
        approval_slack_token=SecretStr(TOKEN),
        **common,  # type: ignore[arg-type]
    )
