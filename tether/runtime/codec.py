"""Sealed payloads: a Temporal payload codec that encrypts every payload (AES-256-GCM,
with key ids and rotation) and claim-checks large ones into the content-addressed store.

    codec = payload_codec(settings, ledger)            # None when payload_codec is off
    client = await Client.connect(addr, plugins=[TetherPlugin(app, payload_codec=codec)])

Encoding a payload serialises it whole (metadata and data), seals the bytes with the key
ring's current key and answers a payload of encoding `binary/tether-sealed` whose
metadata names the key id (`tether-key-id`): the Temporal server and its UI see neither the
content nor its type. A sealed payload above `payload_claim_check_bytes` goes to the
ledger's content store (still sealed) and history holds a `json/tether-claim-check`
payload with its digest instead. Decoding undoes both; a payload of any other encoding
(one written before sealing was turned on) passes through unchanged, so old histories
still replay.

Errors: an unknown key id, an altered payload or a claim check the store does not hold
raise `CodecError` naming the key id or digest (a worker then fails the task, which
retries once the key is configured). Claim-check writes are idempotent by digest.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.client import WorkflowHistory
from temporalio.converter import PayloadCodec

from tether.core.config import Settings
from tether.core.db import make_engine
from tether.core.sealing import KeyRing, load_key_ring
from tether.errors import CodecError
from tether.verification.ledger import Ledger

SEALED = b"binary/tether-sealed"
CLAIM_CHECK = b"json/tether-claim-check"
KEY_ID = "tether-key-id"
_PAYLOAD = Payload.DESCRIPTOR.full_name


class ContentStore(Protocol):
    """Where claim-checked payloads live: `Ledger`'s content-addressed store."""

    def put_content(self, value: str) -> str: ...

    def blob(self, key: str) -> object: ...


class SealingCodec(PayloadCodec):
    """Seals and claim-checks payloads (see the module)."""

    def __init__(
        self, keys: KeyRing, store: ContentStore | None = None, claim_check_bytes: int = 0
    ) -> None:
        self.keys = keys
        self.store = store
        self.claim_check_bytes = claim_check_bytes

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [await self._encode(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [await self._decode(p) for p in payloads]

    async def _encode(self, payload: Payload) -> Payload:
        key_id, sealed = self.keys.seal(payload.SerializeToString())
        out = Payload(metadata={"encoding": SEALED, KEY_ID: key_id.encode()}, data=sealed)
        if self.store is None or not self.claim_check_bytes:
            return out
        size = out.ByteSize()
        if size <= self.claim_check_bytes:
            return out
        text = base64.b64encode(out.SerializeToString()).decode()
        ref = await asyncio.to_thread(self.store.put_content, text)
        return Payload(
            metadata={"encoding": CLAIM_CHECK},
            data=json.dumps({"ref": ref, "size": size}).encode(),
        )

    async def _decode(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") == CLAIM_CHECK:
            payload = await self.claimed(payload)
        if payload.metadata.get("encoding") != SEALED:
            return payload
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        return Payload.FromString(self.keys.open(key_id, payload.data))

    async def claimed(self, payload: Payload) -> Payload:
        """The sealed payload a claim check refers to (fetched from the store)."""
        try:
            ref = str(json.loads(payload.data)["ref"])
        except (ValueError, KeyError, TypeError):
            raise CodecError(
                f"claim-check payload {payload.data[:80]!r} names no reference; it was altered"
            ) from None
        if self.store is None:
            raise CodecError(
                f"payload {ref!r} is claim-checked into the content store, which this process "
                "does not reach; run with the ledger's database_url, or export a bundle"
            )
        try:
            text = await asyncio.to_thread(self.store.blob, ref)
        except KeyError:
            raise CodecError(
                f"claim-checked payload {ref!r} is not in the content store; check "
                "database_url names the ledger the workers write"
            ) from None
        except ValueError as exc:  # the store's digest check
            raise CodecError(str(exc)) from None
        if not isinstance(text, str):
            raise CodecError(f"claim-checked payload {ref!r} is not a stored payload")
        return Payload.FromString(base64.b64decode(text))


class ChainCodec(PayloadCodec):
    """Two codecs in turn: `first` encodes first and decodes last."""

    def __init__(self, first: PayloadCodec, then: PayloadCodec) -> None:
        self.first = first
        self.then = then

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return await self.then.encode(await self.first.encode(payloads))

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return await self.first.decode(await self.then.decode(payloads))


def sealing_of(codec: PayloadCodec | None) -> SealingCodec | None:
    """The `SealingCodec` in `codec` (itself, or a part of a chain), or None."""
    if isinstance(codec, SealingCodec) or codec is None:
        return codec
    if isinstance(codec, ChainCodec):
        return sealing_of(codec.then) or sealing_of(codec.first)
    return None


class LedgerStore:
    """The content store of the ledger at `database_url`, opened on first use (a client
    that never meets a large payload never opens the database)."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._ledger: Ledger | None = None
        self._lock = threading.Lock()

    def _open(self) -> Ledger:
        with self._lock:
            if self._ledger is None:
                self._ledger = Ledger(make_engine(self.database_url))
            return self._ledger

    def put_content(self, value: str) -> str:
        return self._open().put_content(value)

    def blob(self, key: str) -> object:
        return self._open().blob(key)


def payload_codec(settings: Settings, store: ContentStore | None = None) -> SealingCodec | None:
    """The codec `settings` ask for (keys from `payload_keys` and `payload_key_file`, the
    file created with a fresh key when there is none; claim checks into `store`, else the
    ledger of `database_url`), or None when sealing is off."""
    if not settings.payload_codec:
        return None
    keys = load_key_ring(
        {k: v.get_secret_value() for k, v in settings.payload_keys.items()},
        settings.payload_key_file,
        settings.payload_key_current,
        create=True,
    )
    if store is None:
        store = LedgerStore(settings.database_url)
    return SealingCodec(keys, store, settings.payload_claim_check_bytes)


PayloadFn = Callable[[Payload], Awaitable[Payload]]


async def map_payloads(message: Message, fn: PayloadFn) -> None:
    """Replace, in place, every payload in `message` (at any depth: inputs, results,
    failures' details, memos, markers, headers) by `fn` of it."""
    for field, value in message.ListFields():
        kind = field.message_type
        if kind is None:
            continue
        if kind.GetOptions().map_entry:
            inner = kind.fields_by_name["value"].message_type
            if inner is None:
                continue
            for key in list(value):
                if inner.full_name == _PAYLOAD:
                    value[key].CopyFrom(await fn(value[key]))
                else:
                    await map_payloads(value[key], fn)
        elif kind.full_name == _PAYLOAD:
            if field.is_repeated:
                new = [await fn(p) for p in value]
                del value[:]
                value.extend(new)
            else:
                value.CopyFrom(await fn(value))
        elif field.is_repeated:
            for item in value:
                await map_payloads(item, fn)
        else:
            await map_payloads(value, fn)


async def map_history(history: WorkflowHistory, fn: PayloadFn) -> WorkflowHistory:
    """A copy of `history` with every payload replaced by `fn` of it."""
    events = []
    for event in history.events:
        copy = type(event)()
        copy.CopyFrom(event)
        await map_payloads(copy, fn)
        events.append(copy)
    return WorkflowHistory(history.workflow_id, events)


async def is_sealed(history: WorkflowHistory) -> bool:
    """Whether `history` holds a sealed or claim-checked payload."""
    found = False

    async def look(payload: Payload) -> Payload:
        nonlocal found
        found = found or payload.metadata.get("encoding") in (SEALED, CLAIM_CHECK)
        return payload

    await map_history(history, look)
    return found


async def decode_history(history: WorkflowHistory, codec: PayloadCodec | None) -> WorkflowHistory:
    """`history` with every payload decoded by `codec` (as it is when None)."""
    if codec is None:
        return history

    async def decode(payload: Payload) -> Payload:
        return (await codec.decode([payload]))[0]

    return await map_history(history, decode)


async def resolve_claim_checks(
    history: WorkflowHistory, codec: PayloadCodec | None
) -> WorkflowHistory:
    """`history` with every claim check replaced by the sealed payload it refers to: still
    sealed, but self-contained (what an evidence bundle carries)."""
    sealing = sealing_of(codec)
    if sealing is None:
        return history

    async def resolve(payload: Payload) -> Payload:
        if payload.metadata.get("encoding") == CLAIM_CHECK:
            return await sealing.claimed(payload)
        return payload

    return await map_history(history, resolve)
