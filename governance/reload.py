"""The policy in force, reloaded without a restart: one atomic swap, or nothing at all.

`PolicyHolder.current()` is a plain attribute read; every decision reads it once.
`reload()` reads the source (policy files or the database store) and, when its content
changed, loads and lints the new policy completely, records `policy.changed` in the
ledger and only then swaps the reference. So:

- after `reload()` returns, every decision that starts uses the new version (a decision
  already running finishes on the version it read);
- a policy that does not load or lint is recorded as `policy.rejected` and raised as
  PolicyError, and the last good policy stays in force;
- a source that cannot be read (a missing or non-UTF-8 file), still so a moment later,
  is recorded as `policy.rejected` too (once per error and version in force);
- reloading unchanged content does nothing, so polling is cheap (two reads and a hash).

`load()` of a database store whose active version does not load (a malformed row, or
one pushed before a lint check existed) records it as `policy.rejected` and starts on the
newest earlier version that does, so a worker always starts; the next valid push repairs
the store and the poll loads it.

`start_polling(seconds)` runs `reload()` on a daemon thread until `stop_polling()`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from tether.core.config import Settings
from tether.core.db import make_engine
from tether.errors import PolicyError
from tether.governance.lint import check_and_load
from tether.governance.policy import PolicyEngine
from tether.governance.policy_store import PolicyStore, PolicyVersion, policy_changed_event
from tether.verification.events import LedgerEvent, digest
from tether.verification.ledger import Ledger

log = logging.getLogger("tether.policy")


@dataclass(frozen=True)
class PolicyTexts:
    """What a source holds now."""

    model_text: str
    policy_text: str
    name: str
    """Where it came from, for messages: a file path or `db:<id>`."""
    author: str
    source: str
    revision: str
    """Names this content in the source: the store's row id, or the files' mtimes."""

    @property
    def fingerprint(self) -> str:
        joined = f"{self.model_text}\x00{self.policy_text}"
        return hashlib.sha256(joined.encode()).hexdigest()


class PolicySource(Protocol):
    @property
    def settle_seconds(self) -> float:
        """How long a changed content must stay the same before it is loaded: a file
        written in place is empty or cut short for a moment; a database row never is."""
        ...

    def read(self) -> PolicyTexts: ...


def read_text(path: Path) -> str:
    """A policy or model file's text; PolicyError naming the path when it cannot be read."""
    try:
        return path.read_text(encoding="utf-8-sig")  # a BOM is not content
    except OSError as exc:
        raise PolicyError(f"cannot read {str(path)!r}: {exc.strerror}; check the path") from None
    except UnicodeDecodeError as exc:
        raise PolicyError(
            f"{str(path)!r} is not UTF-8 (byte {exc.start}); save it as UTF-8"
        ) from None


@dataclass(frozen=True)
class FileSource:
    """The policy files (the default source); whoever edits them is the file's author."""

    model_path: Path
    policy_path: Path
    settle_seconds: float = 0.05

    def read(self) -> PolicyTexts:
        model_text, policy_text = read_text(self.model_path), read_text(self.policy_path)
        # Workers watching the same files name an edit alike, so the ledger records it once.
        stamps = ".".join(str(p.stat().st_mtime_ns) for p in (self.model_path, self.policy_path))
        return PolicyTexts(
            model_text=model_text,
            policy_text=policy_text,
            name=str(self.policy_path),
            author=f"file:{self.policy_path.name}",
            source="file",
            revision=f"file:{stamps}",
        )


@dataclass(frozen=True)
class StoreSource:
    """The active version in the database store (the production source)."""

    store: PolicyStore
    settle_seconds: float = 0.0

    def earlier(self) -> list[PolicyTexts]:
        """The versions before the active one, newest first (`load` falls back on them)."""
        return [self._texts(v) for v in self.store.history() if not v.active]

    @staticmethod
    def _texts(version: PolicyVersion) -> PolicyTexts:
        return PolicyTexts(
            model_text=version.model_text,
            policy_text=version.policy_text,
            name=version.revision,
            author=version.author,
            source="database",
            revision=version.revision,
        )

    def read(self) -> PolicyTexts:
        active = self.store.active()
        if active is None:
            raise PolicyError(
                "the policy store holds no policy yet; push one with "
                "'tether policy push PATH --as user:you' or set policy_source = 'file'"
            )
        return self._texts(active)


def source_for(settings: Settings, ledger: Ledger | None = None) -> PolicySource:
    """The source `settings.policy_source` names."""
    if settings.policy_source == "file":
        return FileSource(settings.policy_model, settings.policy_path)
    ledger = ledger or Ledger(make_engine(settings.database_url))
    return StoreSource(PolicyStore(ledger.engine, ledger))


def configured_engine(settings: Settings, policy: Path | None = None) -> PolicyEngine:
    """`policy` if given, else the policy in force where the worker reads it (the CLI's
    `policy explain` and the console's views decide with it)."""
    if policy is not None or settings.policy_source == "file":
        return PolicyEngine.from_files(settings.policy_model, policy or settings.policy_path)
    texts = source_for(settings).read()
    return PolicyEngine.from_texts(texts.model_text, texts.policy_text, texts.name)


def record_unreadable(ledger: Ledger, source: PolicySource, version: str, error: Exception) -> None:
    """Record `policy.rejected` for a source that cannot be read (once per error and
    version in force: a poll that keeps failing records it once)."""
    name = str(getattr(source, "policy_path", "") or "database")
    ledger.append(
        LedgerEvent(
            idempotency_key=f"policy.rejected:unreadable:{version}:{digest(str(error))[7:23]}",
            kind="policy.rejected",
            policy_version=version,
            actor=f"file:{Path(name).name}" if name != "database" else "database",
            outcome="rejected",
            payload={"source": "unreadable", "name": name, "error": str(error)},
        )
    )


class PolicyHolder:
    """Holds the policy in force and swaps it, whole, when its source changes."""

    def __init__(
        self,
        engine: PolicyEngine,
        source: PolicySource | None = None,
        ledger: Ledger | None = None,
        fingerprint: str = "",
    ) -> None:
        self._engine = engine
        self._source = source
        self._ledger = ledger
        self._fingerprint = fingerprint
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None

    @classmethod
    def load(cls, source: PolicySource, ledger: Ledger | None = None) -> PolicyHolder:
        """Load the source's policy; PolicyError (nothing to fall back on) when it is bad."""
        try:
            texts = source.read()
        except PolicyError as exc:
            if ledger is not None:
                record_unreadable(ledger, source, "", exc)
            raise
        try:
            engine = check_and_load(texts.model_text, texts.policy_text, texts.name)
        except PolicyError as exc:
            earlier = source.earlier() if isinstance(source, StoreSource) else []
            for older in earlier:
                try:
                    good = check_and_load(older.model_text, older.policy_text, older.name)
                except PolicyError:
                    continue
                # The bad version's fingerprint: polling leaves it alone until a push.
                holder = cls(good, source, ledger, texts.fingerprint)
                holder._record_rejection(texts, good, exc)
                log.error("policy %s refused (%s); %s is in force", texts.name, exc, older.name)
                return holder
            raise
        return cls(engine, source, ledger, texts.fingerprint)

    def current(self) -> PolicyEngine:
        """The policy in force now."""
        return self._engine

    def reload(self) -> bool:
        """Load the source's policy if it changed; True when a new version is in force.

        PolicyError (recorded as `policy.rejected`) when the new content is bad; the last
        good policy stays in force.
        """
        if self._source is None:
            return False
        with self._lock:
            texts = self._read(self._source)
            if texts.fingerprint == self._fingerprint:
                return False
            settle = getattr(self._source, "settle_seconds", 0.0)
            if settle > 0:
                # Read again a moment later: content caught mid-write (an editor or
                # `write_text` truncates first) differs, and the next poll loads it whole.
                time.sleep(settle)
                try:
                    again = self._source.read()
                except PolicyError:  # gone or half-written for the moment: next poll
                    return False
                if again.fingerprint != texts.fingerprint:
                    return False
            previous = self._engine
            try:
                new = check_and_load(texts.model_text, texts.policy_text, texts.name)
            except PolicyError as exc:
                self._record_rejection(texts, previous, exc)
                raise
            if new.version != previous.version:
                if self._ledger is not None:
                    event, content = policy_changed_event(
                        texts.revision,
                        texts.author,
                        previous,
                        new,
                        texts.source,
                    )
                    self._ledger.append(event, content)
                self._engine = new  # the one swap: a single reference assignment
                log.info("policy %s is in force (was %s)", new.version, previous.version)
            self._fingerprint = texts.fingerprint
            return new.version != previous.version

    def _read(self, source: PolicySource) -> PolicyTexts:
        """The source's texts; an unreadable source, still so a moment later, is recorded."""
        try:
            return source.read()
        except PolicyError as first:
            error = first
        settle = getattr(source, "settle_seconds", 0.0)
        if settle > 0:  # an editor's save may remove the file for a moment
            time.sleep(settle)
            try:
                return source.read()
            except PolicyError as again:
                error = again
        if self._ledger is not None:
            record_unreadable(self._ledger, source, self._engine.version, error)
        raise error

    def _record_rejection(self, texts: PolicyTexts, current: PolicyEngine, exc: Exception) -> None:
        if self._ledger is None:
            return
        attempt = digest(texts.policy_text)
        self._ledger.append(
            LedgerEvent(
                idempotency_key=(
                    f"policy.rejected:{texts.source}:{current.version}:{texts.fingerprint[:16]}"
                ),
                kind="policy.rejected",
                policy_version=current.version,
                actor=texts.author,
                outcome="rejected",
                payload={
                    "source": texts.source,
                    "name": texts.name,
                    "policy_digest": attempt,
                    "model_digest": digest(texts.model_text),
                    "error": str(exc),
                },
            ),
            [texts.model_text, texts.policy_text],
        )

    def start_polling(self, seconds: float) -> None:
        """Reload every `seconds` on a daemon thread (no-op for 0 or without a source)."""
        if seconds <= 0 or self._source is None or self._poller is not None:
            return
        self._stop.clear()
        self._poller = threading.Thread(
            target=self._poll, args=(seconds,), name="tether-policy-poll", daemon=True
        )
        self._poller.start()

    def stop_polling(self) -> None:
        poller, self._poller = self._poller, None
        if poller is not None:
            self._stop.set()
            poller.join()

    def _poll(self, seconds: float) -> None:
        last_error = ""
        while not self._stop.wait(seconds):
            try:
                self.reload()
                last_error = ""
            except PolicyError as exc:
                if str(exc) != last_error:
                    log.error("policy reload refused, the last good policy stays: %s", exc)
                last_error = str(exc)
            except Exception:  # a database outage must not end polling
                log.exception("policy reload failed; retrying in %s s", seconds)
