"""Native OIDC sign-in to the console: authorization code with PKCE against a provider the
test serves (tests/oidc_provider.py), over real HTTP on both sides."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from pydantic import SecretStr

from tests.console_helpers import console_settings, csrf_of, serve
from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, Provider, oidc_provider
from tether.console.auth import COOKIE
from tether.core.config import Settings


@pytest.fixture
def provider() -> Iterator[Provider]:
    with oidc_provider() as found:
        yield found


@pytest.fixture
def osettings(settings: Settings, tmp_path: Path, provider: Provider) -> Settings:
    return console_settings(settings, tmp_path).model_copy(
        update={
            "console_oidc_issuer": provider.issuer,
            "console_oidc_client_id": CLIENT_ID,
            "console_oidc_client_secret": SecretStr(CLIENT_SECRET),
            "console_oidc_claim": "preferred_username",
        }
    )


async def _to_provider(http: httpx.AsyncClient, next_page: str = "/inbox") -> httpx.URL:
    """Start sign-in at the console; the provider's authorization URL it sends us to."""
    start = await http.get("/login/oidc", params={"next": next_page})
    assert start.status_code == 303, start.text
    return httpx.URL(start.headers["location"])


async def test_sign_in_through_the_provider_with_pkce(
    osettings: Settings, provider: Provider
) -> None:
    with serve(osettings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            login = await http.get("/login")
            assert "Sign in with single sign-on" in login.text
            authorize = await _to_provider(http)
            asked = parse_qs(authorize.query.decode())
            assert asked["code_challenge_method"] == ["S256"] and asked["nonce"][0]
            assert "code_verifier" not in asked  # the verifier never leaves the console
            back = await http.get(authorize)  # the provider signs alice in at once
            assert back.status_code == 302
            done = await http.get(back.headers["location"])
            assert done.status_code == 303 and done.headers["location"] == "/inbox"
            inbox = await http.get("/inbox")
            assert inbox.status_code == 200 and "user:alice" in inbox.text
            # The token endpoint checked the verifier against the challenge.
            assert len(provider.verified) == 1
            # Signing out closes the session like a password session.
            kept = http.cookies[COOKIE]
            out = await http.post("/logout", data={"csrf": csrf_of(inbox.text)})
            assert out.status_code == 303
            http.cookies.set(COOKIE, kept)
            assert (await http.get("/inbox", follow_redirects=False)).status_code == 303


async def test_a_callback_of_another_sign_in_signs_nobody_in(
    osettings: Settings, provider: Provider
) -> None:
    with serve(osettings) as url:
        async with (
            httpx.AsyncClient(base_url=url, timeout=30) as victim,
            httpx.AsyncClient(base_url=url, timeout=30) as attacker,
        ):
            # The attacker starts a sign-in and hands their callback link to the victim
            # (login CSRF): the victim's browser holds no matching flow.
            back = await attacker.get(await _to_provider(attacker))
            planted = await victim.get(back.headers["location"])
            assert planted.status_code == 400 and "not started here" in planted.text
            assert (await victim.get("/inbox", follow_redirects=False)).status_code == 303
            # A callback whose state was changed is refused too.
            own = await victim.get(await _to_provider(victim))
            parts = urlsplit(own.headers["location"])
            forged = parts.path + "?" + parts.query.replace("state=", "state=x")
            refused = await victim.get(forged)
            assert refused.status_code == 400 and "another sign-in" in refused.text
            assert (await victim.get("/inbox", follow_redirects=False)).status_code == 303


async def test_a_refusal_or_a_bad_token_signs_nobody_in(
    osettings: Settings, provider: Provider
) -> None:
    with serve(osettings) as url:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            provider.refuse = True
            back = await http.get(await _to_provider(http))
            answer = await http.get(back.headers["location"])
            assert answer.status_code == 401 and "the person said no" in answer.text
            provider.refuse = False
            for tamper, said in (
                ({"aud": "another-app"}, "not accepted"),
                ({"nonce": "replayed"}, "not accepted"),
                ({"exp": 1000}, "not accepted"),
                ({"preferred_username": "agent:ap-clerk"}, "names nobody"),
            ):
                provider.tamper = tamper
                back = await http.get(await _to_provider(http))
                answer = await http.get(back.headers["location"])
                assert answer.status_code == 401 and said in answer.text, tamper
                assert (await http.get("/inbox", follow_redirects=False)).status_code == 303


def test_oidc_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="https issuer"):
        Settings(console_oidc_issuer="http://idp.example.com", console_oidc_client_id="c")
    with pytest.raises(ValueError, match="console_oidc_client_id"):
        Settings(console_oidc_issuer="https://idp.example.com")
    Settings(console_oidc_issuer="https://idp.example.com", console_oidc_client_id="c")
