"""The wheel, as an author gets it: built, installed into a fresh virtualenv outside the
repository, and used in a project of the author's own made by `tether init`.

The project deliberately has top-level `workflows` and `activities` packages, the names
Tether's planes carry in this repository: the wheel installs only `tether`, so they never
collide. The fresh virtualenv reaches Tether's dependencies through a `.pth` line naming
this environment's site-packages (a plain path entry: its own `.pth` files, among them the
editable install of this checkout, are not run), so `tether` itself comes only from the
wheel.
"""

from __future__ import annotations

import asyncio
import json
import os
import site
import subprocess
import sys
import uuid
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from tests.conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [built] = out.glob("tether-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv outside the repository with the wheel installed."""
    where = tmp_path_factory.mktemp("venv") / "env"
    subprocess.run([sys.executable, "-m", "venv", str(where)], check=True, timeout=300)
    python = where / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "tether-test-deps.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n", encoding="utf-8"
    )
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return where


def _clean_env(**extra: str) -> dict[str, str]:
    """The environment less every TETHER_* variable (the tests' own configuration) and
    every PYTEST_* one (this run's: PYTEST_ADDOPTS, PYTEST_PLUGINS, PYTEST_CURRENT_TEST
    would change how the scaffold's own pytest run behaves)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TETHER_", "PYTEST_"))}
    return {**env, "COLUMNS": "200", **extra}


def test_the_clean_environment_drops_this_runs_tether_and_pytest_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("PYTEST_ADDOPTS", "--collect-only")
    monkeypatch.setenv("PYTEST_PLUGINS", "tests.conftest")
    monkeypatch.setenv("TETHER_TASK_QUEUE", "outer")
    monkeypatch.setenv("KEEP_ME", "1")
    env = _clean_env(TETHER_NAMESPACE="inner")
    assert not [k for k in env if k.startswith("PYTEST_")], env
    assert (env["KEEP_ME"], env["TETHER_NAMESPACE"], "TETHER_TASK_QUEUE" in env) == (
        "1",
        "inner",
        False,
    )


def _cli(
    venv: Path, cwd: Path, *args: str, env: dict[str, str], timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(venv / "bin" / "tether"), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_the_wheel_installs_only_tether(wheel: Path, venv: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
    dist_info = next(n.split("/")[0] for n in names if ".dist-info/" in n)
    assert {n.split("/")[0] for n in names} == {"tether", dist_info}
    # The planes, linked into tether/ in the repository, are real files in the wheel.
    for module in ("workflows/agent.py", "activities/tools.py", "governance/policy.py"):
        assert f"tether/{module}" in names
    assert "tether/governance/policies/model.conf" in names
    assert "tether/py.typed" in names
    [record] = (p for p in names if p.endswith(".dist-info/RECORD"))
    with zipfile.ZipFile(wheel) as zf:
        installed = zf.read(record).decode().splitlines()
    # What pip installs (RECORD): no top-level name but tether (and its metadata).
    assert {line.split(",")[0].split("/")[0] for line in installed} == {"tether", dist_info}
    site_dirs = list((venv / "lib").glob("python*/site-packages"))
    assert (site_dirs[0] / "tether" / "workflows" / "agent.py").is_file()
    assert not (site_dirs[0] / "workflows").exists()


@pytest.fixture
def project(venv: Path, tmp_path: Path) -> Path:
    target = tmp_path / "refunds"
    done = _cli(venv, tmp_path, "init", str(target), env=_clean_env())
    assert done.returncode == 0, done.stderr
    return target


def test_a_scaffold_passes_its_own_tests_with_the_wheel(venv: Path, project: Path) -> None:
    python = str(venv / "bin" / "python")
    where = subprocess.run(
        [
            python,
            "-c",
            "import tether, workflows, activities; "
            "print(tether.__file__, workflows.__file__, activities.__file__)",
        ],
        cwd=project,
        env=_clean_env(),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert str(venv) in where[0], where  # Tether from the wheel, not this checkout
    assert all(Path(p).is_relative_to(project) for p in where[1:]), where
    tested = subprocess.run(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=project,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert " passed" in tested.stdout and "failed" not in tested.stdout


@pytest.fixture
def worker(
    venv: Path, project: Path, temporal_env: WorkflowEnvironment
) -> Iterator[tuple[dict[str, str], Path]]:
    env = _clean_env(
        TETHER_TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host,
        TETHER_TASK_QUEUE=f"wheel-{uuid.uuid4().hex[:10]}",
    )
    log = project / "worker.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(venv / "bin" / "tether"), "worker"],
            cwd=project,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        yield env, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=40)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_worker_run_approve_and_replay_from_the_cli(
    venv: Path, project: Path, worker: tuple[dict[str, str], Path], client: Client
) -> None:
    env, log = worker
    wid = f"refund-{uuid.uuid4().hex[:8]}"
    arg = json.dumps({"ticket_id": "T-1002", "message": "My parcel never came."})
    started = await asyncio.to_thread(
        _cli, venv, project, "run", "Refund", "--input", arg, "--as", "user:lee",
        "--id", wid, "--no-wait", env=env,
    )  # fmt: skip
    assert started.returncode == 0, started.stderr
    request = ""
    for _ in range(600):
        listed = await asyncio.to_thread(
            _cli, venv, project, "approvals", "list", "--json", env=env
        )
        assert listed.returncode == 0, listed.stderr
        pending: list[dict[str, Any]] = json.loads(listed.stdout)
        mine = [p for p in pending if p["workflow_id"] == wid]
        if mine:
            request = mine[0]["request_id"]
            break
        await asyncio.sleep(0.1)
    assert request, f"{wid} never asked for approval:\n{log.read_text()}"
    approved = await asyncio.to_thread(
        _cli, venv, project, "approvals", "approve", request, "--as", "user:sam", env=env
    )
    assert approved.returncode == 0, approved.stderr
    assert "approved" in approved.stdout
    result = await asyncio.wait_for(client.get_workflow_handle(wid).result(), 120)
    assert result["status"] == "refunded", result
    replayed = await asyncio.to_thread(_cli, venv, project, "audit", "replay", wid, env=env)
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert "reproduces" in replayed.stdout
    verified = await asyncio.to_thread(_cli, venv, project, "audit", "verify", env=env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
