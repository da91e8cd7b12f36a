"""Canonical agent, action and resource names: one spelling per name before any decision.

Every name goes through Unicode NFKC, so compatibility forms (fullwidth letters such as U+FF41,
ligatures, superscripts) fold to the spelling a policy author types. Then:

- agents and actions are lowercased (`Agent:AP-Clerk` is `agent:ap-clerk`): they are
  identifiers the policy author chose, and two spellings of one must not be two names;
- resources keep their case: vendor names and ids are case-sensitive (`vendor/ACME` and
  `vendor/acme` may be different vendors), so folding them could merge two of them;
- a name is refused when it is empty, longer than MAX_NAME_LENGTH characters, has a
  non-printable character (control, format, private-use, unassigned, line separators),
  has leading or trailing whitespace, or (resources) has a `.` or `..` path segment.

A refusal raises InvalidNameError naming the value and what to do. Policy rows are
canonicalised the same way at load, so a request and a row meet in one spelling.

Request fields are opaque literals: nothing here (or in the decision path) gives `*`,
`..`, `,`, `:name`, regex metacharacters or code such as `__import__('os')` a meaning
when it arrives in a request; only policy rows hold patterns and conditions.

Pure functions, deterministic, no I/O.
"""

from __future__ import annotations

import unicodedata

from tether.errors import InvalidNameError

MAX_NAME_LENGTH = 256
"""Longest canonical name, in characters."""

INVALID_REQUEST_RULE = "invalid-request"
"""The rule named by a decision whose request carried a refused name."""

_FOLD_ROUNDS = 4
"""NFKC and lowercasing alternate until the name stops changing (one round in practice)."""


def _nfkc(kind: str, value: str) -> str:
    # NFKC expands a character to at most 18; refuse before normalising a huge string.
    if len(value) > MAX_NAME_LENGTH * 18:
        raise InvalidNameError(
            f"{kind} {value[:40]!r}... is {len(value)} characters; "
            f"use a name of at most {MAX_NAME_LENGTH}"
        )
    return unicodedata.normalize("NFKC", value)


def _check(kind: str, original: str, value: str) -> str:
    if not value:
        raise InvalidNameError(f"{kind} {original!r} is empty; give a name")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidNameError(
            f"{kind} {original[:40]!r}... is {len(value)} characters; "
            f"use a name of at most {MAX_NAME_LENGTH}"
        )
    if not value.isprintable():
        bad = next(c for c in value if not c.isprintable())
        raise InvalidNameError(
            f"{kind} {original!r} has the non-printable character U+{ord(bad):04X}; remove it"
        )
    if value != value.strip():
        raise InvalidNameError(f"{kind} {original!r} has leading or trailing whitespace; strip it")
    return value


def _identifier(kind: str, value: str) -> str:
    if value.isascii():  # NFKC leaves ASCII as it is, and so does lowercasing it again
        return _check(kind, value, value.lower())
    name = _nfkc(kind, value)
    for _ in range(_FOLD_ROUNDS):
        folded = unicodedata.normalize("NFKC", name.lower())
        if folded == name:
            break
        name = folded
    return _check(kind, value, name)


def canonical_agent(value: str, kind: str = "agent") -> str:
    """An agent (or a policy row's subject or role, named `kind` in errors): NFKC,
    lowercased, checked."""
    return _identifier(kind, value)


def canonical_action(value: str) -> str:
    """An action: NFKC, lowercased, checked."""
    return _identifier("action", value)


def canonical_resource(value: str) -> str:
    """A resource: NFKC, case kept (vendor names are case-sensitive), checked; no `.` or
    `..` segment."""
    name = _check("resource", value, value if value.isascii() else _nfkc("resource", value))
    if "." in name and any(part in (".", "..") for part in name.split("/")):
        raise InvalidNameError(
            f"resource {value!r} has a '.' or '..' path segment; name the resource directly"
        )
    return name


def canonical_pattern(value: str) -> str:
    """A policy row's resource pattern: NFKC with case kept, like the resources it
    matches; its `*`, `:name` and regex syntax keep their meaning."""
    return _check("resource pattern", value, _nfkc("resource pattern", value))


def canonical_identity(value: str, kind: str = "identity") -> str:
    """A person's or service's identity (`user:bob`, `svc:bot`): NFKC, lowercased, checked.

    Used at every entry point that names someone (a run's `started_by`, an approver from
    the CLI's `--as`, the console's session, an approval decision, a policy's `g2`
    member): `user:Bob` is `user:bob`, and `user:bob ` is refused, so nobody is two people.
    """
    return _identifier(kind, value)


def identity_key(value: str) -> str:
    """The identity `value` names, for comparison only: never raises.

    Folds what `canonical_identity` folds and strips surrounding whitespace, so a value
    recorded before identities were canonical (`user:Bob `) still compares equal to
    `user:bob` when separation of duties is checked.
    """
    name = unicodedata.normalize("NFKC", value[: MAX_NAME_LENGTH * 18]).strip()
    for _ in range(_FOLD_ROUNDS):
        folded = unicodedata.normalize("NFKC", name.lower()).strip()
        if folded == name:
            break
        name = folded
    return name
