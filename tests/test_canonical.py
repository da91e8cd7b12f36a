"""The hand-written canonical JSON of events is byte for byte json.dumps' canonical form."""

from __future__ import annotations

import hashlib

from hypothesis import given
from hypothesis import strategies as st
from pydantic import JsonValue

from tether.verification.canonical import HASHED, canonical_event, canonical_row
from tether.verification.events import canonical_json
from tether.verification.ledger import event_hash
from tether.verification.pg_append import split_canonical


@given(
    texts=st.lists(st.text(), min_size=15, max_size=15),
    seq=st.integers(min_value=1, max_value=2**62),
    step=st.none() | st.integers(min_value=0, max_value=10**6),
)
def test_canonical_event_matches_json_dumps(texts: list[str], seq: int, step: int | None) -> None:
    names = [n for n in HASHED if n not in ("seq", "step")]
    fields: dict[str, JsonValue] = dict(zip(names, texts, strict=True))
    fields["seq"], fields["step"] = seq, step
    assert canonical_event(fields) == canonical_json(fields)
    assert canonical_row([fields[n] for n in HASHED] + ["the hash"]) == canonical_json(fields)
    assert event_hash(fields) == hashlib.sha256(canonical_json(fields).encode()).hexdigest()
    # the pieces PostgreSQL assembles around prev_hash (always hex) and seq rebuild the text
    fields["prev_hash"] = hashlib.sha256(str(texts).encode()).hexdigest()
    parts = split_canonical(fields)
    rebuilt = parts["before_prev"] + str(fields["prev_hash"]) + parts["before_seq"]
    rebuilt += str(seq) + parts["after_seq"]
    assert rebuilt == canonical_json(fields)


def test_hashed_names_are_sorted_and_complete() -> None:
    assert list(HASHED) == sorted(HASHED)
    assert len(HASHED) == 17
