"""The keys an auditor pins: the shared `--trust-key` / `--trust-file` / `--witness-key`
options of every verifying command, and `tether audit key`, which prints the signing
key's id and public key for whoever signs to hand to auditors out of band."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from tether.cli.common import _settings, friendly, out
from tether.core.config import Settings
from tether.errors import TetherError
from tether.verification.checkpoint import key_id, load_or_create_key
from tether.verification.trust import Trust

TrustKeys = Annotated[
    list[str] | None,
    typer.Option(
        "--trust-key",
        help="A checkpoint key to accept: key id or public key (repeatable); adds to "
        "audit_trusted_keys.",
    ),
]
TrustFiles = Annotated[
    list[Path] | None,
    typer.Option("--trust-file", help="A trust file of pinned keys (repeatable)."),
]
WitnessKeys = Annotated[
    list[str] | None,
    typer.Option(
        "--witness-key",
        help="Require a cosignature by this witness key (repeatable); adds to audit_witness_keys.",
    ),
]


def pinned(
    settings: Settings,
    keys: list[str] | None,
    files: list[Path] | None,
    witnesses: list[str] | None = None,
) -> Trust:
    """The keys this verification trusts: the options plus the settings; TetherError
    (exit 2) when no checkpoint key is pinned."""
    paths = [*(files or [])]
    if settings.audit_trust_file is not None:
        paths.append(settings.audit_trust_file)
    trust = Trust.gather(
        [*settings.audit_trusted_keys, *(keys or [])],
        paths,
        [*settings.audit_witness_keys, *(witnesses or [])],
    )
    trust.require()
    return trust


@friendly
def audit_key(
    witness_key: Annotated[
        Path | None, typer.Option(help="Print this witness key instead of checkpoint_key.")
    ] = None,
) -> None:
    """Print the signing key's trust-file entry (key id, public key) for auditors to pin."""
    settings = _settings()
    path = witness_key or settings.checkpoint_key
    if not path.is_file():
        raise TetherError(
            f"no signing key at {str(path)!r}; sign a checkpoint first ('tether audit "
            "checkpoint') or name the key file"
        )
    private = load_or_create_key(path)
    public = private.public_key().public_bytes_raw().hex()
    entry = {
        "key_id": key_id(private.public_key()),
        "public_key": public,
        "role": "witness" if witness_key else "log",
    }
    out.print(json.dumps(entry))
