"""Exporting a workflow's evidence bundle: the ledger's events plus its Temporal history.

`tether audit export` and the console's download call `export_bundle`; the bundle itself
is built and verified by `verification.bundle`.
"""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from temporalio.client import Client
from temporalio.service import RPCError

from tether.errors import TetherError
from tether.runtime.codec import resolve_claim_checks
from tether.verification.bundle import Bundle, build_bundle
from tether.verification.ledger import Ledger


async def export_bundle(
    client: Client, ledger: Ledger, workflow_id: str, key: Ed25519PrivateKey
) -> Bundle:
    """The signed bundle of `workflow_id`; TetherError naming the id when it cannot be made."""
    if not ledger.events(workflow_id):
        raise TetherError(f"the ledger has no events for workflow {workflow_id!r}; check the id")
    try:
        history = await client.get_workflow_handle(workflow_id).fetch_history()
    except RPCError as exc:
        raise TetherError(f"cannot fetch the history of {workflow_id!r}: {exc.message}") from None
    # Claim-checked payloads are put back (still sealed): the bundle verifies offline.
    history = await resolve_claim_checks(history, client.data_converter.payload_codec)
    return build_bundle(ledger, workflow_id, history.to_json(), key)
