"""The notify tier for real: signed webhook, feed, log, review window and compensation.

A real local HTTP server receives the webhook; a real PayInvoice run on the dev server
pays a medium invoice (rule ap-pay-medium, tier notify) and opens a review window.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from ap.workflows import InvoiceResult
from pydantic import BaseModel, SecretStr, ValidationError
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateFailedError
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from tests.conftest import bank_of, replayer_for, start_invoice
from tests.test_cli import tether
from tether.activities.notify import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    WebhookSignatureError,
    sign_webhook,
    verify_webhook,
)
from tether.activities.tools import ToolActivities, tool
from tether.core.config import Settings
from tether.errors import ReviewError
from tether.governance.feed import FeedStore
from tether.governance.reviews import (
    ReviewFlag,
    ReviewOutcome,
    ReviewStatus,
    ReviewWindow,
    check_flag,
    review_id,
)
from tether.runtime.review import flag_review
from tether.verification.events import RecordedEvent
from tether.worker import Runtime, build_worker

SECRET = "s3cret-for-tests"


@dataclass
class Receiver:
    """A webhook receiver on loopback: answers `codes` in turn (then 200), keeps requests."""

    codes: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""


@contextmanager
def webhook_receiver(codes: list[int] | None = None) -> Iterator[Receiver]:
    receiver = Receiver(codes=list(codes or []))

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            receiver.received.append((dict(self.headers.items()), body))
            code = receiver.codes.pop(0) if receiver.codes else 200
            self.send_response(code)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


async def until(check: Callable[[], bool], what: str, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


def notify_settings(settings: Settings, **update: Any) -> Settings:
    return settings.model_copy(update=update)


async def pay_medium_invoice(
    client: Client, settings: Settings, started_by: str = "user:bob"
) -> WorkflowHandle[Any, InvoiceResult]:
    text = "Invoice INV-1002 from northwind"
    handle = await start_invoice(client, settings, "INV-1002", started_by=started_by, text=text)
    result = await handle.result()
    assert result.status == "paid" and result.amount == 4800.0
    return handle


def events(runtime: Runtime, workflow_id: str, kind: str) -> list[RecordedEvent]:
    return [e for e in runtime.ledger.events(workflow_id) if e.kind == kind]


def has_event(runtime: Runtime, workflow_id: str, kind: str) -> Callable[[], bool]:
    return lambda: bool(events(runtime, workflow_id, kind))


# -- signing ----------------------------------------------------------------------------


def test_webhook_signature_verifies_and_refuses_tampering_and_replays() -> None:
    body = b'{"action":"payments.pay","amount":4800}'
    stamp = str(int(time.time()))
    signature = sign_webhook(SECRET, stamp, body)
    verify_webhook(SECRET, stamp, body, signature)
    with pytest.raises(WebhookSignatureError, match="does not match the body"):
        verify_webhook(SECRET, stamp, body.replace(b"4800", b"48000"), signature)
    with pytest.raises(WebhookSignatureError, match="does not match the body"):
        verify_webhook("another-secret", stamp, body, signature)
    old = str(int(time.time()) - 3600)
    with pytest.raises(WebhookSignatureError, match="beyond the 300s tolerance"):
        verify_webhook(SECRET, old, body, sign_webhook(SECRET, old, body))
    with pytest.raises(WebhookSignatureError, match="'yesterday' is not unix seconds"):
        verify_webhook(SECRET, "yesterday", body, signature)


def test_webhook_sink_needs_a_url_and_a_secret(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="notify_webhook_url is not set"):
        Settings(notify_sinks=["log", "webhook"], notify_webhook_secret=SecretStr("x"))
    with pytest.raises(ValidationError, match="notify_webhook_secret is empty"):
        Settings(notify_sinks=["webhook"], notify_webhook_url="http://127.0.0.1:9/hook")
    with pytest.raises(ValidationError, match="'pager', which is not a sink"):
        Settings(notify_sinks=["pager"])


class _A(BaseModel):
    x: int


class _B(BaseModel):
    y: int


def test_a_compensation_must_be_bound_and_take_the_same_args() -> None:
    @tool(action="t.do", resource="t/{x}", side_effect=True, compensate="t_undo_missing")
    async def t_do_missing(args: _A) -> _A:
        return args

    with pytest.raises(TypeError, match="'t_undo_missing', which is not a tool on this worker"):
        ToolActivities(None, [t_do_missing])  # type: ignore[arg-type]

    @tool(action="t.undo", resource="t/{y}", side_effect=True)
    async def t_undo_other(args: _B) -> _B:
        return args

    @tool(action="t.do", resource="t/{x}", side_effect=True, compensate="t_undo_other")
    async def t_do_other(args: _A) -> _A:
        return args

    with pytest.raises(TypeError, match="which takes _B, not _A"):
        ToolActivities(None, [t_do_other, t_undo_other])  # type: ignore[arg-type]


def test_a_rule_naming_an_approver_role_limits_who_may_flag() -> None:
    now = datetime.now(UTC)
    window = ReviewWindow(
        review_id="wf-review-2",
        workflow_id="wf",
        run_id="r",
        step=2,
        agent="agent:ap-clerk",
        action="payments.pay",
        resource="vendor/northwind",
        tool="pay_vendor",
        rule="ap-pay-medium",
        policy_version="v",
        reviewer_role="role:ap-approver",
        reviewers=["user:alice"],
        until=now + timedelta(minutes=5),
    )
    check_flag(window, ReviewFlag(reviewer="user:alice"), now)
    with pytest.raises(ReviewError, match="'user:carol' does not hold 'role:ap-approver'"):
        check_flag(window, ReviewFlag(reviewer="user:carol"), now)
    with pytest.raises(ReviewError, match="agent identity"):
        check_flag(window, ReviewFlag(reviewer="agent:ap-clerk"), now)
    with pytest.raises(ReviewError, match="closed at"):
        check_flag(window, ReviewFlag(reviewer="user:alice"), now + timedelta(minutes=6))


# -- the notify tier end to end -----------------------------------------------------------


async def test_notify_tells_every_sink_and_a_flag_refunds_the_payment(
    client: Client,
    settings: Settings,
    runtime: Runtime,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="tether.notify")
    feed = FeedStore(runtime.ledger.engine)
    with webhook_receiver() as receiver:
        s = notify_settings(
            settings,
            notify_sinks=["log", "feed", "webhook"],
            notify_webhook_url=receiver.url,
            notify_webhook_secret=SecretStr(SECRET),
            review_window_seconds=120,
        )
        async with build_worker(client, s, runtime):
            handle = await pay_medium_invoice(client, s)
            wid = handle.id
            # The ledger's notify event names every sink told and when the window ends.
            [notify] = events(runtime, wid, "notify")
            assert notify.tier == "notify" and notify.rule == "ap-pay-medium"
            assert notify.payload["sinks"] == ["log", "feed", "webhook"]
            assert notify.payload["review_id"] == review_id(wid, notify.step or 0)
            step = notify.step or 0

            # Webhook: delivered once, signed over "<timestamp>.<body>" with the secret.
            assert len(receiver.received) == 1
            headers, body = receiver.received[0]
            verify_webhook(SECRET, headers[TIMESTAMP_HEADER], body, headers[SIGNATURE_HEADER])
            with pytest.raises(WebhookSignatureError):
                verify_webhook(
                    SECRET,
                    headers[TIMESTAMP_HEADER],
                    body.replace(b"northwind", b"evilcorp"),
                    headers[SIGNATURE_HEADER],
                )
            sent = json.loads(body)
            assert headers[DELIVERY_HEADER] == sent["key"]
            assert (sent["workflow_id"], sent["step"], sent["rule"]) == (
                wid,
                step,
                "ap-pay-medium",
            )
            assert sent["resource"] == "vendor/northwind" and sent["tier"] == "notify"
            assert sent["policy_version"] == runtime.policy.version
            assert sent["result_digest"] == notify.payload["result_digest"]
            assert sent["review_until"] == notify.payload["review_until"]

            # Feed row and log line.
            [row] = feed.list_feed(workflow_id=wid)
            assert row.action == "payments.pay" and row.review_id == review_id(wid, step)
            assert any(wid in r.getMessage() for r in caplog.records if r.name == "tether.notify")

            # The review window is open and listed.
            await until(lambda: bool(feed.list_reviews()), "the review window to open")
            listed = await tether(s, tmp_path, "review", "list", "--json")
            assert listed.returncode == 0, listed.stderr
            [window] = json.loads(listed.stdout)
            assert (window["workflow_id"], window["step"], window["compensation"]) == (
                wid,
                step,
                "refund_vendor",
            )

            # An agent may not flag; the refusal is recorded (through the CLI here).
            refused = await tether(
                s, tmp_path, "review", "flag", wid, str(step), "--as", "agent:ap-clerk"
            )
            assert refused.returncode == 2 and "agent identity" in refused.stderr
            [why] = events(runtime, wid, "review.refused")
            assert why.actor == "agent:ap-clerk" and "agent identity" in str(why.payload["why"])
            assert bank_of(runtime).refunds("INV-1002") == []

            # A person flags within the window: the payment is refunded, once.
            outcome = await flag_review(
                client,
                feed,
                runtime.ledger,
                wid,
                step,
                reviewer="user:carol",
                reason="wrong vendor",
            )
            assert outcome.status is ReviewStatus.COMPENSATED
            assert outcome.compensation == "refund_vendor"
            [refund] = bank_of(runtime).refunds("INV-1002")
            assert (refund.vendor, refund.amount) == ("northwind", 4800.0)
            kinds = [(e.kind, e.actor) for e in runtime.ledger.events(wid)]
            assert kinds[-2:] == [
                ("review.flagged", "user:carol"),
                ("compensation.executed", "user:carol"),
            ]
            executed = events(runtime, wid, "compensation.executed")[0]
            assert executed.payload["tool"] == "refund_vendor"
            # The refund undoes the payment under the key the payment's decision recorded.
            [paid] = [d for d in events(runtime, wid, "decision") if d.step == step]
            assert executed.payload["compensates"] == paid.payload["idempotency_key"]
            assert str(paid.payload["idempotency_key"]).startswith(f"{wid}:{notify.run_id}:")
            assert executed.payload["idempotency_key"] != executed.payload["compensates"]
            assert feed.get_review(review_id(wid, step)).status is ReviewStatus.COMPENSATED

            # A second flag is refused and recorded; nothing is refunded twice.
            with pytest.raises(ReviewError, match="already compensated"):
                await flag_review(client, feed, runtime.ledger, wid, step, reviewer="user:alice")
            assert len(bank_of(runtime).refunds("INV-1002")) == 1
            assert len(events(runtime, wid, "review.refused")) == 2
            assert runtime.ledger.verify().ok

            # Both new histories (patched parent, flagged window) replay deterministically.
            window_handle = client.get_workflow_handle(review_id(wid, step))
            await window_handle.result()
            replayer = replayer_for()
            for h in (handle, window_handle):
                replayed = await replayer.replay_workflow(
                    await h.fetch_history(), raise_on_replay_failure=False
                )
                assert replayed.replay_failure is None, replayed.replay_failure


async def test_flags_sent_straight_to_temporal_are_refused_and_recorded_by_the_window(
    client: Client, settings: Settings, runtime: Runtime
) -> None:
    """No reviewing service in between: the window records each refusal itself."""
    feed = FeedStore(runtime.ledger.engine)
    s = notify_settings(settings, review_window_seconds=120)
    async with build_worker(client, s, runtime):
        handle = await pay_medium_invoice(client, s)
        wid = handle.id
        [notify] = events(runtime, wid, "notify")
        step = notify.step or 0
        await until(lambda: bool(feed.list_reviews()), "the review window to open")
        review = client.get_workflow_handle(review_id(wid, step))
        attempts: list[tuple[object, str, str]] = [
            ({"reviewer": "agent:ap-clerk", "reason": "me"}, "agent:ap-clerk", "agent identity"),
            ({"reviewer": ["user:carol"]}, "unknown", "malformed"),
            ("flag it", "unknown", "malformed"),
        ]
        for payload, _, why in attempts:
            with pytest.raises(WorkflowUpdateFailedError) as failed:
                await review.execute_update("flag", payload)
            assert isinstance(failed.value.cause, ApplicationError)
            assert failed.value.cause.type == "ReviewRefused" and why in str(failed.value.cause)
        refused = events(runtime, wid, "review.refused")
        assert [(e.actor, e.payload["via"]) for e in refused] == [
            (a, "update") for _, a, _ in attempts
        ]
        for event, (_, _, why) in zip(refused, attempts, strict=True):
            assert why in str(event.payload["why"])
        assert bank_of(runtime).refunds("INV-1002") == []
        assert feed.get_review(review_id(wid, step)).status is ReviewStatus.OPEN

        # The window is still open to a person, and a refusal seen by the reviewing
        # service is not recorded twice.
        outcome = await review.execute_update(
            "flag",
            ReviewFlag(reviewer="user:carol", reason="wrong vendor"),
            result_type=ReviewOutcome,
        )
        assert outcome.status is ReviewStatus.COMPENSATED
        with pytest.raises(ReviewError):
            await flag_review(client, feed, runtime.ledger, wid, step, reviewer="user:alice")
        assert len(events(runtime, wid, "review.refused")) == len(attempts) + 1
        await review.result()
        replayer = replayer_for()
        replayed = await replayer.replay_workflow(
            await review.fetch_history(), raise_on_replay_failure=False
        )
        assert replayed.replay_failure is None, replayed.replay_failure
        assert runtime.ledger.verify().ok


async def test_a_window_that_ends_unflagged_closes_and_refuses_late_flags(
    client: Client, settings: Settings, runtime: Runtime
) -> None:
    feed = FeedStore(runtime.ledger.engine)
    s = notify_settings(settings, review_window_seconds=2)
    async with build_worker(client, s, runtime):
        handle = await pay_medium_invoice(client, s)
        wid = handle.id
        [notify] = events(runtime, wid, "notify")
        assert notify.payload["sinks"] == ["log", "feed"]
        step = notify.step or 0
        await until(has_event(runtime, wid, "review.closed"), "the window to close")
        [closed] = events(runtime, wid, "review.closed")
        assert closed.actor == "review-window" and closed.rule == "ap-pay-medium"
        assert feed.get_review(review_id(wid, step)).status is ReviewStatus.CLOSED
        assert feed.list_reviews() == []

        with pytest.raises(ReviewError, match="closed"):
            await flag_review(client, feed, runtime.ledger, wid, step, reviewer="user:carol")
        [late] = events(runtime, wid, "review.refused")
        assert late.actor == "user:carol"
        # The window itself refuses too: it has ended.
        review = client.get_workflow_handle(review_id(wid, step))
        with pytest.raises((RPCError, WorkflowUpdateFailedError)):
            await review.execute_update("flag", ReviewFlag(reviewer="user:carol"))
        assert bank_of(runtime).refunds("INV-1002") == []
        assert not events(runtime, wid, "compensation.executed")


async def test_a_failing_webhook_is_retried_and_never_loses_the_other_sinks(
    client: Client, settings: Settings, runtime: Runtime
) -> None:
    feed = FeedStore(runtime.ledger.engine)
    # 503 then 200: Temporal retries the notify activity; the delivery id stays the same.
    with webhook_receiver([503]) as flaky:
        s = notify_settings(
            settings,
            notify_sinks=["log", "feed", "webhook"],
            notify_webhook_url=flaky.url,
            notify_webhook_secret=SecretStr(SECRET),
        )
        async with build_worker(client, s, runtime):
            handle = await pay_medium_invoice(client, s)
        [notify] = events(runtime, handle.id, "notify")
        assert notify.payload["sinks"] == ["log", "feed", "webhook"]
        assert len(flaky.received) == 2
        assert flaky.received[0][0][DELIVERY_HEADER] == flaky.received[1][0][DELIVERY_HEADER]
        first, second = (json.loads(body) for _, body in flaky.received)
        assert first["review_until"] == second["review_until"] == notify.payload["review_until"]
        assert len(feed.list_feed(workflow_id=handle.id)) == 1
    # 410: retrying cannot help; the step goes on and the ledger says what failed.
    with webhook_receiver([410]) as gone:
        s = notify_settings(
            settings,
            notify_sinks=["log", "feed", "webhook"],
            notify_webhook_url=gone.url,
            notify_webhook_secret=SecretStr(SECRET),
        )
        async with build_worker(client, s, runtime):
            handle = await pay_medium_invoice(client, s)
        [notify] = events(runtime, handle.id, "notify")
        assert notify.outcome == "partial"
        assert notify.payload["sinks"] == ["log", "feed"]
        failed = notify.payload["failed"]
        assert isinstance(failed, dict) and "answered 410" in str(failed["webhook"])
        assert len(gone.received) == 1
        assert len(feed.list_feed(workflow_id=handle.id)) == 1
