"""Console sessions held on the server, sign-in throttling, the decoy check for unknown
people, Secure cookies by default, and a password never taken from the command line.

Each test serves the console over real HTTP (uvicorn) on its own database.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal

import httpx
import pytest
from pydantic import SecretStr
from typer.testing import CliRunner

from tests.console_helpers import console_settings, csrf_of, password, serve, sign_in
from tether.console import hash_password
from tether.console.auth import COOKIE
from tether.core.config import Settings


def _client(url: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=url, follow_redirects=False, timeout=60)


async def _try(http: httpx.AsyncClient, person: str, secret: str) -> httpx.Response:
    page = await http.get("/login")
    return await http.post(
        "/login", data={"csrf": csrf_of(page.text), "person": person, "password": secret}
    )


@pytest.fixture
def fixed(settings: Settings, tmp_path: Path) -> Settings:
    """Console settings whose session secret outlives one server (as in production)."""
    return console_settings(settings, tmp_path).model_copy(
        update={"console_session_secret": SecretStr(secrets.token_hex(32))}
    )


async def test_a_signed_out_cookie_opens_nothing(fixed: Settings) -> None:
    with serve(fixed) as url:
        async with _client(url) as http:
            csrf = await sign_in(http, "user:alice")
            kept = http.cookies[COOKIE]
            out = await http.post("/logout", data={"csrf": csrf})
            assert out.status_code == 303
            # The cookie was signed by this server and has not expired: only the
            # server-side row says it is closed.
            http.cookies.set(COOKIE, kept)
            again = await http.get("/inbox")
            assert again.status_code == 303 and again.headers["location"].startswith("/login")


async def test_a_changed_password_closes_the_sessions_opened_with_the_old_one(
    fixed: Settings,
) -> None:
    with serve(fixed) as url:
        async with _client(url) as http:
            await sign_in(http, "user:alice")
            kept = http.cookies[COOKIE]
    # The same configuration served again: the session is still open.
    with serve(fixed) as url:
        async with _client(url) as http:
            http.cookies.set(COOKIE, kept)
            assert (await http.get("/inbox")).status_code == 200
    users = dict(fixed.console_users)
    users["user:alice"] = hash_password("a-new-password-for-alice")
    changed = fixed.model_copy(update={"console_users": users})
    with serve(changed) as url:
        async with _client(url) as http:
            http.cookies.set(COOKIE, kept)
            answer = await http.get("/inbox")
            assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
            # The new password opens a new session.
            signed = await _try(http, "user:alice", "a-new-password-for-alice")
            assert signed.status_code == 303
            assert (await http.get("/inbox")).status_code == 200


async def test_failed_sign_ins_lock_the_account_then_the_address(fixed: Settings) -> None:
    settings = fixed.model_copy(
        update={"console_login_attempts": 3, "console_login_address_attempts": 5}
    )
    with serve(settings) as url:
        async with _client(url) as http:
            for _ in range(3):
                assert (await _try(http, "user:alice", "wrong")).status_code == 401
            locked = await _try(http, "user:alice", password("user:alice"))
            # Locked: even the right password is not checked now.
            assert locked.status_code == 429
            assert "Too many failed sign-ins" in locked.text and "minutes" in locked.text
            assert (await http.get("/inbox")).status_code == 303  # still signed out
            # Another account from this address still signs in (2 of 5 left)...
            assert (await _try(http, "user:bob", password("user:bob"))).status_code == 303
            http.cookies.clear()
            # ...until the address's own limit: unknown accounts count too.
            assert (await _try(http, "user:nobody", "x")).status_code == 401
            assert (await _try(http, "user:nobody-else", "x")).status_code == 401
            blocked = await _try(http, "user:carol", password("user:carol"))
            assert blocked.status_code == 429


async def test_an_unknown_person_costs_one_password_check_like_a_known_one(
    fixed: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    from argon2 import PasswordHasher

    from tether.console import auth

    checked: list[str] = []

    class Counting(PasswordHasher):
        def verify(self, hash: str | bytes, password: str | bytes) -> Literal[True]:
            checked.append(str(password))
            return super().verify(hash, password)

    monkeypatch.setattr(auth, "_hasher", Counting())
    with serve(fixed) as url:
        async with _client(url) as http:
            assert (await _try(http, "user:alice", "wrong-1")).status_code == 401
            assert (await _try(http, "user:nobody", "wrong-2")).status_code == 401
    # Both answers ran the same argon2 verification (the unknown one against a decoy),
    # so neither is faster.
    assert checked == ["wrong-1", "wrong-2"]


async def test_session_cookies_are_secure_unless_turned_off(
    settings: Settings, tmp_path: Path
) -> None:
    assert Settings().console_secure_cookies is True
    secure = console_settings(settings, tmp_path).model_copy(
        update={"console_secure_cookies": True}
    )
    with serve(secure) as url:
        async with _client(url) as http:
            page = await http.get("/login")
            assert "; secure" in page.headers["set-cookie"].lower()
            # A client that is no browser sends a Secure cookie back over https only, so
            # over plain http its sign-in form's token matches no session (browsers keep
            # it for http://127.0.0.1: the browser tests sign in so).
            answer = await http.post(
                "/login",
                data={
                    "csrf": csrf_of(page.text),
                    "person": "user:alice",
                    "password": password("user:alice"),
                },
            )
            assert answer.status_code == 403


def test_hash_password_never_takes_the_password_as_an_argument() -> None:
    from tether.cli.main import app

    refused = CliRunner().invoke(app, ["console", "hash-password", "--password", "s3cret-enough"])
    assert refused.exit_code == 2 and "--password" in refused.output
    piped = CliRunner().invoke(app, ["console", "hash-password"], input="s3cret-enough\n")
    assert piped.exit_code == 0, piped.output
    from tether.console.auth import check_credential

    assert check_credential(piped.output.strip().splitlines()[-1], "s3cret-enough")


async def test_an_address_edited_by_hand_gets_a_page_not_json(fixed: Settings) -> None:
    with serve(fixed) as url:
        async with _client(url) as http:
            await sign_in(http, "user:olga")
            answer = await http.get("/overview", params={"days": "abc"})
            assert answer.status_code == 422
            assert answer.headers["content-type"].startswith("text/html")
            assert "days=&#39;abc&#39;" in answer.text and 'href="/inbox"' in answer.text
