"""Payload keys: AES-256-GCM keys with ids, which seal Temporal payloads (see
`tether.runtime.codec`).

A `KeyRing` holds every known key by id and names the current one: `seal` encrypts with
the current key and says which; `open` decrypts with the key the sealed bytes name, so a
payload sealed before a rotation still opens after it. An unknown key id, or bytes that
were altered or sealed with another key under that id, raise `CodecError` naming the id.

Keys come from settings (`payload_keys`: id to 64 hex digits) and from a key file
(`payload_key_file`), never from the ledger. The file holds one key per line,
`<id> <64 hex digits>` (blank lines and `#` comments skipped); the current key is
`payload_key_current` when set, else the file's last line, else the last settings key.
Rotating is appending a line: `echo "k2 $(openssl rand -hex 32)" >> payload.keys`.
`load_key_ring(..., create=True)` writes a file with one fresh key (mode 0600) when there
is no key at all, as the dev stack does for its other keys.

Plain functions over the file system and `cryptography`; no Temporal import.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from tether.errors import CodecError

KEY_BYTES = 32
NONCE_BYTES = 12
_KEY_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_AAD = b"tether-sealed/v1:"
"""Bound into every ciphertext with the key id, so bytes moved under another id fail."""


class KeyRing:
    """Every known payload key by id, and the current one (see the module)."""

    def __init__(self, keys: Mapping[str, bytes], current: str) -> None:
        for key_id, key in keys.items():
            if not _KEY_ID.match(key_id):
                raise CodecError(
                    f"payload key id {key_id!r} is not usable; use 1-64 letters, digits, "
                    "'.', '_' or '-'"
                )
            if len(key) != KEY_BYTES:
                raise CodecError(
                    f"payload key {key_id!r} has {len(key)} bytes; an AES-256 key has 32 "
                    "(64 hex digits, e.g. from 'openssl rand -hex 32')"
                )
        if current not in keys:
            raise CodecError(
                f"the current payload key {current!r} is not among the known keys "
                f"{sorted(keys)!r}; add it or set payload_key_current to one of them"
            )
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self.current = current

    @property
    def ids(self) -> list[str]:
        return sorted(self._ciphers)

    def seal(self, plaintext: bytes) -> tuple[str, bytes]:
        """(the current key id, nonce + ciphertext with its tag) of `plaintext`."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.current].encrypt(nonce, plaintext, _AAD + self.current.encode())
        return self.current, nonce + sealed

    def open(self, key_id: str, sealed: bytes) -> bytes:
        """The plaintext `seal` gave `sealed` under `key_id`; CodecError naming the id when
        the key is unknown or the bytes do not open with it."""
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise CodecError(
                f"payload sealed with key id {key_id!r}, which is not a known key (known: "
                f"{self.ids!r}); add that key to payload_key_file or payload_keys"
            )
        try:
            aad = _AAD + key_id.encode()
            return cipher.decrypt(sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], aad)
        except InvalidTag:
            raise CodecError(
                f"payload sealed with key id {key_id!r} does not open with that key: it was "
                "altered, or the key under that id changed; restore the original key"
            ) from None


def parse_key(key_id: str, text: str) -> bytes:
    """The key bytes of `text` (64 hex digits); CodecError naming `key_id` otherwise."""
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise CodecError(
            f"payload key {key_id!r} is not hex; write 64 hex digits, e.g. from "
            "'openssl rand -hex 32'"
        ) from None
    if len(key) != KEY_BYTES:
        raise CodecError(
            f"payload key {key_id!r} has {len(key)} bytes; an AES-256 key has 32 (64 hex digits)"
        )
    return key


def read_key_file(path: Path) -> dict[str, bytes]:
    """The keys of a key file, in file order; CodecError naming the file and line."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise CodecError(f"cannot read payload key file {str(path)!r}: {exc.strerror}") from None
    keys: dict[str, bytes] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2:
            raise CodecError(
                f"payload key file {str(path)!r} line {number} is not '<id> <64 hex digits>'"
            )
        key_id, hex_key = parts
        if key_id in keys:
            raise CodecError(
                f"payload key file {str(path)!r} names key id {key_id!r} twice (line "
                f"{number}); a key id names one key forever"
            )
        keys[key_id] = parse_key(key_id, hex_key)
    return keys


def create_key_file(path: Path, key_id: str = "k1") -> None:
    """A key file at `path` holding one fresh key, readable by its owner only; written
    beside it first and linked into place, so a process racing to create it too never
    reads half a file (FileExistsError: it lost the race, the file is whole)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".payload-keys-")
    try:
        with os.fdopen(fd, "w") as out:  # mkstemp: mode 0600
            out.write(
                "# Tether payload keys: '<id> <64 hex digits>'; the last line seals new "
                "payloads.\n# Rotate by appending a line; keep the old ones so old payloads "
                f"still open.\n{key_id} {secrets.token_hex(KEY_BYTES)}\n"
            )
        os.link(temp, path)
    finally:
        os.unlink(temp)


def load_key_ring(
    settings_keys: Mapping[str, str],
    key_file: Path | None,
    current: str = "",
    *,
    create: bool = False,
) -> KeyRing:
    """The key ring of settings' keys and `key_file`'s (a file key may not reuse a settings
    key's id); with `create`, a missing file is created with one fresh key when there is no
    key at all."""
    keys = {key_id: parse_key(key_id, text) for key_id, text in settings_keys.items()}
    if key_file is not None:
        if not key_file.exists() and create and not keys:
            # FileExistsError: another process of this stack created it first.
            with contextlib.suppress(FileExistsError):
                create_key_file(key_file)
        if key_file.exists():
            for key_id, key in read_key_file(key_file).items():
                if key_id in keys and keys[key_id] != key:
                    raise CodecError(
                        f"payload key id {key_id!r} is both in payload_keys and in "
                        f"{str(key_file)!r} with different keys; give one of them another id"
                    )
                keys[key_id] = key
    if not keys:
        where = f"payload_key_file {str(key_file)!r}" if key_file is not None else "settings"
        raise CodecError(
            f"payload sealing is on but {where} holds no key; create one with "
            "'echo \"k1 $(openssl rand -hex 32)\" > <file>' or set TETHER_PAYLOAD_KEYS"
        )
    return KeyRing(keys, current or list(keys)[-1])
