"""`tether dev` starts the console beside the worker, and `tether console` refuses a bad
configuration with one clear line."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx

from tests.conftest import free_port
from tests.console_helpers import csrf_of, password, users
from tests.test_dev import _dev
from tether.cli.dev import port_busy


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "TETHER_STATE_DIR": str(tmp_path / "state"),
        "TETHER_DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}",
        "TETHER_APPROVAL_KEY": str(tmp_path / "keys" / "approval.pem"),
        "TETHER_CONSOLE_USERS": json.dumps({"user:alice": users()["user:alice"]}),
        "COLUMNS": "200",
        **extra,
    }


def _console(tmp_path: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    """`tether console` on a free port with `extra` variables, run to its exit."""
    return subprocess.run(
        [sys.executable, "-m", "tether.cli.main", "console"],
        env=_env(tmp_path, TETHER_CONSOLE_PORT=str(free_port()), **extra),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_dev_serves_the_console_beside_the_worker(tmp_path: Path) -> None:
    port, ui_port, console_port = free_port(), free_port(), free_port()
    proc = _dev(
        tmp_path,
        port,
        ui_port,
        f"dev-{uuid.uuid4().hex[:8]}",
        TETHER_APPROVAL_KEY=str(tmp_path / "keys" / "approval.pem"),
        TETHER_CONSOLE_USERS=json.dumps({"user:alice": users()["user:alice"]}),
        TETHER_CONSOLE_PORT=str(console_port),
        TETHER_CONSOLE_SECURE_COOKIES="false",  # httpx sends Secure cookies only over https
    )
    assert proc.stdout is not None
    seen: list[str] = []
    try:
        while line := proc.stdout.readline():
            seen.append(line)
            if line.startswith("ready"):
                break
        output = "".join(seen)
        assert f"http://127.0.0.1:{console_port}" in output, output
        base = f"http://127.0.0.1:{console_port}"
        deadline = time.monotonic() + 60
        with httpx.Client(base_url=base, timeout=10) as http:
            while True:
                try:
                    page = http.get("/login")
                    break
                except httpx.TransportError:
                    assert time.monotonic() < deadline, "the console never answered"
                    time.sleep(0.2)
            signed = http.post(
                "/login",
                data={
                    "csrf": csrf_of(page.text),
                    "person": "user:alice",
                    "password": password("user:alice"),
                },
            )
            assert signed.status_code == 303
            inbox = http.get("/inbox")
            assert inbox.status_code == 200 and "Nothing waits for you." in inbox.text
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        proc.stdout.close()
    assert code == 0
    assert not port_busy(console_port)


def test_console_command_names_a_bad_setting(tmp_path: Path) -> None:
    done = _console(tmp_path, TETHER_CONSOLE_USERS=json.dumps({"user:alice": "hunter2"}))
    assert done.returncode == 2
    assert "console_users" in done.stderr and "hash-password" in done.stderr
    done = _console(
        tmp_path,
        TETHER_CONSOLE_PROXY_HEADER="X-Forwarded-User",
        TETHER_CONSOLE_TRUSTED_PROXIES='["not-an-address"]',
    )
    assert done.returncode == 2 and "'not-an-address'" in done.stderr
