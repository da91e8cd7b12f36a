"""Slack's Web API for approval messages: `chat.postMessage` with a bot token.

Slack answers HTTP 200 for most failures, with `{"ok": false, "error": "..."}` in the body;
this module reads that answer and says what went wrong in words. `post_message` raises
`SlackError`, `permanent` when sending again cannot help (a bad token, a channel the bot
cannot post to, a missing scope) and transient otherwise (rate limits, Slack's own
trouble, an unreachable API), so the message activity retries only what may pass later.
The token is sent only in the `Authorization` header and never appears in an error.
"""

from __future__ import annotations

import httpx
from pydantic import JsonValue

FIXES = {
    "invalid_auth": "approval_slack_token is not a valid bot token; set the app's xoxb- token",
    "not_authed": "no token reached Slack; set approval_slack_token",
    "token_revoked": "approval_slack_token was revoked; install the app again",
    "account_inactive": "the bot's account is deactivated; install the app again",
    "missing_scope": "the Slack app lacks the chat:write scope; add it and reinstall",
    "channel_not_found": "no such channel for this bot; fix approval_slack_channels",
    "not_in_channel": "the bot is not in the channel; invite it (/invite @app)",
    "is_archived": "the channel is archived; name another in approval_slack_channels",
    "restricted_action": "the workspace does not let the bot post there",
}
"""Slack errors sending again cannot fix, with what to do about each."""

TRANSIENT = ("ratelimited", "internal_error", "fatal_error", "service_unavailable")
"""Slack errors that may pass on a later attempt."""


class SlackError(Exception):
    def __init__(self, message: str, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


def post_message(
    api_url: str, token: str, channel: str, text: str, *, timeout: float = 10.0
) -> str:
    """Post `text` (Slack mrkdwn) to `channel`; the message's `ts`. SlackError on failure."""
    url = f"{api_url.rstrip('/')}/chat.postMessage"
    body: dict[str, JsonValue] = {"channel": channel, "text": text, "unfurl_links": False}
    where = f"Slack chat.postMessage to channel {channel!r}"
    try:
        with httpx.Client(timeout=timeout) as http:
            answer = http.post(
                url,
                json=body,
                headers={
                    "Authorization": f"Bearer {token}",
                    "Content-Type": "application/json; charset=utf-8",
                },
            )
    except httpx.HTTPError as exc:
        host = httpx.URL(url).host
        raise SlackError(f"{where}: the API at {host!r} is unreachable: {exc!r}") from None
    if answer.status_code == 429:
        wait = answer.headers.get("Retry-After", "?")
        raise SlackError(f"{where}: rate limited (Retry-After {wait} s); retrying")
    if answer.status_code >= 300:
        raise SlackError(
            f"{where}: HTTP {answer.status_code}: {answer.text[:200]!r}",
            permanent=400 <= answer.status_code < 500 and answer.status_code != 408,
        )
    try:
        data = answer.json()
    except ValueError:
        raise SlackError(f"{where}: the answer is not JSON: {answer.text[:200]!r}") from None
    if not isinstance(data, dict):
        raise SlackError(f"{where}: the answer is not a JSON object: {answer.text[:200]!r}")
    if data.get("ok") is True:
        return str(data.get("ts", ""))
    error = str(data.get("error") or "no error given")
    if error in TRANSIENT:
        raise SlackError(f"{where}: Slack answered ok:false, {error!r}; retrying")
    fix = FIXES.get(error, "see Slack's documentation of chat.postMessage errors")
    raise SlackError(f"{where}: Slack answered ok:false, {error!r}: {fix}", permanent=True)


__all__ = ["SlackError", "post_message"]
