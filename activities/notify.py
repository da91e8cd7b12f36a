"""The notify tier's sinks, and the review window's bookkeeping activities.

A notify-tier action runs at once; then `notify` tells the configured sinks:

- `log`: one log line on `tether.notify` (first attempt only).
- `feed`: a row in the `notifications` table the console reads (idempotent by step).
- `webhook`: a signed JSON POST. Headers `X-Tether-Timestamp` (unix seconds) and
  `X-Tether-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">` with the shared
  secret; `X-Tether-Delivery` is the same on every retry, so receivers can drop repeats.
  Receivers check a request with `verify_webhook`.

Contract: `notify` is a local activity. Log and feed are told before the webhook is tried,
so a failing webhook never loses them. A webhook failure raises (Temporal retries the
activity, backing off to 30 s) for as long as the outage budget lasts
(`notify_outage_budget_seconds`, one hour by default, counted from the first attempt)
and at least `NotifyInput.webhook_attempts` attempts, unless the receiver answers 4xx
(retrying cannot help); then the notification is recorded as partly failed and the step
goes on. The ledger `notify` event, one per step, lists the sinks told.

`open_review` and `record_review` are the `ReviewWindow` workflow's local activities:
they keep the review index and write the window's ledger events, idempotently by key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from datetime import UTC, datetime, timedelta

import httpx
from pydantic import JsonValue
from temporalio import activity

from tether.activities.payloads import NotifyInput, NotifyResult, RecordReviewInput
from tether.core.config import Settings
from tether.governance.feed import FeedStore, Notification
from tether.governance.reviews import ReviewWindow, review_id
from tether.verification.events import LedgerEvent
from tether.verification.ledger import Ledger

log = logging.getLogger("tether.notify")

SIGNATURE_HEADER = "X-Tether-Signature"
TIMESTAMP_HEADER = "X-Tether-Timestamp"
DELIVERY_HEADER = "X-Tether-Delivery"


class WebhookError(Exception):
    """A webhook delivery failed; the message names the URL and the answer."""

    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent
        """The receiver refused the request (4xx): sending it again cannot help."""


class WebhookSignatureError(Exception):
    """A received webhook does not verify; the message says which check failed."""


def sign_webhook(secret: str, timestamp: str, body: bytes) -> str:
    """The `X-Tether-Signature` value of `body` sent at `timestamp`."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_webhook(
    secret: str,
    timestamp: str,
    body: bytes,
    signature: str,
    tolerance: float = 300.0,
    now: float | None = None,
) -> None:
    """Check a received webhook; raise WebhookSignatureError naming the failed check.

    `tolerance` (seconds) bounds how old (or how far ahead) `timestamp` may be, so a
    captured request cannot be replayed later.
    """
    try:
        sent = int(timestamp)
    except ValueError:
        raise WebhookSignatureError(
            f"{TIMESTAMP_HEADER} {timestamp!r} is not unix seconds; pass the header as received"
        ) from None
    skew = abs((time.time() if now is None else now) - sent)
    if skew > tolerance:
        raise WebhookSignatureError(
            f"{TIMESTAMP_HEADER} {timestamp!r} is {skew:.0f}s from now, beyond the "
            f"{tolerance:.0f}s tolerance; check both clocks, or this is a replayed request"
        )
    if not hmac.compare_digest(sign_webhook(secret, timestamp, body), signature):
        raise WebhookSignatureError(
            f"{SIGNATURE_HEADER} {signature[:20]!r}… does not match the body; the body was "
            "altered or the secret differs from notify_webhook_secret"
        )


class WebhookSink:
    """POSTs signed notifications. A client per delivery: notifications are rare."""

    def __init__(self, url: str, secret: str, timeout: float = 10.0) -> None:
        self.url = url
        self.secret = secret
        self.timeout = timeout

    def deliver(self, note: Notification) -> None:
        """Deliver once; raise WebhookError (`.permanent` for a 4xx answer)."""
        body = json.dumps(note.body(), sort_keys=True, separators=(",", ":")).encode()
        stamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: sign_webhook(self.secret, stamp, body),
            DELIVERY_HEADER: note.key,
        }
        try:
            with httpx.Client(timeout=self.timeout) as http:
                answer = http.post(self.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            raise WebhookError(f"webhook {self.url!r} unreachable: {exc!r}") from None
        code = answer.status_code
        if code >= 300:
            raise WebhookError(
                f"webhook {self.url!r} answered {code}: {answer.text[:200]!r}",
                permanent=400 <= code < 500 and code not in (408, 429),
            )


class NotifyActivities:
    """The notify sinks and the review index, built once in `worker.py`."""

    def __init__(
        self,
        ledger: Ledger,
        feed: FeedStore,
        sinks: list[str],
        webhook: WebhookSink | None = None,
        review_window_seconds: int = 3600,
        outage_budget_seconds: float = 3600.0,
    ) -> None:
        self.ledger = ledger
        self.feed = feed
        self.sinks = sinks
        self.webhook = webhook
        self.review_window_seconds = review_window_seconds
        self.outage_budget_seconds = outage_budget_seconds

    @classmethod
    def from_settings(cls, settings: Settings, ledger: Ledger, feed: FeedStore) -> NotifyActivities:
        webhook = None
        if "webhook" in settings.notify_sinks and settings.notify_webhook_url:
            webhook = WebhookSink(
                settings.notify_webhook_url, settings.notify_webhook_secret.get_secret_value()
            )
        return cls(
            ledger,
            feed,
            list(settings.notify_sinks),
            webhook,
            settings.review_window_seconds,
            settings.notify_outage_budget_seconds,
        )

    @activity.defn(name="notify")
    def notify(self, inp: NotifyInput) -> NotifyResult:
        info = activity.info()
        ref, decision = inp.ref, inp.decision
        window = (decision.timeout_seconds or self.review_window_seconds) if inp.review else 0
        # The first attempt's schedule time: every retry announces the same window end.
        until = info.scheduled_time.astimezone(UTC) + timedelta(seconds=window) if window else None
        note = Notification(
            key=ref.key("notify"),
            workflow_id=ref.workflow_id,
            run_id=ref.run_id,
            step=ref.step,
            agent=ref.agent,
            action=inp.action,
            resource=inp.resource,
            tier=decision.tier.value,
            rule=decision.rule,
            policy_version=decision.policy_version,
            result_digest=inp.result_digest,
            review_id=review_id(ref.workflow_id, ref.step) if window else "",
            review_until=until,
            notified_at=info.scheduled_time.astimezone(UTC),
        )
        told: list[str] = []
        failed: dict[str, str] = {}
        if "log" in self.sinks:
            if info.attempt == 1:
                log.info(
                    "notify: %s did %s on %s under rule %s (workflow %s, step %d)%s",
                    ref.agent,
                    inp.action,
                    inp.resource,
                    decision.rule,
                    ref.workflow_id,
                    ref.step,
                    f"; review window open until {until.isoformat()}" if until else "",
                )
            told.append("log")
        if "feed" in self.sinks:
            self.feed.add(note)
            told.append("feed")
        if "webhook" in self.sinks and self.webhook is not None:
            try:
                self.webhook.deliver(note)
                told.append("webhook")
            except WebhookError as exc:
                failing = datetime.now(UTC) - info.scheduled_time.astimezone(UTC)
                within = failing.total_seconds() < self.outage_budget_seconds
                if not exc.permanent and (info.attempt < inp.webhook_attempts or within):
                    raise  # Temporal retries the activity; log and feed are idempotent
                log.warning(
                    "notify: giving up on the webhook after %d attempt(s): %s", info.attempt, exc
                )
                failed["webhook"] = str(exc)
        payload: dict[str, JsonValue] = {
            "sinks": list(told),
            "result_digest": inp.result_digest,
        }
        if failed:
            payload["failed"] = dict(failed)
        if until is not None:
            payload["review_id"] = note.review_id
            payload["review_until"] = note.body()["review_until"]
        self.ledger.append(
            ref.event(
                "notify",
                action=inp.action,
                resource=inp.resource,
                decision=decision,
                actor="notify",
                outcome="partial" if failed else "sent",
                payload=payload,
            )
        )
        return NotifyResult(sinks=told, failed=failed, window_seconds=window, review_until=until)

    @activity.defn(name="open_review")
    def open_review(self, window: ReviewWindow) -> None:
        self.feed.open_review(window)

    @activity.defn(name="record_review")
    def record_review(self, inp: RecordReviewInput) -> None:
        """Record a review window's event in the ledger, then update its index row."""
        self.ledger.append(
            review_event(
                inp.window,
                inp.kind,
                inp.actor,
                {
                    "reviewer": inp.flag.reviewer if inp.flag else "",
                    "reason": inp.flag.reason if inp.flag else "",
                    **inp.payload,
                },
            ),
            inp.content,
        )
        self.feed.close_review(
            inp.window.review_id,
            inp.status,
            flagged_by=inp.flag.reviewer if inp.flag else "",
            reason=inp.flag.reason if inp.flag else "",
        )


def review_event(
    window: ReviewWindow,
    kind: str,
    actor: str,
    payload: dict[str, JsonValue],
    key_suffix: str = "",
) -> LedgerEvent:
    """A ledger event about a review window (flagged, refused, closed, compensation.*).

    Recorded under the reviewed step of the parent workflow, so its timeline shows it.
    """
    w = window
    return LedgerEvent(
        idempotency_key=f"{w.workflow_id}:{w.run_id}:{w.step}:{kind}{key_suffix}",
        kind=kind,
        workflow_id=w.workflow_id,
        run_id=w.run_id,
        step=w.step,
        agent=w.agent,
        action=w.action,
        resource=w.resource,
        tier="notify",
        rule=w.rule,
        policy_version=w.policy_version,
        actor=actor,
        outcome=kind.split(".", 1)[1],
        payload={"review_id": w.review_id, **payload},
    )
