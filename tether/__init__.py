"""Tether: agent orchestration and governance on Temporal.

This package holds configuration, database wiring, the approving service, the CLI and
the local dev stack; the planes live in `workflows`, `activities`, `governance` and
`verification`.
"""

from tether.config import Settings

__all__ = ["Settings"]
