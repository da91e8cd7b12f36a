"""Sealed payloads on real runs: the raw Temporal history of a confidential run holds no
prompt, argument or output in clear; replay, export and verify-bundle work on it; keys
rotate; the console's codec endpoint opens it for cleared people only."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from temporalio.api.common.v1 import Payload
from temporalio.api.failure.v1 import Failure
from temporalio.client import Client, WorkflowHistory
from temporalio.exceptions import ApplicationError

from tests.conftest import start_invoice
from tests.console_helpers import console_settings, serve_asgi, sign_in
from tether.console import create_app
from tether.console.auth import token_credential
from tether.core.config import Settings
from tether.core.sealing import load_key_ring, read_key_file
from tether.errors import CodecError
from tether.runtime.app import load_app
from tether.runtime.client import connect
from tether.runtime.codec import (
    CLAIM_CHECK,
    SEALED,
    SealingCodec,
    decode_history,
    map_history,
    payload_codec,
)
from tether.runtime.plugin import data_converter
from tether.runtime.replay import replay_history, replay_workflow
from tether.verification.checkpoint import load_or_create_key
from tether.verification.ledger import Ledger
from tether.worker import Runtime, build_worker

SECRET = "ZEPHYR-42-confidential-remark"
"""In the invoice text: the workflow's input and the model's prompt."""
PADDING = "lorem ipsum " * 800
"""Makes the input and the prompt larger than the claim-check threshold."""
MARKERS = (SECRET.encode(), b"acme-office", b"INV-1001")
"""The prompt; the model's output and the payment's arguments (vendor, invoice)."""
UI = "http://temporal-ui.test:8080"


def sealed(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(
        update={
            "payload_codec": True,
            "payload_key_file": tmp_path / "keys" / "payload.keys",
            "payload_claim_check_bytes": 4096,
        }
    )


def _raw_bytes(history: WorkflowHistory) -> bytes:
    return b"".join(e.SerializeToString() for e in history.events)


async def _payloads(history: WorkflowHistory) -> list[Payload]:
    seen: list[Payload] = []

    async def look(payload: Payload) -> Payload:
        seen.append(payload)
        return payload

    await map_history(history, look)
    return seen


async def _sealed_run(
    client: Client, settings: Settings, runtime: Runtime
) -> tuple[Client, str, WorkflowHistory]:
    """Pay INV-1001 (an auto-tier confidential extraction) with sealing on; the sealed
    client, the workflow id and its raw history fetched by `client`, which has no codec."""
    sealed_client = await connect(settings)
    async with build_worker(sealed_client, settings, runtime):
        handle = await start_invoice(
            sealed_client,
            settings,
            "INV-1001",
            text=f"Invoice INV-1001 from ACME. {SECRET} {PADDING}",
            prefix="sealed",
        )
        result = await handle.result()
    assert result.status == "paid" and result.vendor == "acme-office"
    raw = await client.get_workflow_handle(handle.id).fetch_history()
    return sealed_client, handle.id, raw


async def test_a_confidential_run_leaves_no_plaintext_in_history_and_replays(
    client: Client, settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    settings = sealed(settings, tmp_path)
    sealed_client, workflow_id, raw = await _sealed_run(client, settings, runtime)
    raw_bytes = _raw_bytes(raw)
    for marker in MARKERS:
        assert marker not in raw_bytes, f"{marker!r} is in the raw history in clear"
    encodings = [p.metadata.get("encoding", b"") for p in await _payloads(raw)]
    assert CLAIM_CHECK in encodings  # the padded input and prompt went to the store
    # In clear only what the SDK itself writes: patch markers (their search attribute)
    # and local activities' bookkeeping (type, attempt); their results are sealed.
    for event in raw.events:
        plain = [
            p
            for p in await _payloads(WorkflowHistory(raw.workflow_id, [event]))
            if p.metadata.get("encoding") not in (SEALED, CLAIM_CHECK)
        ]
        if plain:
            assert event.HasField("marker_recorded_event_attributes") or event.HasField(
                "upsert_workflow_search_attributes_event_attributes"
            ), event
            attrs = event.marker_recorded_event_attributes
            if "result" in attrs.details:
                assert attrs.details["result"].payloads[0].metadata["encoding"] == SEALED
    # The same history, decoded with the codec, holds them all (the search above can fail).
    codec = payload_codec(settings)
    decoded = _raw_bytes(await decode_history(raw, codec))
    for marker in MARKERS:
        assert marker in decoded
    # The claim-checked content is in the ledger's content store, sealed too.
    refs = [
        json.loads(p.data)["ref"]
        for p in await _payloads(raw)
        if p.metadata["encoding"] == CLAIM_CHECK
    ]
    for ref in refs:
        stored = Payload.FromString(base64.b64decode(str(runtime.ledger.blob(ref))))
        assert stored.metadata["encoding"] == SEALED
        assert SECRET.encode() not in stored.data

    # Replay with the codec (what `tether audit replay` does): reproduced, ledger matches.
    report = await replay_workflow(sealed_client, runtime.ledger, workflow_id, load_app(settings))
    assert report.ok, report
    assert report.facts_checked >= 3
    # Without it: a clear error, not a confusing replay failure.
    with pytest.raises(CodecError, match="is sealed"):
        await replay_history(raw, runtime.ledger, "")


def _cli_env(settings: Settings, tmp_path: Path, **more: str) -> dict[str, str]:
    return {
        **os.environ,
        "TETHER_DATABASE_URL": settings.database_url,
        "TETHER_TEMPORAL_ADDRESS": settings.temporal_address,
        "TETHER_TASK_QUEUE": settings.task_queue,
        "TETHER_CHECKPOINT_KEY": str(tmp_path / "keys" / "cp.pem"),
        "TETHER_PAYLOAD_CODEC": "true",
        "TETHER_PAYLOAD_KEY_FILE": str(settings.payload_key_file),
        "TETHER_PAYLOAD_CLAIM_CHECK_BYTES": "4096",
        "COLUMNS": "200",
        **more,
    }


async def _cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "tether.cli.main", "audit", *args]
    return await asyncio.to_thread(
        subprocess.run, argv, env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )


async def test_replay_export_and_verify_bundle_work_on_a_sealed_history(
    client: Client, settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    settings = sealed(settings, tmp_path)
    _, workflow_id, _ = await _sealed_run(client, settings, runtime)
    env = _cli_env(settings, tmp_path)
    replayed = await _cli(env, tmp_path, "replay", workflow_id)
    assert replayed.returncode == 0, replayed.stderr
    assert "reproduces" in replayed.stdout and "match the ledger" in replayed.stdout
    bundle = tmp_path / "evidence.json"
    exported = await _cli(env, tmp_path, "export", workflow_id, "-o", str(bundle))
    assert exported.returncode == 0, exported.stderr
    history = json.loads(bundle.read_text())["history"]
    # Self-contained (claim checks put back) and still sealed.
    assert base64.b64encode(CLAIM_CHECK).decode() not in history
    assert base64.b64encode(SEALED).decode() in history
    assert SECRET not in history and "acme-office" not in history
    # Offline: no database, no server; only the payload keys.
    offline = _cli_env(
        settings,
        tmp_path,
        TETHER_DATABASE_URL="sqlite:////nonexistent/x.db",
        TETHER_TEMPORAL_ADDRESS="127.0.0.1:1",
    )
    # The auditor pins the checkpoint key that signed the bundle (docs/auditing.md).
    pin = load_or_create_key(tmp_path / "keys" / "cp.pem").public_key().public_bytes_raw().hex()
    verified = await _cli(offline, tmp_path, "verify-bundle", str(bundle), "--trust-key", pin)
    assert verified.returncode == 0, verified.stderr
    assert "bundle intact" in verified.stdout and "reproduces" in verified.stdout
    # Without the keys: one line saying what to do.
    keyless = {**offline, "TETHER_PAYLOAD_CODEC": "false"}
    refused = await _cli(keyless, tmp_path, "verify-bundle", str(bundle), "--trust-key", pin)
    assert refused.returncode == 2
    assert "is sealed; turn payload_codec on" in refused.stderr


async def test_old_payloads_still_open_after_a_key_rotation(tmp_path: Path) -> None:
    key_file = tmp_path / "payload.keys"
    before = load_key_ring({}, key_file, create=True)  # the dev stack's first use
    assert before.current == "k1" and key_file.stat().st_mode & 0o777 == 0o600
    ledger = Ledger.from_url(f"sqlite:///{tmp_path / 'store.db'}")
    old = SealingCodec(before, ledger, claim_check_bytes=200)
    small = Payload(metadata={"encoding": b"json/plain"}, data=b'{"v":"old secret"}')
    large = Payload(metadata={"encoding": b"json/plain"}, data=b'"' + b"x" * 500 + b'"')
    sealed_old = await old.encode([small, large])
    assert sealed_old[0].metadata["tether-key-id"] == b"k1"
    assert sealed_old[1].metadata["encoding"] == CLAIM_CHECK

    with key_file.open("a") as out:
        out.write(f"k2 {os.urandom(32).hex()}\n")
    after = load_key_ring({}, key_file)
    assert after.current == "k2" and after.ids == ["k1", "k2"]
    new = SealingCodec(after, ledger, claim_check_bytes=200)
    sealed_new = await new.encode([small])
    assert sealed_new[0].metadata["tether-key-id"] == b"k2"
    assert await new.decode([*sealed_old, *sealed_new]) == [small, large, small]

    # A ring that lost k1 names the key id it lacks.
    only_new = {"k2": read_key_file(key_file)["k2"].hex()}
    lost = SealingCodec(load_key_ring(only_new, None), ledger)
    with pytest.raises(CodecError, match=r"key id 'k1', which is not a known key"):
        await lost.decode(sealed_old[:1])
    # An altered payload does not open.
    altered = Payload()
    altered.CopyFrom(sealed_old[0])
    altered.data = altered.data[:-1] + bytes([altered.data[-1] ^ 1])
    with pytest.raises(CodecError, match="does not open"):
        await new.decode([altered])


async def test_the_codec_endpoint_opens_history_for_cleared_people_only(
    client: Client, settings: Settings, runtime: Runtime, tmp_path: Path
) -> None:
    settings = console_settings(sealed(settings, tmp_path), tmp_path)
    token = "codec-token-of-alice-" + "x" * 20
    settings = settings.model_copy(
        update={
            "console_codec_origins": [UI],
            "console_users": {**settings.console_users, "user:dora": token_credential(token)},
        }
    )
    # dora signs in with a token and holds no role; give her alice's through the policy.
    policy = Path(str(settings.policy_path))
    policy.write_text(policy.read_text() + "g2, user:dora, role:ap-approver\n")
    runtime = Runtime.from_settings(settings)
    sealed_client, _, raw = await _sealed_run(client, settings, runtime)
    started = raw.events[0].workflow_execution_started_event_attributes
    body = {
        "payloads": [
            {
                "metadata": {k: base64.b64encode(v).decode() for k, v in p.metadata.items()},
                "data": base64.b64encode(p.data).decode(),
            }
            for p in started.input.payloads
        ]
    }
    with serve_asgi(create_app(settings, client=sealed_client), "console") as url:
        async with httpx.AsyncClient(base_url=url) as nobody:
            refused = await nobody.post("/codec/decode", json=body)
            assert refused.status_code == 401 and SECRET not in refused.text
            preflight = await nobody.options(
                "/codec/decode",
                headers={"Origin": UI, "Access-Control-Request-Method": "POST"},
            )
            assert preflight.status_code == 204
            assert preflight.headers["access-control-allow-origin"] == UI
            assert preflight.headers["access-control-allow-credentials"] == "true"
            elsewhere = await nobody.options(
                "/codec/decode",
                headers={"Origin": "https://evil.test", "Access-Control-Request-Method": "POST"},
            )
            assert elsewhere.status_code == 403
            assert "access-control-allow-origin" not in elsewhere.headers
        async with httpx.AsyncClient(base_url=url) as carol:
            await sign_in(carol, "user:carol")  # signed in, no cleared role
            forbidden = await carol.post("/codec/decode", json=body, headers={"Origin": UI})
            assert forbidden.status_code == 403 and "user:carol" in forbidden.text
            assert SECRET not in forbidden.text
        async with httpx.AsyncClient(base_url=url) as alice:
            await sign_in(alice, "user:alice")  # an approver: cleared for confidential
            opened = await alice.post("/codec/decode", json=body, headers={"Origin": UI})
            assert opened.status_code == 200, opened.text
            assert opened.headers["access-control-allow-origin"] == UI
            data = base64.b64decode(opened.json()["payloads"][0]["data"])
            assert SECRET.encode() in data and b"INV-1001" in data
            # A call carrying another origin is refused even with her cookie.
            other = await alice.post(
                "/codec/decode", json=body, headers={"Origin": "https://evil.test"}
            )
            assert other.status_code == 403
            # Encode, then decode again: the round trip the UI makes for a signal.
            plain = {"payloads": [{"metadata": {}, "data": base64.b64encode(b'"hi"').decode()}]}
            encoded = (await alice.post("/codec/encode", json=plain)).json()
            assert base64.b64decode(encoded["payloads"][0]["metadata"]["encoding"]) == SEALED
            again = (await alice.post("/codec/decode", json=encoded)).json()
            assert base64.b64decode(again["payloads"][0]["data"]) == b'"hi"'
        async with httpx.AsyncClient(base_url=url) as dora:
            bearer = {"Authorization": f"Bearer {token}"}
            by_token = await dora.post("/codec/decode", json=body, headers=bearer)
            assert by_token.status_code == 200, by_token.text
            wrong = await dora.post(
                "/codec/decode", json=body, headers={"Authorization": "Bearer not-a-token"}
            )
            assert wrong.status_code == 401
    runtime.ledger.engine.dispose()


async def test_failure_messages_are_sealed_and_open_again(tmp_path: Path) -> None:
    codec = SealingCodec(load_key_ring({}, tmp_path / "payload.keys", create=True))
    converter = data_converter(None, codec)
    failure = Failure()
    await converter.encode_failure(ApplicationError(f"cannot pay: {SECRET}"), failure)
    assert SECRET.encode() not in failure.SerializeToString()
    assert failure.message == "Encoded failure"
    opened = await converter.decode_failure(failure)
    assert SECRET in str(opened)


def test_bad_keys_are_named(tmp_path: Path) -> None:
    with pytest.raises(CodecError, match=r"payload key 'k1' is not hex"):
        load_key_ring({"k1": "zz"}, None)
    with pytest.raises(CodecError, match=r"payload key 'k1' has 16 bytes"):
        load_key_ring({"k1": "00" * 16}, None)
    twice = tmp_path / "twice.keys"
    twice.write_text(f"k1 {'00' * 32}\nk1 {'11' * 32}\n")
    with pytest.raises(CodecError, match=r"names key id 'k1' twice \(line 2\)"):
        load_key_ring({}, twice)
    with pytest.raises(CodecError, match=r"current payload key 'k9' is not among"):
        load_key_ring({"k1": "00" * 32}, None, "k9")
    with pytest.raises(CodecError, match=r"holds no key"):
        load_key_ring({}, tmp_path / "absent.keys")  # without create: never made up
