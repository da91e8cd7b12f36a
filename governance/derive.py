"""A governed step's action, resource and policy context, derived from its tool.

A tool declares its action, a resource template over its arguments (`vendor/{vendor}`)
and which argument fields go into the policy context, by name and type (all of them when
it names none). `derive_step` computes the decision request from that declaration and the
arguments, and says what is wrong with an author's claims:

- an explicit action or resource that differs from the tool's (canonically compared) is
  refused, never used;
- an author may add context keys, never set one the arguments carry to another value.

`expected_context` is the tool side of the same rule: the context a recorded decision
must have had for these arguments, so the tool can check its digest.

Pure functions, deterministic, no I/O.
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import JsonValue

from tether.errors import InvalidNameError
from tether.governance.names import canonical_action, canonical_resource

MISDECLARED_RULE = "misdeclared-step"
"""The rule of a decision refused because `act()` was told another action, resource or
context than the tool's declaration and arguments give."""

CONTEXT_TYPES: dict[type, tuple[type, ...]] = {
    str: (str,),
    int: (int,),
    float: (int, float),
    bool: (bool,),
}
"""Types a context field may declare, and the JSON values each accepts."""


def template_fields(template: str) -> list[str]:
    """The argument fields a resource template names (`vendor/{vendor}` -> ['vendor'])."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def check_template(what: str, template: str, fields: list[str]) -> None:
    """TypeError unless every field the resource template names is an argument field."""
    missing = [f for f in template_fields(template) if f not in fields]
    if missing:
        raise TypeError(
            f"{what}: resource {template!r} names {missing[0]!r}, which is not an argument "
            f"field; name one of {', '.join(fields)}"
        )


def declared_context(
    what: str, declared: Mapping[str, type] | Sequence[str] | None, hints: Mapping[str, object]
) -> tuple[tuple[str, type], ...] | None:
    """A tool's context fields (`@tool(context=...)`), each an argument field (`hints`:
    the argument fields' annotations) of a compatible type; TypeError naming the bad one."""
    if declared is None:
        return None
    pairs = (
        list(declared.items())
        if isinstance(declared, Mapping)
        else [(n, hints.get(n, object)) for n in declared]
    )
    checked: list[tuple[str, type]] = []
    for field, kind in pairs:
        if field not in hints:
            raise TypeError(
                f"{what}: context field {field!r} is not an argument field; "
                f"name one of {', '.join(hints)}"
            )
        if isinstance(declared, Mapping) and kind is not object and kind not in CONTEXT_TYPES:
            raise TypeError(
                f"{what}: context field {field!r} is declared {kind!r}; declare one of "
                f"{', '.join(t.__name__ for t in CONTEXT_TYPES)} or object"
            )
        kind = kind if isinstance(kind, type) and kind in CONTEXT_TYPES else object
        annotation = hints[field]
        clash = kind in CONTEXT_TYPES and annotation in CONTEXT_TYPES and kind is not annotation
        if clash and not (kind is float and annotation is int):
            raise TypeError(
                f"{what}: context field {field!r} is declared {kind.__name__}, but the "
                f"argument is {getattr(annotation, '__name__', annotation)}; declare it alike"
            )
        checked.append((field, kind))
    return tuple(checked)


def render_resource(template: str, args: Mapping[str, JsonValue]) -> str:
    """The resource of a call: `template` filled in from the arguments."""
    return template.format_map(dict(args))


def type_ok(value: JsonValue, declared: type) -> bool:
    """Whether a JSON value is of a declared context type (a bool is never a number)."""
    accepted = CONTEXT_TYPES.get(declared)
    if accepted is None:
        return True
    if isinstance(value, bool) and declared is not bool:
        return False
    return isinstance(value, accepted)


@dataclass(frozen=True)
class DerivedStep:
    action: str
    resource: str
    context: dict[str, JsonValue]
    problem: str = ""
    """Why the author's claims are refused; empty when they agree with the tool."""


def same_name(kind: str, claimed: str, derived: str) -> bool:
    """Whether two actions (`kind` "action") or resources are one name canonically."""
    if claimed == derived:
        return True
    canon = canonical_action if kind == "action" else canonical_resource
    try:
        return canon(claimed) == canon(derived)
    except InvalidNameError:
        return False


def _equal(a: JsonValue, b: JsonValue) -> bool:
    """JSON equality where a bool is never a number (True is not 1) and 900 is 900.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def derive_step(
    tool: str,
    action: str,
    resource_template: str,
    context_fields: Mapping[str, type] | None,
    args: Mapping[str, JsonValue],
    *,
    claimed_action: str | None = None,
    claimed_resource: str | None = None,
    extra_context: Mapping[str, JsonValue] | None = None,
) -> DerivedStep:
    """The decision request of one call of `tool`, and what is wrong with the claims."""
    try:
        resource = render_resource(resource_template, args)
    except (KeyError, IndexError, ValueError) as exc:
        return DerivedStep(
            action,
            resource_template,
            {},
            f"tool {tool!r}: its resource {resource_template!r} cannot be filled in from the "
            f"arguments ({exc!r}); give the arguments it names",
        )
    fields = context_fields if context_fields is not None else dict.fromkeys(args, object)
    context: dict[str, JsonValue] = {}
    for name, declared in fields.items():
        value = args.get(name)
        if not type_ok(value, declared):
            return DerivedStep(
                action,
                resource,
                {},
                f"tool {tool!r}: context field {name!r} is {value!r}, not a "
                f"{declared.__name__}; fix the argument",
            )
        context[name] = value
    problem = ""
    if claimed_action is not None and not same_name("action", claimed_action, action):
        problem = (
            f"act() was given the action {claimed_action!r}, but tool {tool!r} declares "
            f"{action!r}; leave the action out (the tool's declaration decides it)"
        )
    elif claimed_resource is not None and not same_name("resource", claimed_resource, resource):
        problem = (
            f"act() was given the resource {claimed_resource!r}, but tool {tool!r} and its "
            f"arguments give {resource!r}; leave the resource out (the arguments decide it)"
        )
    for key, value in (extra_context or {}).items():
        if key in args and not _equal(value, args[key]):
            problem = problem or (
                f"act() context {key}={value!r} contradicts the argument {key}={args[key]!r} "
                f"of tool {tool!r}; the arguments decide the context, drop {key!r}"
            )
        elif key not in context:
            context[key] = value
    return DerivedStep(action, resource, context, problem)


def expected_context(
    context_fields: Mapping[str, type] | None,
    args: Mapping[str, JsonValue],
    recorded: Mapping[str, JsonValue],
) -> dict[str, JsonValue]:
    """The context a decision on `args` must carry: the tool's fields from the arguments,
    plus the recorded keys an author added (a key the arguments carry takes their value)."""
    fields = context_fields if context_fields is not None else dict.fromkeys(args, object)
    context: dict[str, JsonValue] = {name: args.get(name) for name in fields}
    for key, value in recorded.items():
        if key not in context:
            context[key] = args.get(key, value)
    return context
