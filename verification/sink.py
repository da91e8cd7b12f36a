"""Where checkpoints are kept, outside the database: a small interface and a directory.

`CheckpointSink` is what the scheduled checkpoint needs: `put` one, read the `latest`.
`DirectorySink` writes `checkpoint-<size>.json` files (the console's checkpoint folder
reads the same names); an object store (S3 with object lock, GCS with retention) fits
the same two methods: put an object named by size, list and read the largest.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

from pydantic import ValidationError

from tether.verification.checkpoint import Checkpoint


class CheckpointSink(Protocol):
    def put(self, checkpoint: Checkpoint) -> str:
        """Store `checkpoint`; return where (a path or URL)."""
        ...

    def latest(self) -> Checkpoint | None:
        """The largest checkpoint stored, or None."""
        ...


def checkpoint_name(checkpoint: Checkpoint) -> str:
    return f"checkpoint-{checkpoint.size:012d}.json"


class DirectorySink:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def put(self, checkpoint: Checkpoint) -> str:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / checkpoint_name(checkpoint)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(checkpoint.model_dump_json(indent=2), encoding="utf-8")
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        tmp.replace(path)
        return str(path)

    def all(self) -> list[Checkpoint]:
        """Every readable checkpoint, smallest first."""
        found: list[Checkpoint] = []
        if not self.folder.is_dir():
            return found
        for path in sorted(self.folder.glob("checkpoint-*.json")):
            try:
                found.append(Checkpoint.model_validate_json(path.read_text(encoding="utf-8")))
            except (OSError, ValidationError):
                continue
        return sorted(found, key=lambda c: c.size)

    def latest(self) -> Checkpoint | None:
        every = self.all()
        return every[-1] if every else None
