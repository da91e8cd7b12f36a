"""Approval messages: an opened approval request goes out where the approvers are.

Channels (settings): e-mail over SMTP to each person of the request's approver role who
has an address (`approval_email_addresses`), Slack incoming webhooks per approver role
(`approval_slack_webhooks`), Slack's Web API (`chat.postMessage`, `activities.slack`) to a
channel per approver role (every approver's link) or person (their own link only;
`approval_slack_channels`, `approval_slack_token`), and signed JSON webhooks per role
(`approval_webhooks`, HMAC-SHA256 headers like the notify webhook's). Every message
carries, per person, a signed one-time link `<console_public_url>/r/<token>`
(`governance.links`) bound to the request and that person and expiring with the
request's deadline: it opens the request page after sign-in and never decides by itself.

Contract: `send_approval_messages` is a regular activity the workflow starts beside the
approval wait (and cancels once the request is decided). Idempotent by request id and
delivery: each delivery, once done, is an `approval.notified` ledger event (outcome
`sent`), and a retried attempt skips the deliveries the ledger already holds. A failing
channel raises, so Temporal retries the activity with backoff, for as long as
`approval_message_budget_seconds` lasts (from the first attempt) and at least
`ApprovalMessageInput.attempts` attempts, unless the failure is permanent (a 4xx answer,
an address the SMTP server refuses); then the delivery is recorded with outcome `failed`
and its error, and the activity returns: no channel ever fails the run. A crash between
a send and its ledger event may send that one message twice (at least once).
"""

from __future__ import annotations

import hashlib
import json
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage

import httpx
from pydantic import BaseModel, Field, JsonValue
from temporalio import activity

from tether.activities.governance import approval_event, approval_key
from tether.activities.notify import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    sign_webhook,
)
from tether.activities.slack import SlackError, post_message
from tether.core.config import Settings
from tether.governance.approvals import AGENT_PREFIX, PendingApproval
from tether.governance.links import issue_link, link_url
from tether.verification.ledger import Ledger

DEFAULT_LINK_LIFETIME = timedelta(hours=24)
"""A request without a deadline: how long its links open it."""


class ApprovalMessageInput(BaseModel):
    pending: PendingApproval
    attempts: int = 5
    """At least this many attempts before a failing channel is given up on."""


class ApprovalMessageResult(BaseModel):
    sent: list[str] = Field(default_factory=list)
    """Deliveries made (this attempt or an earlier one), e.g. 'email:user:alice'."""
    failed: dict[str, str] = Field(default_factory=dict)
    """Deliveries given up on, with the last error."""


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int = 587
    security: str = "starttls"
    username: str = ""
    password: str = ""
    sender: str = "tether@localhost"
    timeout: float = 10.0


@dataclass(frozen=True)
class Delivery:
    name: str
    """Stable within a request: 'email:<person>', 'slack:<role>', 'webhook:<role>',
    'slack-api:<role or person>'."""
    recipient: str
    send: Callable[[], None]


class MessageError(Exception):
    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class MessageActivities:
    """Approval message channels, built once in `worker.py` from settings."""

    def __init__(
        self,
        ledger: Ledger,
        *,
        public_url: str,
        link_secret: str,
        emails: dict[str, str] | None = None,
        smtp: SmtpConfig | None = None,
        slack: dict[str, str] | None = None,
        webhooks: dict[str, str] | None = None,
        webhook_secret: str = "",
        slack_channels: dict[str, str] | None = None,
        slack_token: str = "",
        slack_api: str = "https://slack.com/api",
        budget_seconds: float = 3600.0,
        timeout: float = 10.0,
    ) -> None:
        self.ledger = ledger
        self.public_url = public_url
        self.link_secret = link_secret
        self.emails = dict(emails or {})
        self.smtp = smtp
        self.slack = dict(slack or {})
        self.webhooks = dict(webhooks or {})
        self.webhook_secret = webhook_secret
        self.slack_channels = dict(slack_channels or {}) if slack_token else {}
        self.slack_token = slack_token
        self.slack_api = slack_api
        self.budget_seconds = budget_seconds
        self.timeout = timeout

    @classmethod
    def from_settings(cls, settings: Settings, ledger: Ledger) -> MessageActivities:
        s = settings
        smtp = None
        if s.smtp_host:
            smtp = SmtpConfig(
                s.smtp_host,
                s.smtp_port,
                s.smtp_security,
                s.smtp_username,
                s.smtp_password.get_secret_value(),
                s.smtp_from,
            )
        return cls(
            ledger,
            public_url=s.console_public_url,
            link_secret=s.approval_link_secret.get_secret_value(),
            emails=s.approval_email_addresses,
            smtp=smtp,
            slack={role: url.get_secret_value() for role, url in s.approval_slack_webhooks.items()},
            webhooks=s.approval_webhooks,
            webhook_secret=s.approval_webhook_secret.get_secret_value(),
            slack_channels=s.approval_slack_channels,
            slack_token=s.approval_slack_token.get_secret_value(),
            slack_api=s.approval_slack_api_url,
            budget_seconds=s.approval_message_budget_seconds,
        )

    @property
    def configured(self) -> bool:
        """Whether any channel is set (else the workflow starts no message activity)."""
        channels = self.emails or self.slack or self.webhooks or self.slack_channels
        return bool(self.link_secret and channels)

    @activity.defn(name="send_approval_messages")
    def send_approval_messages(self, inp: ApprovalMessageInput) -> ApprovalMessageResult:
        info = activity.info()
        pending = inp.pending
        result = ApprovalMessageResult()
        transient: list[tuple[Delivery, MessageError]] = []
        for delivery in self.deliveries(pending):
            key = _key(pending, delivery.name)
            if self.ledger.get(key) is not None:  # done by an earlier attempt
                result.sent.append(delivery.name)
                continue
            try:
                delivery.send()
            except MessageError as exc:
                if exc.permanent:
                    self._record(pending, delivery, str(exc))
                    result.failed[delivery.name] = str(exc)
                else:
                    transient.append((delivery, exc))
                continue
            self._record(pending, delivery, "")
            result.sent.append(delivery.name)
        if transient:
            first = info.scheduled_time.astimezone(UTC)
            within = (datetime.now(UTC) - first).total_seconds() < self.budget_seconds
            if info.attempt < inp.attempts or within:
                names = ", ".join(d.name for d, _ in transient)
                raise MessageError(
                    f"approval messages not delivered yet ({names}): {transient[0][1]}"
                )
            for delivery, error in transient:
                activity.logger.warning(
                    "giving up on approval message %s after %d attempt(s): %s",
                    delivery.name,
                    info.attempt,
                    error,
                )
                self._record(pending, delivery, str(error))
                result.failed[delivery.name] = str(error)
        return result

    # -- what goes out ---------------------------------------------------------------------

    def deliveries(self, pending: PendingApproval) -> list[Delivery]:
        """The messages `pending` sends, in a stable order."""
        people = eligible(pending)
        out: list[Delivery] = []
        if self.smtp is not None:
            for person in people:
                address = self.emails.get(person)
                if address:
                    out.append(
                        Delivery(
                            f"email:{person}",
                            address,
                            _bind(self._email, pending, person, address),
                        )
                    )
        role = pending.approver_role
        if role in self.slack and people:
            out.append(Delivery(f"slack:{role}", role, _bind(self._slack, pending, people)))
        for route in [role, *people] if people else []:
            if channel := self.slack_channels.get(route):
                who = people if route == role else [route]
                send = _bind(self._slack_api, pending, who, channel)
                out.append(Delivery(f"slack-api:{route}", channel, send))
        if role in self.webhooks and people:
            out.append(Delivery(f"webhook:{role}", role, _bind(self._webhook, pending, people)))
        return out

    def links(self, pending: PendingApproval, people: list[str]) -> dict[str, str]:
        """A fresh one-time link per person."""
        expires = pending.deadline or datetime.now(UTC) + DEFAULT_LINK_LIFETIME
        return {
            p: link_url(
                self.public_url, issue_link(self.link_secret, pending.request_id, p, expires)
            )
            for p in people
        }

    def _email(self, pending: PendingApproval, person: str, address: str) -> None:
        smtp = self.smtp
        assert smtp is not None  # deliveries() made no e-mail without it
        url = self.links(pending, [person])[person]
        message = EmailMessage()
        message["Subject"] = f"Approval needed: {headline(pending)}"
        message["From"] = smtp.sender
        message["To"] = address
        message["X-Tether-Request"] = pending.request_id
        message.set_content(
            f"{describe(pending)}\n\nOpen the request (sign-in required; the link works "
            f"once and only for {person}):\n{url}\n"
        )
        try:
            if smtp.security == "tls":
                server: smtplib.SMTP = smtplib.SMTP_SSL(
                    smtp.host, smtp.port, timeout=smtp.timeout, context=ssl.create_default_context()
                )
            else:
                server = smtplib.SMTP(smtp.host, smtp.port, timeout=smtp.timeout)
            with server:
                if smtp.security == "starttls":
                    server.starttls(context=ssl.create_default_context())
                if smtp.username:
                    server.login(smtp.username, smtp.password)
                server.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            raise MessageError(f"SMTP refused {address!r}: {exc.recipients}", True) from None
        except smtplib.SMTPResponseException as exc:
            raise MessageError(
                f"SMTP {smtp.host}:{smtp.port} answered {exc.smtp_code}: {exc.smtp_error!r}",
                permanent=500 <= exc.smtp_code < 600,
            ) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise MessageError(f"SMTP {smtp.host}:{smtp.port} unreachable: {exc!r}") from None

    def _slack_text(self, pending: PendingApproval, people: list[str]) -> str:
        links = self.links(pending, people)
        opens = "  ".join(f"<{url}|Open as {p.split(':', 1)[-1]}>" for p, url in links.items())
        return f"*Approval needed:* {headline(pending)}\n{describe(pending)}\n{opens}"

    def _slack(self, pending: PendingApproval, people: list[str]) -> None:
        text = self._slack_text(pending, people)
        self._post(self.slack[pending.approver_role], {"text": text}, {}, "Slack webhook")

    def _slack_api(self, pending: PendingApproval, people: list[str], channel: str) -> None:
        text = self._slack_text(pending, people)
        try:
            post_message(self.slack_api, self.slack_token, channel, text, timeout=self.timeout)
        except SlackError as exc:
            raise MessageError(str(exc), exc.permanent) from None

    def _webhook(self, pending: PendingApproval, people: list[str]) -> None:
        body: dict[str, JsonValue] = {
            "kind": "approval.requested",
            "request_id": pending.request_id,
            "workflow_id": pending.workflow_id,
            "run_id": pending.run_id,
            "step": pending.step,
            "agent": pending.agent,
            "action": pending.action,
            "resource": pending.resource,
            "args_summary": pending.args_summary,
            "reason": pending.reason,
            "rule": pending.rule,
            "approver_role": pending.approver_role,
            "requested_by": pending.requested_by,
            "deadline": pending.deadline.isoformat() if pending.deadline else None,
            "links": dict(self.links(pending, people)),
        }
        raw = json.dumps(body, sort_keys=True, separators=(",", ":")).encode()
        stamp = str(int(time.time()))
        headers = {
            TIMESTAMP_HEADER: stamp,
            SIGNATURE_HEADER: sign_webhook(self.webhook_secret, stamp, raw),
            DELIVERY_HEADER: _key(pending, f"webhook:{pending.approver_role}"),
        }
        self._post(self.webhooks[pending.approver_role], raw, headers, "approval webhook")

    def _post(
        self, url: str, body: bytes | dict[str, JsonValue], headers: dict[str, str], what: str
    ) -> None:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            with httpx.Client(timeout=self.timeout) as http:
                answer = http.post(
                    url, content=content, headers={"Content-Type": "application/json", **headers}
                )
        except httpx.HTTPError as exc:
            # The URL may hold a secret (Slack's does): name the host only.
            raise MessageError(f"{what} at {httpx.URL(url).host!r} unreachable: {exc!r}") from None
        code = answer.status_code
        if code >= 300:
            raise MessageError(
                f"{what} at {httpx.URL(url).host!r} answered {code}: {answer.text[:200]!r}",
                permanent=400 <= code < 500 and code not in (408, 429),
            )

    def _record(self, pending: PendingApproval, delivery: Delivery, error: str) -> None:
        channel = delivery.name.split(":", 1)[0]
        payload: dict[str, JsonValue] = {
            "channel": channel,
            "delivery": delivery.name,
            "recipient": delivery.recipient,
            "approver_role": pending.approver_role,
        }
        if error:
            payload["error"] = error
        self.ledger.append(
            approval_event(
                pending,
                "approval.notified",
                "failed" if error else "sent",
                "messages",
                payload,
                key_suffix=_suffix(delivery.name),
            )
        )


def eligible(pending: PendingApproval) -> list[str]:
    """The people a request's links are for: its role's members who may decide it."""
    barred = {pending.requested_by, pending.agent}
    return [p for p in pending.approvers if p not in barred and not p.startswith(AGENT_PREFIX)]


def headline(pending: PendingApproval) -> str:
    """The tool's title ("Pay $25,000.00 to globex for INV-1003"), else action on resource."""
    return pending.headline


def describe(pending: PendingApproval) -> str:
    deadline = f"{pending.deadline:%Y-%m-%d %H:%M} UTC" if pending.deadline else "none"
    return (
        f"{pending.agent} asks to run {pending.action} on {pending.resource} "
        f"({pending.args_summary}).\nWhy it needs approval: {pending.reason} "
        f"(rule {pending.rule}). Requested by {pending.requested_by or 'nobody'}; approver "
        f"role {pending.approver_role}; deadline {deadline}. Request {pending.request_id}."
    )


def _suffix(name: str) -> str:
    return "." + hashlib.sha256(name.encode()).hexdigest()[:16]


def _key(pending: PendingApproval, name: str) -> str:
    """The ledger key of one delivery of `pending` (its `approval.notified` event)."""
    return approval_key(pending, "approval.notified") + _suffix(name)


def _bind(fn: Callable[..., None], *args: object) -> Callable[[], None]:
    return lambda: fn(*args)


__all__ = ["ApprovalMessageInput", "ApprovalMessageResult", "MessageActivities"]
