"""Regex safety for policy lint: invalid patterns and patterns that backtrack catastrophically.

casbin compiles resource patterns (keyMatch2..5) and `regexMatch` arguments to Python
regexes at decision time, so a bad pattern fails or hangs on a live request instead of at
load time. This module looks at the parsed pattern (the standard library's own regex
parser) and reports, for a quantifier that can repeat without bound:

- a nested unbounded quantifier in its body (`(a+)+`, `(.*)*`, `(\\w+\\s?)+`);
- an alternation in its body whose branches can start with the same character
  (`(a|ab)*`, `(\\w|\\d)+`).

Both let one input split into exponentially many ways, the classic ReDoS shape. The check
is structural: it may flag a pattern that happens to be safe, and it may miss subtler
shapes (an optional prefix before an overlapping branch, `(\\w\\s?\\w?)+`). Decisions do
not depend on it: they match every pattern with RE2 (governance.matching), in time linear
in the text, so a pattern RE2 does not accept is `invalid` here too. Pure, no I/O.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from tether.governance.matching import PatternError, compile_pattern

# The standard library's regex parser (re._parser since 3.11) has no type stubs.
_parser: Any = importlib.import_module("re._parser")
_constants: Any = importlib.import_module("re._constants")
_UNBOUNDED = _constants.MAXREPEAT
_REPEATS = {"MAX_REPEAT", "MIN_REPEAT", "POSSESSIVE_REPEAT"}
_ANY_CHAR = None  # a first-character set that may be anything
_DIGITS = frozenset(range(48, 58))
_WORD = _DIGITS | frozenset(range(65, 91)) | frozenset(range(97, 123)) | {95}
_SPACE = frozenset(b" \t\n\r\f\v")
_CATEGORIES = {"CATEGORY_DIGIT": _DIGITS, "CATEGORY_WORD": _WORD, "CATEGORY_SPACE": _SPACE}

FirstChars = frozenset[int] | None


def regex_problem(pattern: str) -> tuple[str, str] | None:
    """`("invalid" | "catastrophic", why)` for a bad pattern, None for a safe one."""
    try:
        re.compile(pattern)
        tree = _parser.parse(pattern)
    except re.error as exc:
        return "invalid", f"it does not compile ({exc})"
    try:
        compile_pattern(pattern)
    except PatternError as exc:
        return "invalid", f"RE2, the engine decisions use, does not accept it ({exc.reason})"
    if _nested_unbounded(list(tree)):
        return "catastrophic", "a quantifier repeats a group that itself repeats without bound"
    if _overlapping_alternation(pattern):
        return "catastrophic", (
            "a quantifier repeats an alternation whose branches can start with the same character"
        )
    return None


def _children(op: str, av: Any) -> list[list[Any]]:
    if op in _REPEATS:
        return [list(av[2])]
    if op == "SUBPATTERN":
        return [list(av[3])]
    if op == "BRANCH":
        return [list(b) for b in av[1]]
    if op == "ATOMIC_GROUP":
        return [list(av)]
    if op in ("ASSERT", "ASSERT_NOT"):
        return [list(av[1])]
    if op == "GROUPREF_EXISTS":
        return [list(b) for b in av[1:] if b is not None]
    return []


def _nested_unbounded(items: list[Any]) -> bool:
    for op_const, av in items:
        op = str(op_const)
        if op in _REPEATS and av[1] == _UNBOUNDED and _has_unbounded(list(av[2])):
            return True
        if any(_nested_unbounded(child) for child in _children(op, av)):
            return True
    return False


def _has_unbounded(items: list[Any]) -> bool:
    for op_const, av in items:
        op = str(op_const)
        if op in _REPEATS and av[1] == _UNBOUNDED:
            return True
        if any(_has_unbounded(child) for child in _children(op, av)):
            return True
    return False


_UNBOUNDED_AFTER = re.compile(r"[*+]|\{\d*,\}")


def _overlapping_alternation(pattern: str) -> bool:
    """A group repeated without bound whose alternatives share a first character.

    Read from the pattern text: the parser factors `a|aa` into `a(?:|a)`, hiding it.
    """
    opened: list[int] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            i = _class_end(pattern, i)
            continue
        if ch == "(":
            opened.append(i)
        elif ch == ")" and opened:
            start = opened.pop()
            if _UNBOUNDED_AFTER.match(pattern, i + 1):
                firsts = [_first_of(alt) for alt in _alternatives(pattern[start + 1 : i])]
                for n, a in enumerate(firsts):
                    for b in firsts[n + 1 :]:
                        if a is _ANY_CHAR or b is _ANY_CHAR or a & b:
                            return True
        i += 1
    return False


def _class_end(pattern: str, i: int) -> int:
    """Index just past the character class opening at `i`."""
    j = i + 1
    if pattern.startswith("^", j):
        j += 1
    if pattern.startswith("]", j):
        j += 1
    while j < len(pattern) and pattern[j] != "]":
        j += 2 if pattern[j] == "\\" else 1
    return j + 1


def _alternatives(body: str) -> list[str]:
    if body.startswith("?"):
        if body.startswith(("?:", "?>")):
            body = body[2:]
        elif body.startswith("?P<"):
            body = body[body.find(">") + 1 :]
        else:  # a lookaround or inline flags: not a repeated alternation
            return []
    alts, depth, start, i = [], 0, 0, 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "[":
            i = _class_end(body, i)
            continue
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "|" and depth == 0:
            alts.append(body[start:i])
            start = i + 1
        i += 1
    return [*alts, body[start:]] if alts else []


def _first_of(alternative: str) -> FirstChars:
    try:
        return _first(list(_parser.parse(alternative)))
    except re.error:
        return _ANY_CHAR


def _first(items: list[Any]) -> FirstChars:
    """Characters a match of `items` can start with (None: any)."""
    if not items:
        return frozenset()
    op_const, av = items[0]
    op = str(op_const)
    if op == "LITERAL":
        return frozenset({av})
    if op == "IN":
        chars: set[int] = set()
        for kind_const, value in av:
            kind = str(kind_const)
            if kind == "LITERAL":
                chars.add(value)
            elif kind == "RANGE":
                chars.update(range(value[0], value[1] + 1))
            elif kind == "CATEGORY" and str(value) in _CATEGORIES:
                chars.update(_CATEGORIES[str(value)])
            else:  # negation or another category: assume anything
                return _ANY_CHAR
        return frozenset(chars)
    if op == "SUBPATTERN":
        return _first(list(av[3]))
    if op in _REPEATS:
        return _first(list(av[2]))
    if op == "BRANCH":
        result: frozenset[int] = frozenset()
        for branch in av[1]:
            first = _first(list(branch))
            if first is _ANY_CHAR:
                return _ANY_CHAR
            result |= first
        return result
    return _ANY_CHAR
