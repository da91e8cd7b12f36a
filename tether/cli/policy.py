"""`tether policy lint | test | push | history | explain | check | impact`: thin wrappers
over governance's policy tools (`impact` is in tether.cli.impact).

`lint` and `test` exit 1 when they find an error or a failing case (a check that fails);
bad input (an unreadable file, a malformed tests file, a refused push) exits 2 with one line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from tether.cli.common import _run, _settings, emit_table, err, friendly, out
from tether.cli.impact import SinceOption, policy_impact, print_summary
from tether.core.config import Settings
from tether.core.db import make_engine
from tether.errors import TetherError
from tether.governance.lint import check_and_load, lint
from tether.governance.policy import PolicyEngine
from tether.governance.policy_store import PolicyStore
from tether.governance.policy_tests import run_policy_tests
from tether.governance.reload import configured_engine, read_text
from tether.governance.types import DecisionRequest
from tether.verification.impact import ChangeLimit
from tether.verification.ledger import Ledger

policy_app = typer.Typer(help="Inspect, lint, test and change the policy.", no_args_is_help=True)
JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON.")]
ModelOption = Annotated[Path | None, typer.Option(help="casbin model (default: configured).")]


def _store(settings: Settings) -> PolicyStore:
    ledger = Ledger(make_engine(settings.database_url))
    return PolicyStore(ledger.engine, ledger)


@policy_app.command("lint")
@friendly
def policy_lint(path: Path, model: ModelOption = None, as_json: JsonFlag = False) -> None:
    """Find what bites casbin users; exit 1 on any error, 0 with warnings only. With MCP
    servers declared ([mcp.servers]), also what their tools' annotations say of the rules."""
    settings = _settings()
    model_path = model or settings.policy_model
    findings = lint(read_text(model_path), read_text(path), source=str(path))
    if settings.mcp.servers and not any(f.severity == "error" for f in findings):
        from tether.mcp.lint import lint_servers

        engine = check_and_load(read_text(model_path), read_text(path), source=str(path))
        findings += _run(lint_servers(engine, settings.mcp))
    errors = sum(f.severity == "error" for f in findings)
    if as_json:
        out.print_json(data=[f.model_dump() for f in findings])
    elif not findings:
        out.print(f"{path}: no findings")
    else:
        emit_table(
            f"{path}: {errors} error(s), {len(findings) - errors} warning(s)",
            ("line", "severity", "check", "rule", "message"),
            [
                (
                    str(f.line),
                    Text(f.severity, style="red" if f.severity == "error" else "yellow"),
                    f.check,
                    f.rule,
                    f.message,
                )
                for f in findings
            ],
            ids=("check", "rule"),
        )
    raise typer.Exit(1 if errors else 0)


@policy_app.command("test")
@friendly
def policy_test(file: Path, model: ModelOption = None, as_json: JsonFlag = False) -> None:
    """Run a policy's regression tests (TOML cases with expected tiers); exit 1 on a failure."""
    settings = _settings()
    engine, results = run_policy_tests(file, model or settings.policy_model, settings.policy_path)
    failed = [r for r in results if not r.passed]
    if as_json:
        out.print_json(
            data={"policy_version": engine.version, "cases": [r.model_dump() for r in results]}
        )
    else:
        emit_table(
            f"{file}: {len(results) - len(failed)} passed, {len(failed)} failed "
            f"(policy {engine.version})",
            ("result", "case", "expected", "got", "why"),
            [
                (
                    Text("pass", style="green") if r.passed else Text("FAIL", style="red"),
                    r.name,
                    f"{r.expect.value}" + (f" ({r.expect_rule})" if r.expect_rule else ""),
                    f"{r.tier.value} ({r.rule})",
                    "" if r.passed else r.reason,
                )
                for r in results
            ],
            ids=("case",),
        )
        for r in failed:
            err.print(
                f"FAILED {r.name!r}: expected {r.expect.value}"
                + (f" by rule {r.expect_rule!r}" if r.expect_rule else "")
                + f", got {r.tier.value} by rule {r.rule!r}"
            )
    raise typer.Exit(1 if failed else 0)


@policy_app.command("push")
@friendly
def policy_push(
    path: Path,
    as_user: Annotated[str, typer.Option("--as", help="Who is changing it: user:you.")],
    model: ModelOption = None,
    max_changes: Annotated[
        int | None,
        typer.Option(
            "--max-changes",
            help="Refuse the push if it changes the tier of more recorded decisions than this.",
        ),
    ] = None,
    since: SinceOption = "30d",
) -> None:
    """Lint, load and activate a policy in the database store (workers reload it).
    With --max-changes, its impact over the decisions recorded since --since is run first."""
    settings = _settings()
    model_text = read_text(model or settings.policy_model)
    store = _store(settings)
    limit = ChangeLimit(store.ledger, max_changes, since) if max_changes is not None else None
    try:
        version = store.push(model_text, read_text(path), as_user, gate=limit)
    finally:
        if limit is not None and limit.report is not None:
            print_summary(limit.report)
    out.print(
        f"{path}: version {version.version} is active ({version.revision}, by {version.author})"
    )


@policy_app.command("history")
@friendly
def policy_history(as_json: JsonFlag = False) -> None:
    """Policy versions pushed to the database store, newest first."""
    versions = _store(_settings()).history()
    if as_json:
        out.print_json(data=[v.model_dump(exclude={"model_text", "policy_text"}) for v in versions])
        return
    emit_table(
        f"{len(versions)} policy version(s)",
        ("id", "version", "author", "pushed at", "active"),
        [
            (str(v.id), v.version, v.author, v.created_at, "yes" if v.active else "")
            for v in versions
        ],
        ids=("id", "version"),
    )


@policy_app.command("explain")
@friendly
def policy_explain(
    agent: Annotated[str, typer.Option(help="e.g. agent:ap-clerk")],
    action: Annotated[str, typer.Option(help="e.g. payments.pay")],
    resource: Annotated[str, typer.Option(help="e.g. vendor/acme")],
    context: Annotated[str, typer.Option(help="Request context as JSON.")] = "{}",
    policy: Annotated[Path | None, typer.Option(help="Policy CSV (default: configured).")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show the tier, the deciding rule and the policy version for one request."""
    settings = _settings()
    engine = configured_engine(settings, policy)
    try:
        ctx = json.loads(context)
    except json.JSONDecodeError as exc:
        raise TetherError(f"--context {context!r} is not valid JSON ({exc.msg})") from None
    if not isinstance(ctx, dict):
        raise TetherError(f"--context {context!r} must be a JSON object, like '{{\"amount\": 10}}'")
    decision = engine.decide(
        DecisionRequest(agent=agent, action=action, resource=resource, context=ctx)
    )
    if as_json:
        out.print_json(decision.model_dump_json())
        return
    out.print(
        f"tier: {decision.tier.value}\nrule: {decision.rule}\n"
        f"policy: {decision.policy_version}\nwhy: {decision.reason}"
    )


@policy_app.command("check")
@friendly
def policy_check(path: Path) -> None:
    """Load a policy file and report its rules and version, or the first error."""
    settings = _settings()
    engine = PolicyEngine.from_files(settings.policy_model, path)
    out.print(f"{path}: {len(engine.document.rules)} rules, version {engine.version}")


policy_app.command("impact")(policy_impact)
