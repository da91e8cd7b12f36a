"""Verification plane: the hash-linked ledger and its verification.

A plain library: no Temporal import.
"""

from tether.verification.events import GENESIS, LedgerEvent, RecordedEvent, canonical_json, digest
from tether.verification.ledger import Ledger, VerifyReport

__all__ = [
    "GENESIS",
    "Ledger",
    "LedgerEvent",
    "RecordedEvent",
    "VerifyReport",
    "canonical_json",
    "digest",
]
