"""`python worker.py` refuses bad configuration with one line, before it polls anything."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _worker(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "worker.py")],
        env={**os.environ, "TETHER_DATABASE_URL": f"sqlite:///{tmp_path / 'w.db'}", **env},
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
    )


def test_malformed_policy_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "policy.csv"
    bad.write_text(
        "p, role:x, vendor/:n, payments.pay, True, auto, r1, -, -\n"
        "p, role:x, vendor/:n, payments.pay, True, sometimes, r2, -, -\n"
    )
    done = _worker(tmp_path, TETHER_POLICY_PATH=str(bad))
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "policy.csv:2" in lines[0] and "'sometimes'" in lines[0]


def test_unreachable_temporal_is_named(tmp_path: Path) -> None:
    done = _worker(tmp_path, TETHER_TEMPORAL_ADDRESS="127.0.0.1:1")
    assert done.returncode == 2
    assert "127.0.0.1:1" in done.stderr and "tether dev" in done.stderr


def test_bad_database_url_is_named(tmp_path: Path) -> None:
    done = _worker(tmp_path, TETHER_DATABASE_URL="not a url")
    assert done.returncode == 2
    assert "'not a url'" in done.stderr
