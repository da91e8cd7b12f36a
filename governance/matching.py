"""Linear-time pattern matching (RE2) for every regex a policy holds.

Python's `re` backtracks: a pattern such as `^(\\w\\s?\\w?)+$` takes time exponential in
the length of a text it fails on, and resource patterns and `regexMatch` conditions are
matched against text an agent chose (a vendor name a model read off an invoice). RE2
matches in time linear in the text for every pattern it accepts, so a decision is bounded
in time for any input. Everything that matches a policy's pattern at decision time goes
through here: the fast path's resource patterns (governance.fastpath) and the matching
functions casbin's own evaluator calls (`CASBIN_FUNCTIONS`, registered by
governance.policy), so both decision paths use one engine and agree.

Contract:
- `compile_pattern(regex)` answers `re.match(regex, text) is not None` (anchored at the
  start, as casbin's `regex_match`; casbin's key patterns carry their own `^...$`); it
  raises PatternError, naming the pattern and RE2's reason, for a pattern RE2 does not
  accept (backreferences, lookaround, `\\Z`, possessive or atomic groups). A policy
  holding one is refused at load.
- On patterns both engines accept, RE2 differs from `re` in two ways: `$` matches only
  at the very end of the text (not also before a final newline), and `\\d`, `\\w`, `\\s`,
  `\\b` are ASCII (write `\\pL` or `\\p{L}` for any letter).
- A text that is not a `str` raises TypeError, as `re` does (a condition that raises
  denies). Compiled patterns are cached (bounded LRU). Pure and thread-safe.
"""

from __future__ import annotations

import ast
import functools
import re
from collections.abc import Callable, Iterator
from typing import Any

import re2

# The compiled engine itself: re2's module-level `match` builds a match object through a
# generator, several times the cost of the one call a yes/no answer needs.
_re2: Any = re2._re2

ENGINE = "re2"
"""The regex engine every policy pattern is matched with."""

Matcher = Callable[[str], bool]

_OPTIONS: Any = re2.Options()
_OPTIONS.never_capture = True  # a yes/no answer needs no groups: RE2's fastest matchers
_OPTIONS.log_errors = False  # the error goes into PatternError, not to stderr
_START: Any = _re2.RE2.Anchor.ANCHOR_START
_NO_MATCH = (-1, -1)
_KEY_MATCH2 = re.compile(r"(.*?):[^\/]+(.*?)")  # pycasbin's patterns, run on policy text only
_KEY_MATCH3 = re.compile(r"(.*?){[^\/]+?}(.*?)")
_KEY_MATCH4 = re.compile(r"{([^/]+)}")
_KEY_MATCH5 = re.compile(r"{[^/]+}")


class PatternError(ValueError):
    """A pattern RE2 cannot match in linear time (or at all)."""

    def __init__(self, pattern: str, reason: str) -> None:
        super().__init__(
            f"pattern {pattern!r} is not accepted by RE2, the linear-time regex engine "
            f"decisions use: {reason}; fix it in RE2 syntax (no backreferences, lookaround, "
            "\\Z or possessive/atomic groups)"
        )
        self.pattern = pattern
        self.reason = reason


@functools.lru_cache(maxsize=4096)
def compile_pattern(regex: str) -> Matcher:
    """`text -> bool`: whether `regex` matches at the start of `text`, in linear time."""
    try:
        engine = _re2.RE2(regex.encode(), _OPTIONS)
    except UnicodeEncodeError:
        raise PatternError(regex, "it is not valid Unicode text") from None
    if not engine.ok():
        error = engine.error()
        raise PatternError(
            regex, error.decode(errors="replace") if isinstance(error, bytes) else str(error)
        )
    match = engine.Match

    def matches(text: str) -> bool:
        data = text.encode()
        return bool(match(_START, data, 0, len(data))[0] != _NO_MATCH)

    return matches


_SEGMENT = "[^\\/]+"  # what key_match2_regex makes of `:name`
_SPECIAL = frozenset(".^$*+?{}[]\\|()")


def key_matcher(regex: str) -> Callable[[str], object]:
    """`compile_pattern(regex)` for a regex made by key_match2_regex (truthy on a match).

    A pattern of literal text, `:name` segments each followed by a `/` or the end, and a
    trailing `/*` (most patterns) cannot backtrack more than linearly: a `[^/]+` may only
    be followed by a `/`, so giving characters back fails at once, and `.*` is last. Those
    run on Python's own engine (faster per call than RE2 through its binding), with `$` as
    RE2 reads it (`\\Z`); every other pattern runs on RE2.
    """
    body = regex[1:-1] if regex.startswith("^") and regex.endswith("$") else None
    if body is None:
        return compile_pattern(regex)
    rest = body[:-2] if body.endswith("/.*") else body  # keeps the `/` before `.*`
    parts = rest.split(_SEGMENT)
    simple = all(_SPECIAL.isdisjoint(p) for p in parts) and all(
        p.startswith("/") or (i == len(parts) - 1 and not p) for i, p in enumerate(parts[1:], 1)
    )
    if not simple:
        return compile_pattern(regex)
    compile_pattern(regex)  # RE2 accepts it too: both paths answer alike
    return re.compile(regex[:-1] + "\\Z").match


def key_match2_regex(pattern: str) -> str:
    """The regex pycasbin's `key_match2` matches a resource against, for this pattern."""
    key = pattern.replace("/*", "/.*")
    key = _KEY_MATCH2.sub(r"\g<1>[^\/]+\g<2>", key, 0)
    if key == "*":
        key = "(.*)"
    return "^" + key + "$"


def _key_match3_regex(pattern: str) -> str:
    key = _KEY_MATCH3.sub(r"\g<1>[^\/]+\g<2>", pattern.replace("/*", "/.*"), 0)
    return "^" + key + "$"


def _key_match5_regex(pattern: str) -> str:
    return "^" + _KEY_MATCH5.sub(r"[^/]+", pattern.replace("/*", "/.*"), 0) + "$"


def _text(value: object, function: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{function} needs a string, got {type(value).__name__} {value!r}")
    return value


def regex_match(text: object, pattern: object) -> bool:
    """casbin's `regexMatch(text, pattern)`: `re.match(pattern, text)`, in linear time."""
    return compile_pattern(_text(pattern, "regexMatch"))(_text(text, "regexMatch"))


def key_match2(key: object, pattern: object) -> bool:
    regex = key_match2_regex(_text(pattern, "keyMatch2"))
    return compile_pattern(regex)(_text(key, "keyMatch2"))


def key_match3(key: object, pattern: object) -> bool:
    regex = _key_match3_regex(_text(pattern, "keyMatch3"))
    return compile_pattern(regex)(_text(key, "keyMatch3"))


def key_match4(key: object, pattern: object) -> bool:
    """`/parent/{id}/child/{id}`: every `{name}` given twice must match the same text."""
    pattern = _text(pattern, "keyMatch4")
    text = _text(key, "keyMatch4")
    tokens: list[str] = []

    def group(found: re.Match[str]) -> str:
        tokens.append(found.group(1))
        return "([^/]+)"

    regex = "^" + _KEY_MATCH4.sub(group, pattern.replace("/*", "/.*")) + "$"
    if not compile_pattern(regex)(text):
        return False
    captured = re2.compile(regex).match(text)  # the groups, now that it is known to match
    values: dict[str, str] = {}
    for token, value in zip(tokens, captured.groups(), strict=False):
        if values.setdefault(token, value) != value:
            return False
    return True


def key_match5(key: object, pattern: object) -> bool:
    """keyMatch3 on the path before any `?query`."""
    text = _text(key, "keyMatch5").split("?", 1)[0]
    return compile_pattern(_key_match5_regex(_text(pattern, "keyMatch5")))(text)


CASBIN_FUNCTIONS: dict[str, Callable[[object, object], bool]] = {
    "keyMatch2": key_match2,
    "keyMatch3": key_match3,
    "keyMatch4": key_match4,
    "keyMatch5": key_match5,
    "regexMatch": regex_match,
}
"""casbin's regex-backed matching functions, by their casbin names, in RE2."""

_REGEX_OF: dict[str, Callable[[str], str]] = {
    "keyMatch2": key_match2_regex,
    "keyMatch3": _key_match3_regex,
    "keyMatch4": lambda p: "^" + _KEY_MATCH4.sub("([^/]+)", p.replace("/*", "/.*")) + "$",
    "keyMatch5": _key_match5_regex,
    "regexMatch": lambda p: p,
}


def constant_patterns(expression: ast.expr) -> Iterator[tuple[str, str]]:
    """(pattern, regex) for each call of a matching function in `expression` whose
    pattern argument is a literal: what a policy can be checked for at load."""
    for node in ast.walk(expression):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _REGEX_OF
            and len(node.args) == 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
        ):
            pattern = node.args[1].value
            yield pattern, _REGEX_OF[node.func.id](pattern)
