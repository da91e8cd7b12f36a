"""Helpers for the console tests: a real uvicorn server on a free loopback port, people
with real argon2 passwords, a policy and a model script, and the PayInvoice runs to decide.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from ap.workflows import InvoiceResult
from temporalio.client import Client, WorkflowHandle

from tests.conftest import EXAMPLE, free_port, pending_status, start_invoice
from tether.console import create_app, hash_password
from tether.core.config import Settings
from tether.governance.approvals import PendingApproval
from tether.verification.checkpoint import load_or_create_key
from tether.worker import Runtime

PEOPLE = ("user:alice", "user:bob", "user:carol", "user:olga")
"""alice and bob approve payments, olga runs operations (kill switch) and is the controller
(payments above 100k), carol holds no role."""


def password(person: str) -> str:
    return f"pw-{person.split(':')[1]}-correct-horse"


_HASHES: dict[str, str] = {}


def users() -> dict[str, str]:
    if not _HASHES:  # argon2 is slow on purpose: hash once per session
        _HASHES.update({p: hash_password(password(p)) for p in PEOPLE})
    return dict(_HASHES)


XSS = "<script>document.title='pwned'</script>"


def console_settings(settings: Settings, tmp_path: Path) -> Settings:
    policy = tmp_path / "console-policy.csv"
    rows = (EXAMPLE / "policy.csv").read_text()
    large = "p, role:ap-agent, vendor/:name, payments.pay, r.ctx.amount > 10000,"
    # Above 100k a controller decides (listed first: of equal tiers the first rule wins),
    # so an approver's edit that raises an amount past it is decided anew by a controller.
    huge = (
        "p, role:ap-agent, vendor/:name, payments.pay, r.ctx.amount > 100000, approve, "
        "ap-pay-huge, role:controller, 24h\n"
    )
    assert large in rows
    rows = rows.replace(large, huge + large, 1)
    policy.write_text(rows + "\ng2, user:olga, role:ops\ng2, user:olga, role:controller\n")
    script = json.loads((Path(str(settings.model_script))).read_text())
    script["entries"].append(
        {
            "task": "extract",
            "match": "INV-XSS",
            "output": {"invoice_id": XSS, "vendor": "globex", "amount": 30000.0},
        }
    )
    script_path = tmp_path / "console-script.json"
    script_path.write_text(json.dumps(script))
    key = load_or_create_key(tmp_path / "keys" / "checkpoint.pem")
    return settings.model_copy(
        update={
            "policy_path": policy,
            "model_script": script_path,
            "console_users": users(),
            # httpx (like any client but a browser) keeps a Secure cookie only for https;
            # the browser tests turn this back on (browsers keep it for http://127.0.0.1).
            "console_secure_cookies": False,
            "console_kill_roles": ["role:ops"],
            # Approvers read the confidential invoice the model extracted; others do not.
            "console_content_roles": {"confidential": ["role:ap-approver"]},
            "console_checkpoint_dir": tmp_path / "checkpoints",
            "checkpoint_key": tmp_path / "keys" / "checkpoint.pem",
            # The auditor pins the console's checkpoint key (as a deployment would).
            "audit_trusted_keys": [key.public_key().public_bytes_raw().hex()],
        }
    )


@contextmanager
def serve_asgi(app: Any, what: str, port: int | None = None) -> Iterator[str]:
    """Serve an ASGI app with uvicorn (own thread and loop) on a local port; yield its base
    URL. `what` names it in the error when it does not start."""
    port = port or free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"the {what} did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """Run the console over real HTTP; yield its base URL."""
    with serve_asgi(create_app(settings), "console server") as url:
        yield url


async def awaiting_approval(
    client: Client, settings: Settings, runtime: Runtime, invoice: str, started_by: str
) -> tuple[WorkflowHandle[Any, InvoiceResult], PendingApproval]:
    """Start PayInvoice for `invoice` and wait until its approval request is in the store
    (what the inbox reads); the run's handle and that request."""
    handle = await start_invoice(
        client, settings, invoice, started_by=started_by, prefix=f"console-{invoice.lower()}"
    )
    pending = (await pending_status(handle)).pending
    assert pending is not None
    return handle, await stored(runtime, pending)


async def stored(runtime: Runtime, pending: PendingApproval) -> PendingApproval:
    """`pending` as the approvals store holds it, once it does (what the inbox reads)."""
    for _ in range(200):
        found = [p for p in runtime.approvals.list() if p.request_id == pending.request_id]
        if found:
            return found[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"request {pending.request_id} never reached the approvals store")


CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "the page has no CSRF field"
    return found.group(1)


async def sign_in(http: httpx.AsyncClient, person: str) -> str:
    """Sign `person` in on `http` (cookies kept); return a CSRF token of their session."""
    page = await http.get("/login")
    answer = await http.post(
        "/login",
        data={
            "csrf": csrf_of(page.text),
            "person": person,
            "password": password(person),
            "next": "/inbox",
        },
    )
    assert answer.status_code == 303, answer.text
    inbox = await http.get("/inbox")
    assert inbox.status_code == 200
    return csrf_of(inbox.text)
