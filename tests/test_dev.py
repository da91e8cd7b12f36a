"""`tether dev`: a real dev server with state on disk plus a live worker; Ctrl-C stops both."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from ap.workflows import InvoiceInput, InvoiceResult
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from tests.conftest import free_port
from tether.cli.dev import port_busy
from tether.runtime.client import start_task


def _dev(
    tmp_path: Path, port: int, ui_port: int, queue: str, **extra: str
) -> subprocess.Popen[str]:
    """`tether dev` in `tmp_path` on these ports and task queue, `extra` variables on top."""
    env = {
        **os.environ,
        "TETHER_DEV_PORT": str(port),
        "TETHER_DEV_UI_PORT": str(ui_port),
        "TETHER_STATE_DIR": str(tmp_path / "state"),
        "TETHER_DATABASE_URL": f"sqlite:///{tmp_path / 'dev.db'}",
        "TETHER_TASK_QUEUE": queue,
        "COLUMNS": "200",
        **extra,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tether.cli.main", "dev"],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


async def test_dev_stack_runs_a_task_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    port, ui_port, queue = free_port(), free_port(), f"dev-{uuid.uuid4().hex[:8]}"
    proc = _dev(tmp_path, port, ui_port, queue)
    assert proc.stdout is not None
    seen = []
    deadline = time.monotonic() + 90
    try:
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line)
            if line.startswith("ready"):
                break
        output = "".join(seen)
        assert "ready" in output, output
        assert f"127.0.0.1:{port}" in output and f"http://127.0.0.1:{ui_port}" in output
        assert (tmp_path / "state" / "temporal.db").exists()

        client = await Client.connect(f"127.0.0.1:{port}", data_converter=pydantic_data_converter)
        handle = await start_task(
            client,
            "PayInvoice",
            InvoiceInput(invoice_id="INV-1001", text="Invoice INV-1001"),
            workflow_id=f"dev-{uuid.uuid4().hex[:8]}",
            task_queue=queue,
            started_by="user:dev",
            result_type=InvoiceResult,
        )
        assert (await handle.result()).status == "paid"
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
        proc.stdout.close()
    assert code == 0
    assert not port_busy(port) and not port_busy(ui_port)


def test_busy_port_is_named(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        proc = _dev(tmp_path, port, free_port(), "q")
        out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1, out
    assert f"port {port}" in lines[0] and "TETHER_DEV_PORT" in lines[0]


def _until(proc: subprocess.Popen[str], start: str, seconds: float = 90) -> str:
    """What `proc` printed up to and including the first line starting with `start`."""
    assert proc.stdout is not None
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        seen.append(line)
        if line.startswith(start):
            return "".join(seen)
    raise AssertionError(f"no line starting {start!r} in: {''.join(seen)}")


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid`."""
    found: list[int] = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # it ended while we looked
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_a_second_ctrl_c_while_stopping_still_stops_everything(tmp_path: Path) -> None:
    """Ctrl-C twice (an impatient person): the worker still drains, and no dev server,
    worker or console is left running."""
    port, ui_port = free_port(), free_port()
    proc = _dev(tmp_path, port, ui_port, "twice", TETHER_CONSOLE_PORT=str(free_port()))
    children: list[int] = []
    try:
        _until(proc, "ready")
        children = _children(proc.pid)
        assert len(children) == 3, children  # Temporal, worker, console
        proc.send_signal(signal.SIGINT)
        _until(proc, "stopping")
        proc.send_signal(signal.SIGINT)  # while the console and the worker stop
        assert proc.wait(timeout=60) == 0
        deadline = time.monotonic() + 10  # reparented ones are reaped by init
        while any(map(_running, children)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [pid for pid in children if _running(pid)], "left running"
    finally:
        for pid in [proc.pid, *children]:
            if _running(pid):
                os.kill(pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()


def test_the_database_password_is_not_shown(tmp_path: Path) -> None:
    url = "postgresql+psycopg://tether:s3cret@127.0.0.1:1/tether"
    proc = _dev(
        tmp_path,
        free_port(),
        free_port(),
        "pw",
        TETHER_DATABASE_URL=url,
        TETHER_CONSOLE_PORT=str(free_port()),
    )
    out, _ = proc.communicate(timeout=120)  # the worker cannot reach that database: it ends
    assert "tether:***@127.0.0.1:1/tether" in out, out
    assert "s3cret" not in out
