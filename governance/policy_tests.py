"""Policy regression tests: a TOML table of requests and the tiers they must get.

A tests file sits beside its policy:

    policy = "default.csv"          # optional, relative to this file
    [[case]]
    name = "small payments run"     # optional
    agent = "agent:ap-clerk"
    action = "payments.pay"
    resource = "vendor/acme"
    context = { amount = 250 }
    expect = "auto"                 # auto | notify | approve | deny
    rule = "ap-pay-small"           # optional: the rule that must decide

`run_policy_tests` decides every case against the policy and reports each; a file that
cannot be read or a case that is malformed is a PolicyError naming it. Pure but for
reading the files.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, JsonValue, ValidationError

from tether.errors import PolicyError
from tether.governance.policy import PolicyEngine
from tether.governance.reload import read_text
from tether.governance.types import DecisionRequest, Tier


class PolicyCase(BaseModel):
    """One request and what the policy must answer."""

    model_config = ConfigDict(extra="forbid")

    name: str = ""
    agent: str
    action: str
    resource: str
    context: dict[str, JsonValue] = Field(default_factory=dict)
    expect: Tier
    rule: str | None = None


class CaseResult(BaseModel):
    name: str
    passed: bool
    expect: Tier
    tier: Tier
    expect_rule: str | None
    rule: str
    reason: str


class PolicyTestFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str | None = None
    case: list[PolicyCase] = Field(default_factory=list)


def load_tests(path: Path) -> PolicyTestFile:
    """Parse a tests file; PolicyError naming the file and the bad case or field."""
    try:
        raw = tomllib.loads(read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"{str(path)!r} is not valid TOML ({exc}); fix that line") from None
    try:
        tests = PolicyTestFile.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = first["loc"]
        where = f"case {int(loc[1]) + 1}" if loc[:1] == ("case",) and len(loc) > 1 else "top"
        field = ".".join(str(p) for p in loc[2:] if loc[:1] == ("case",)) or ".".join(
            str(p) for p in loc
        )
        raise PolicyError(
            f"{str(path)!r}, {where}: {field} {first['msg'].lower()} (got "
            f"{first.get('input')!r}); cases need agent, action, resource and expect "
            "(auto, notify, approve or deny)"
        ) from None
    if not tests.case:
        raise PolicyError(f"{str(path)!r} has no [[case]] tables; add at least one")
    return tests


def run_policy_tests(
    path: Path, model_path: Path, default_policy: Path
) -> tuple[PolicyEngine, list[CaseResult]]:
    """Decide every case of the tests file at `path`; the policy and one result per case."""
    tests = load_tests(path)
    policy_path = path.parent / tests.policy if tests.policy else default_policy
    engine = PolicyEngine.from_files(model_path, policy_path)
    results: list[CaseResult] = []
    for n, case in enumerate(tests.case, start=1):
        decision = engine.decide(
            DecisionRequest(
                agent=case.agent, action=case.action, resource=case.resource, context=case.context
            )
        )
        passed = decision.tier is case.expect and case.rule in (None, decision.rule)
        results.append(
            CaseResult(
                name=case.name or f"case {n}: {case.agent} {case.action} {case.resource}",
                passed=passed,
                expect=case.expect,
                tier=decision.tier,
                expect_rule=case.rule,
                rule=decision.rule,
                reason=decision.reason,
            )
        )
    return engine, results
