"""`tether witness`: a checkpoint witness over HTTP (see `verification.witness`).

    GET  /v1/head/{log_key_id}  → {"size": n, "root": hex}   the newest head cosigned
    POST /v1/cosign             CosignRequest → Cosignature  409 {"refused": why}

Run it where the log's operator has no access (another team, another account): its key
and its state file are what make its cosignature worth pinning. It reads no tether.toml:
everything it needs is on its command line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from tether.cli.common import friendly, out
from tether.errors import TetherError
from tether.verification.checkpoint import Cosignature, key_id, load_or_create_key
from tether.verification.trust import Trust
from tether.verification.witness import CosignRequest, Witness, WitnessRefused


def witness_app(witness: Witness) -> FastAPI:
    api = FastAPI(title="Tether witness", docs_url=None, redoc_url=None, openapi_url=None)

    @api.get("/v1/head/{log_key_id}")
    async def head(log_key_id: str) -> dict[str, int | str]:
        seen = witness.head(log_key_id)
        return {"size": seen.size, "root": seen.root} if seen else {"size": 0, "root": ""}

    @api.post("/v1/cosign", response_model=None)
    async def cosign(request: CosignRequest) -> Cosignature | JSONResponse:
        try:
            return await run_in_threadpool(witness.cosign, request)
        except WitnessRefused as exc:
            return JSONResponse({"refused": str(exc)}, status_code=409)

    @api.get("/v1/key")
    async def key() -> dict[str, str]:
        public = witness.key.public_key()
        return {"key_id": key_id(public), "public_key": public.public_bytes_raw().hex()}

    return api


@friendly
def witness(
    key: Annotated[Path, typer.Option(help="The witness's Ed25519 key (created when absent).")],
    state: Annotated[Path, typer.Option(help="Where it keeps the last tree head of each log.")],
    log_key: Annotated[
        list[str] | None,
        typer.Option(help="A log's checkpoint key it accepts (key id or public key; repeat)."),
    ] = None,
    log_trust_file: Annotated[
        Path | None, typer.Option(help="A trust file of the logs' keys (role log).")
    ] = None,
    host: Annotated[str, typer.Option(help="Bind address.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.")] = 8470,
) -> None:
    """Serve a witness: cosign a log's checkpoint only when it consistently extends the last
    one seen (never a fork, never a shrunk tree)."""
    import uvicorn

    logs = Trust.gather(log_key or [], [log_trust_file] if log_trust_file else [])
    if not logs.of("log"):
        raise TetherError(
            "a witness cosigns only for logs it knows: pass --log-key with the log's "
            "checkpoint key ('tether audit key' where the log runs), or --log-trust-file"
        )
    served = Witness(load_or_create_key(key), state, logs)
    public = served.key.public_key()
    out.print(
        f"witness {key_id(public)} (public key {public.public_bytes_raw().hex()}) on "
        f"http://{host}:{port}"
    )
    uvicorn.run(witness_app(served), host=host, port=port, log_level="warning")
