"""The canonical JSON an event's hash covers, written out directly.

Byte for byte what `json.dumps(fields, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)` gives for the same fields (a property test holds it to that), but
without building and sorting a dict: verification hashes every row of the ledger.
"""

from __future__ import annotations

import operator
from collections.abc import Collection, Mapping, Sequence
from json import encoder
from typing import Any

HASHED = (
    "action", "actor", "agent", "idempotency_key", "kind", "outcome", "payload",
    "policy_version", "prev_hash", "recorded_at", "resource", "rule", "run_id", "seq", "step",
    "tier", "workflow_id",
)  # fmt: skip
"""The fields an event's hash covers, in the sorted order of their canonical JSON."""

_INTS = frozenset({"seq", "step"})
_quote = encoder.encode_basestring  # what json.dumps uses when ensure_ascii=False


def canonical_event(fields: Mapping[str, Any], raw: Collection[str] = ()) -> str:
    """Canonical JSON of the HASHED fields; names in `raw` are inserted verbatim."""
    parts = []
    for name in HASHED:
        value = fields[name]
        if name in raw:
            rendered = str(value)
        elif name in _INTS:
            rendered = "null" if value is None else str(int(value))
        else:
            rendered = _quote(value)
        parts.append(f'"{name}":{rendered}')
    return "{" + ",".join(parts) + "}"


def _int_or_null(value: int | None) -> str:
    return "null" if value is None else str(int(value))


_ROW_TEMPLATE = "{" + ",".join(f'"{name}":%s' for name in HASHED) + "}"
_RENDER = tuple(_int_or_null if name in _INTS else _quote for name in HASHED)


def canonical_row(values: Sequence[Any]) -> str:
    """`canonical_event` of a row whose first values are the HASHED fields in order (the
    rest is ignored): the same text, without building a mapping — the verifier's path."""
    return _ROW_TEMPLATE % tuple(map(operator.call, _RENDER, values))
