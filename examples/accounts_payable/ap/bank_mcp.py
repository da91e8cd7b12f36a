"""The demo bank as an MCP server (the `mcp` SDK's `MCPServer`), over stdio or HTTP.

    python bank_mcp.py --db bank.db                 # stdio (the worker starts it per call)
    python bank_mcp.py --db bank.db --port 8765     # streamable HTTP on 127.0.0.1:8765/mcp

Tools: `pay_vendor` (writes, not destructive, honours the idempotency key Tether sends in
`_meta` as `tether/idempotency_key`: a retried payment returns the first receipt and pays
nothing twice), `balance` (read-only), `update_bank_details` (destructive). Payments and
every call the server saw (tool, key) are kept in a SQLite file, so separate processes
(one per stdio call) share them. `BANK_MCP_STALL_SECONDS` makes the first attempt of each
payment stall after paying (its answer is lost to a timeout; the retry must not pay again).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sqlite3
import time
from collections.abc import Mapping
from typing import Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.types import ToolAnnotations
from pydantic import BaseModel

KEY_META = "tether/idempotency_key"
server = MCPServer("bank", instructions="The accounts-payable demo bank.")
DB = {"path": os.environ.get("BANK_MCP_DB", "bank-mcp.db")}


class Receipt(BaseModel):
    payment_id: str
    vendor: str
    amount: float
    invoice_id: str
    replayed: bool = False
    """True when the key had paid already: this is the first call's receipt."""


class Balance(BaseModel):
    vendor: str
    paid: float


class BankChange(BaseModel):
    vendor: str
    iban: str


def _db() -> sqlite3.Connection:
    conn = sqlite3.connect(DB["path"], timeout=30, isolation_level=None)
    conn.execute(
        "CREATE TABLE IF NOT EXISTS payments (key TEXT PRIMARY KEY, payment_id TEXT, "
        "vendor TEXT, amount REAL, invoice_id TEXT)"
    )
    conn.execute("CREATE TABLE IF NOT EXISTS calls (tool TEXT, key TEXT, at REAL)")
    return conn


def _key(ctx: Context[Any, Any], tool: str) -> str:
    meta: Mapping[str, Any] = ctx.request_context.meta or {}
    key = str(meta.get(KEY_META, ""))
    with _db() as conn:
        conn.execute("INSERT INTO calls VALUES (?, ?, ?)", (tool, key, time.time()))
    return key


@server.tool(
    annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True)
)
async def pay_vendor(
    vendor: str, amount: float, invoice_id: str, ctx: Context[Any, Any]
) -> Receipt:
    """Pay `amount` US dollars to `vendor` for `invoice_id`, once per idempotency key."""
    key = _key(ctx, "pay_vendor")
    if not key:
        raise ValueError(f"send the payment's idempotency key in _meta[{KEY_META!r}]")
    conn = _db()
    conn.execute("BEGIN IMMEDIATE")
    row = conn.execute(
        "SELECT payment_id, vendor, amount, invoice_id FROM payments WHERE key = ?", (key,)
    ).fetchone()
    if row is not None:
        conn.execute("COMMIT")
        return Receipt(
            payment_id=row[0], vendor=row[1], amount=row[2], invoice_id=row[3], replayed=True
        )
    payment_id = "pay-" + hashlib.sha256(key.encode()).hexdigest()[:12]
    conn.execute(
        "INSERT INTO payments VALUES (?, ?, ?, ?, ?)", (key, payment_id, vendor, amount, invoice_id)
    )
    conn.execute("COMMIT")
    stall = float(os.environ.get("BANK_MCP_STALL_SECONDS", "0") or 0)
    if stall:
        await anyio.sleep(stall)  # the answer of this attempt is lost to the caller's timeout
    return Receipt(payment_id=payment_id, vendor=vendor, amount=amount, invoice_id=invoice_id)


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
async def balance(vendor: str, ctx: Context[Any, Any]) -> Balance:
    """What `vendor` has been paid so far."""
    _key(ctx, "balance")
    with _db() as conn:
        row = conn.execute(
            "SELECT SUM(amount) FROM payments WHERE vendor = ?", (vendor,)
        ).fetchone()
    return Balance(vendor=vendor, paid=float(row[0] or 0.0))


@server.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=True))
async def update_bank_details(vendor: str, iban: str, ctx: Context[Any, Any]) -> BankChange:
    """Replace the bank account `vendor` is paid to."""
    _key(ctx, "update_bank_details")
    return BankChange(vendor=vendor, iban=iban)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default=DB["path"], help="SQLite file of payments and calls")
    parser.add_argument("--port", type=int, default=0, help="serve HTTP here; 0: stdio")
    args = parser.parse_args()
    DB["path"] = args.db
    _db().close()  # the tables exist before the first call
    if args.port:
        server.run("streamable-http", host="127.0.0.1", port=args.port)
    else:
        server.run("stdio")


if __name__ == "__main__":
    main()
