"""`tether dev`: the local stack — Temporal dev server (state on disk), a worker, the console.

The dev server keeps its state in `<state_dir>/temporal.db`, so workflows survive a
restart of the stack. Ctrl-C (SIGINT) or SIGTERM stops every process. A busy port is
reported before anything starts.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich.console import Console

from tether.cli.common import emit_table, red
from tether.core.binaries import temporal_cli
from tether.core.config import Settings
from tether.core.db import shown_url
from tether.errors import DevError


def port_busy(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


def _wait_listening(port: int, proc: subprocess.Popen[bytes], log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = log.read_text(errors="replace")[-800:]
            raise DevError(f"the Temporal dev server exited with {proc.returncode}: {tail}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise DevError(f"the Temporal dev server did not listen on port {port} within {seconds:.0f}s")


def _stop(procs: list[subprocess.Popen[bytes]], grace: float = 15.0) -> None:
    """Stop the processes last-started first, so the worker drains while Temporal still
    runs; each gets `grace` seconds (plus a little) before it is killed.

    SIGINT and SIGTERM are ignored meanwhile (and stay ignored: the stack is going down):
    a second Ctrl-C while the worker drains would otherwise end this process half-way
    and leave the rest running."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=grace + 5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def run_dev(settings: Settings, console: Console, app_args: Sequence[str] = ()) -> int:
    """`app_args` (e.g. `--app REF`) go to the worker and console the stack starts."""
    for port, what, var in (
        (settings.dev_port, "Temporal gRPC", "TETHER_DEV_PORT"),
        (settings.dev_ui_port, "Temporal UI", "TETHER_DEV_UI_PORT"),
        (settings.console_port, "console", "TETHER_CONSOLE_PORT"),
    ):
        if port_busy(port, settings.console_host if what == "console" else "127.0.0.1"):
            raise DevError(
                f"port {port} ({what}) is already in use; stop what holds it or choose "
                f"another port with {var}"
            )
    state = settings.state_dir
    state.mkdir(parents=True, exist_ok=True)
    server_log, worker_log = state / "temporal.log", state / "worker.log"
    console_log = state / "console.log"
    address = f"127.0.0.1:{settings.dev_port}"
    procs: list[subprocess.Popen[bytes]] = []

    def _terminate(_sig: int, _frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    # Started in the background by a script, a process inherits SIGINT ignored, and Python
    # then raises no KeyboardInterrupt: Ctrl-C (or kill -INT) must stop the stack anyway.
    signal.signal(signal.SIGINT, _terminate)
    try:
        with server_log.open("ab") as out:
            procs.append(
                subprocess.Popen(
                    [
                        temporal_cli(),
                        "server",
                        "start-dev",
                        "--db-filename",
                        str(state / "temporal.db"),
                        "--ip",
                        "127.0.0.1",
                        "--port",
                        str(settings.dev_port),
                        "--ui-port",
                        str(settings.dev_ui_port),
                        "--log-level",
                        "warn",
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        _wait_listening(settings.dev_port, procs[0], server_log, 60)
        env = {**os.environ, "TETHER_TEMPORAL_ADDRESS": address}
        with worker_log.open("ab") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tether.cli", *app_args, "worker"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        with console_log.open("ab") as out:
            procs.append(
                subprocess.Popen(
                    [sys.executable, "-m", "tether.cli", *app_args, "console"],
                    env=env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        emit_table(
            "tether dev",
            ("part", "where"),
            [
                ("Temporal gRPC", address),
                ("Temporal UI", f"http://127.0.0.1:{settings.dev_ui_port}"),
                ("Temporal state", str(state / "temporal.db")),
                ("worker", f"pid {procs[1].pid}, task queue {settings.task_queue!r}"),
                ("console", f"http://{settings.console_host}:{settings.console_port}"),
                ("ledger", shown_url(settings.database_url)),
                ("policy", str(settings.policy_path)),
                ("logs", f"{server_log}, {worker_log}, {console_log}"),
            ],
            ids=("where",),
            console=console,
        )
        console.print(
            f"ready. In another shell: TETHER_TEMPORAL_ADDRESS={address} tether run ... ; "
            "Ctrl-C stops everything."
        )
        while all(p.poll() is None for p in procs):
            time.sleep(0.2)
        dead = next(p for p in procs if p.poll() is not None)
        name = {0: "Temporal dev server", 1: "worker"}.get(procs.index(dead), "console")
        console.print(red(f"the {name} exited with {dead.returncode}; see its log", ""))
        return 1
    except KeyboardInterrupt:
        # Ignore further signals before saying so: a second Ctrl-C after "stopping" must
        # not interrupt the stop itself.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        console.print("stopping …")
        return 0
    finally:
        _stop(procs, settings.shutdown_grace_seconds)
