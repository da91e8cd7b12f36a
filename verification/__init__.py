"""Verification plane: the hash-linked ledger and its verification.

A plain library: no Temporal import.
"""

from verification.ledger import (
    GENESIS,
    Ledger,
    LedgerEvent,
    RecordedEvent,
    VerifyReport,
    canonical_json,
    digest,
)

__all__ = [
    "GENESIS",
    "Ledger",
    "LedgerEvent",
    "RecordedEvent",
    "VerifyReport",
    "canonical_json",
    "digest",
]
