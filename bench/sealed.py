"""The sealed-payloads variant of `python -m bench workflow`: a client whose every payload
passes through Tether's payload codec (AES-256-GCM, `tether.runtime.codec`), with the
same plugin and interceptors as the client it is made from.

Its throughput against the governed variant's (codec off), measured in the same rounds,
is what sealing costs; payloads of the benchmark stay below the claim-check threshold,
so this is the cost of encrypting and decrypting every payload.
"""

from __future__ import annotations

from pathlib import Path

from temporalio.client import Client

from tether.core.config import Settings
from tether.runtime.codec import payload_codec
from tether.runtime.plugin import data_converter

CODEC_TARGET_RATIO = 0.95
"""Governed throughput with sealed payloads must be at least this share of without."""


def sealed_client(client: Client, settings: Settings, key_dir: Path) -> Client:
    """`client` with sealed payloads: keys in a fresh key file under `key_dir`."""
    sealed = settings.model_copy(
        update={"payload_codec": True, "payload_key_file": key_dir / "payload.keys"}
    )
    codec = payload_codec(sealed)
    config = client.config()
    config["data_converter"] = data_converter(client.data_converter, codec)
    return Client(**config)
