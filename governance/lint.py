"""Policy lint: what bites casbin users, found before a policy is loaded.

`lint(model_text, policy_text)` returns findings, each with a severity, the physical line
of the policy file (0 for the model), the check that found it, the rule id and a message
naming the value and the fix. Checks:

- `default-allow` / `effect`: a policy effect other than `some(where (p.eft == allow))`
  (e.g. `!some(where (p.eft == deny))` allows every request no rule denies).
- `regex-invalid` / `regex-catastrophic`: resource patterns (keyMatch2..5 compile them
  to regexes) and `regexMatch` patterns that fail to compile or backtrack exponentially.
- `separator`: a value that contains `,` `"` `'` or a line break once the CSV is parsed,
  or a condition with a top-level comma (casbin's own file adapter splits the row there).
- `unreachable`: a condition that is always false, a subject that is neither an agent
  nor a role some `g` row grants, a rule an earlier-deciding always-true rule shadows.
- `contradiction`: rules of different tiers for the same subject and action whose
  resource patterns overlap and whose conditions are identical.
- `invalid`: the policy does not parse or the model does not load.
- `empty`, `approver-chain`, `agent-approver`, `condition`: see `governance.lint_control`.

Errors make `check_and_load` refuse a policy; warnings do not. Pure: no I/O.
"""

from __future__ import annotations

import ast
import csv
import io
import re
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel
from simpleeval import EvalWithCompoundTypes, InvalidExpression

from tether.errors import PolicyError
from tether.governance.lint_control import control_findings
from tether.governance.policy import PolicyEngine, PolicyRule
from tether.governance.regexes import regex_problem

Severity = Literal["error", "warning"]
SAFE_EFFECT = "some(where (p.eft == allow))"
_P_NAMES = ("sub", "obj", "act", "cond", "tier", "rule", "approver", "timeout")
_MATCHER_CALL = re.compile(r"(\w+)\(\s*r\.(\w+)\s*,\s*p\.(\w+)\s*\)")
_REGEX_IN_COND = re.compile(r"regexMatch\(\s*[^,()]+,\s*(['\"])(.*?)\1\s*\)")
_KEY_FUNCS = {"keyMatch2", "keyMatch3", "keyMatch4", "keyMatch5", "regexMatch"}
_BAD_CHARS = {",": "a comma", '"': "a double quote", "'": "a single quote", "\n": "a line break"}
_LINE = re.compile(r":(\d+):")
_NAMED_RULE = re.compile(r"rule '([^']+)'")


class Finding(BaseModel):
    """One thing lint found."""

    severity: Severity
    line: int
    check: str
    rule: str
    message: str


@dataclass(frozen=True)
class _Row:
    line: int
    kind: str
    fields: list[str]


def _rows(policy_text: str) -> list[_Row]:
    """Rows with the physical line each starts on, parsed as `parse_policy` parses them."""
    lines = ("\n" if ln.lstrip().startswith("#") else ln for ln in io.StringIO(policy_text))
    reader = csv.reader(lines, skipinitialspace=True)
    rows: list[_Row] = []
    start = 1
    for raw in reader:
        fields = [f.strip() for f in raw]
        if fields and fields[0]:
            rows.append(_Row(start, fields[0], fields[1:]))
        start = reader.line_num + 1
    return rows


def _model_section(model_text: str, section: str) -> dict[str, str]:
    found: dict[str, str] = {}
    current = ""
    for line in model_text.splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1].strip()
        elif current == section and "=" in line:
            key, value = line.split("=", 1)
            found[key.strip()] = value.strip()
    return found


def _effect_findings(model_text: str) -> list[Finding]:
    effect = _model_section(model_text, "policy_effect").get("e", "")
    squashed = effect.replace(" ", "")
    if squashed == SAFE_EFFECT.replace(" ", ""):
        return []
    if squashed.startswith("!some(where(p.eft==deny))"):
        check, why = "default-allow", "allows every request that no rule denies"
    else:
        check, why = "effect", "is not the effect Tether's tiers and default-deny rely on"
    return [
        Finding(
            severity="error",
            line=0,
            check=check,
            rule="",
            message=f"policy_effect {effect!r} {why}; use 'e = {SAFE_EFFECT}'",
        )
    ]


def key_pattern_regex(function: str, pattern: str) -> str:
    """The regex casbin builds from a key pattern for `function` (as its util does)."""
    if function == "regexMatch":
        return pattern
    body = pattern.replace("/*", "/.*")
    if function == "keyMatch2":
        body = "(.*)" if body == "*" else re.sub(r":[^/]+", "[^/]+", body)
    else:  # keyMatch3..5 name parameters {like_this}
        body = re.sub(r"\{[^/]+?\}", "[^/]+", body)
    return f"^{body}$"


def _regex_findings(model_text: str, rows: list[_Row]) -> list[Finding]:
    matcher = _model_section(model_text, "matchers").get("m", "")
    compiled = {
        field: func for func, _r, field in _MATCHER_CALL.findall(matcher) if func in _KEY_FUNCS
    }
    findings: list[Finding] = []
    for row in rows:
        if row.kind != "p" or len(row.fields) != len(_P_NAMES):
            continue
        values = dict(zip(_P_NAMES, row.fields, strict=True))
        targets = [
            (f"{field} pattern", values[field], key_pattern_regex(func, values[field]))
            for field, func in compiled.items()
            if field in values
        ]
        targets += [
            ("regexMatch pattern", m[1], m[1]) for m in _REGEX_IN_COND.findall(values["cond"])
        ]
        for what, value, regex in targets:
            problem = regex_problem(regex)
            if problem is not None:
                findings.append(
                    Finding(
                        severity="error",
                        line=row.line,
                        check=f"regex-{problem[0]}",
                        rule=values["rule"],
                        message=f"{what} {value!r}: {problem[1]}; rewrite it without nested "
                        "or overlapping repetition (e.g. '(ab)+' not '(a+b?)+')"
                        if problem[0] == "catastrophic"
                        else f"{what} {value!r}: {problem[1]}; fix the pattern",
                    )
                )
    return findings


def _top_level_comma(condition: str) -> bool:
    depth, quote = 0, ""
    for ch in condition:
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch in "([":
            depth += 1
        elif ch in ")]":
            depth -= 1
        elif ch == "," and depth == 0:
            return True
    return False


def _separator_findings(rows: list[_Row]) -> list[Finding]:
    findings: list[Finding] = []
    for row in rows:
        names = _P_NAMES if row.kind == "p" else ("member", "role")
        rule = row.fields[5] if row.kind == "p" and len(row.fields) > 5 else ""
        for name, value in zip(names, row.fields, strict=False):
            if name == "cond":
                bad = "a line break" if "\n" in value else ""
                if not bad and _top_level_comma(value):
                    bad = "a comma outside parentheses"
            else:
                bad = next((what for ch, what in _BAD_CHARS.items() if ch in value), "")
            if bad:
                findings.append(
                    Finding(
                        severity="error",
                        line=row.line,
                        check="separator",
                        rule=rule,
                        message=f"{name} {value!r} contains {bad}; casbin's adapters split "
                        "or keep it differently from Tether, so rename the value without it",
                    )
                )
    return findings


def constant_value(condition: str) -> bool | None:
    """True/False for a condition that reads no request field, else None."""
    expr = re.sub(r"!(?!=)", " not ", condition.replace("&&", " and ").replace("||", " or "))
    try:
        tree = ast.parse(expr.strip(), mode="eval")
    except SyntaxError:
        return None
    nodes = list(ast.walk(tree))
    names = {n.id for n in nodes if isinstance(n, ast.Name)}
    if names - {"True", "False", "None"} or any(
        isinstance(n, ast.Attribute | ast.Call) for n in nodes
    ):
        return None
    try:
        return bool(EvalWithCompoundTypes().eval(expr.strip()))
    except (InvalidExpression, ArithmeticError, TypeError, ValueError):
        return None


def _key2_segments(pattern: str) -> list[str]:
    return pattern.split("/")


def covers(outer: str, inner: str) -> bool:
    """Every resource keyMatch2 matches against `inner` also matches `outer`."""
    if outer == inner or outer == "*":
        return True
    a, b = _key2_segments(outer), _key2_segments(inner)
    if a[-1] == "*" and len(b) >= len(a) - 1:
        a, b = a[:-1], b[: len(a) - 1]
    if len(a) != len(b):
        return False
    return all(x == y or (x.startswith(":") and "*" not in y) for x, y in zip(a, b, strict=True))


def overlaps(first: str, second: str) -> bool:
    """Some resource keyMatch2 matches against both patterns."""
    if covers(first, second) or covers(second, first):
        return True
    a, b = _key2_segments(first), _key2_segments(second)
    if len(a) != len(b) or "*" in a[-1] + b[-1]:
        return False
    return all(x == y or x.startswith(":") or y.startswith(":") for x, y in zip(a, b, strict=True))


def _squash(condition: str) -> str:
    return " ".join(condition.split())


def _rule_findings(engine: PolicyEngine, lines: dict[str, int]) -> list[Finding]:
    document = engine.document
    granted = {role for _member, role in document.agent_roles}
    findings: list[Finding] = []

    def add(severity: Severity, check: str, rule: PolicyRule, message: str) -> None:
        findings.append(
            Finding(
                severity=severity,
                line=lines.get(rule.rule, 0),
                check=check,
                rule=rule.rule,
                message=message,
            )
        )

    for rule in document.rules:
        if constant_value(rule.condition) is False:
            add(
                "error",
                "unreachable",
                rule,
                f"condition {rule.condition!r} is always false, "
                "so no request reaches this rule; fix the condition or delete the rule",
            )
        if not rule.subject.startswith("agent:") and rule.subject not in granted:
            add(
                "error",
                "unreachable",
                rule,
                f"subject {rule.subject!r} is neither an agent "
                "('agent:...') nor a role any 'g' row grants; add 'g, agent:..., "
                f"{rule.subject}' or fix the name",
            )
    # document.rules is in decision order: most restrictive first, file order within a tier.
    for i, later in enumerate(document.rules):
        peers = [
            r for r in document.rules[:i] if (r.subject, r.action) == (later.subject, later.action)
        ]
        rival = next(
            (
                r
                for r in peers
                if r.tier != later.tier
                and _squash(r.condition) == _squash(later.condition)
                and overlaps(r.resource, later.resource)
            ),
            None,
        )
        shadow = next(
            (
                r
                for r in peers
                if constant_value(r.condition) is True and covers(r.resource, later.resource)
            ),
            None,
        )
        if rival is not None:
            add(
                "error",
                "contradiction",
                later,
                f"rule {later.rule!r} ({later.tier.value}) "
                f"and rule {rival.rule!r} ({rival.tier.value}, line "
                f"{lines.get(rival.rule, 0)}) decide the same requests with condition "
                f"{later.condition!r}; {rival.rule!r} wins, so give them different "
                "conditions or delete one",
            )
        elif shadow is not None:
            add(
                "warning",
                "unreachable",
                later,
                f"rule {later.rule!r} is shadowed by rule "
                f"{shadow.rule!r} (line {lines.get(shadow.rule, 0)}), which decides "
                f"first for every resource {later.resource!r} matches; delete it or narrow "
                f"{shadow.rule!r}",
            )
    return findings


def _lint(
    model_text: str, policy_text: str, source: str
) -> tuple[PolicyEngine | None, list[Finding]]:
    try:
        engine = PolicyEngine.from_texts(model_text, policy_text, source)
    except PolicyError as exc:
        # A pattern the engine refused: lint names it on its line, as it names the others.
        refused = [
            f for f in _regex_findings(model_text, _rows(policy_text)) if f.check == "regex-invalid"
        ]
        if refused:
            return None, refused
        match = _LINE.search(str(exc))
        named = _NAMED_RULE.search(str(exc))
        lines = {r.fields[5]: r.line for r in _rows(policy_text) if len(r.fields) > 5}
        line = int(match.group(1)) if match else lines.get(named.group(1), 0) if named else 0
        return None, [
            Finding(severity="error", line=line, check="invalid", rule="", message=str(exc))
        ]
    rows = _rows(policy_text)
    lines = {r.fields[5]: r.line for r in rows if r.kind == "p" and len(r.fields) > 5}
    findings = [
        *_effect_findings(model_text),
        *_regex_findings(model_text, rows),
        *_separator_findings(rows),
        *_rule_findings(engine, lines),
    ]

    def add(severity: Severity, check: str, line: int, rule: str, message: str) -> None:
        findings.append(
            Finding(severity=severity, line=line, check=check, rule=rule, message=message)
        )

    control_findings(engine, lines, add)
    return engine, sorted(findings, key=lambda f: (f.line, f.severity != "error"))


def lint(model_text: str, policy_text: str, source: str = "<policy>") -> list[Finding]:
    """Findings for a model and policy, in line order; empty when the policy is clean."""
    return _lint(model_text, policy_text, source)[1]


def check_and_load(model_text: str, policy_text: str, source: str = "<policy>") -> PolicyEngine:
    """Load a policy only if lint finds no error; PolicyError naming the errors otherwise."""
    engine, findings = _lint(model_text, policy_text, source)
    errors = [f for f in findings if f.severity == "error"]
    if engine is None or errors:
        listed = "; ".join(f"line {f.line} [{f.check}] {f.message}" for f in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise PolicyError(
            f"{source!r} is refused, {len(errors)} lint error(s): {listed}{more}; "
            "run 'tether policy lint' on it, fix them and try again"
        )
    return engine
