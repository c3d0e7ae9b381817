"""Every answered LLM call, on disk, so that no call is paid for twice.

`datasets` keeps nothing of a `map` that fails or is killed; this cache keeps each answer the
moment it arrives. The key is what decides the answer: the served model's identity, the route
and the exact JSON payload (seed included), never the endpoint URL, so replicas of one model
share entries and no credential is ever part of a key or a value.

SQLite in WAL mode. The answers that arrive in one turn of the event loop are written together,
in one transaction, as soon as that turn ends (a commit per answer was the largest CPU cost of a
call): a process killed at any instant loses at most those, received a fraction of a
millisecond earlier. Several `num_proc` workers write to one file safely. An entry
that does not read back intact is dropped and asked again; a file that cannot be opened or read
is reported once and bypassed, never trusted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import sqlite3
import time
import zlib
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

_FILE_NAME = "requests.sqlite"
_OPEN_TRIES = 200
_SCHEMA = "CREATE TABLE IF NOT EXISTS answers (key BLOB PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID"
# json.dumps with options builds an encoder per call; every answer goes through this one.
_ENCODER = json.JSONEncoder(ensure_ascii=False)


def default_cache_dir() -> Path:
    """`$HF_HOME/coevol-hf` (read when called, so a changed `HF_HOME` is honoured)."""
    hf_home = os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface")
    return Path(hf_home).expanduser() / "coevol-hf"


def request_key(model: str, route: str, body: bytes) -> bytes:
    """The key of a request: `body` is the exact JSON sent, written with sorted keys."""
    return hashlib.sha256(b"\0".join((model.encode(), route.encode(), body))).digest()


class RequestCache:
    """Answers by request key. Opened lazily, once per process (connections do not survive fork)."""

    def __init__(self, directory: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(directory).expanduser() / _FILE_NAME if directory is not None else default_cache_dir() / _FILE_NAME
        self._db: sqlite3.Connection | None = None
        self._pid: int | None = None
        self._pending: dict[bytes, bytes] = {}  # answers not yet written: one turn of the loop
        self._broken = False

    def get(self, key: bytes) -> dict[str, Any] | None:
        blob = self._pending.get(key)
        if blob is None:
            db = self._connect()
            if db is None:
                return None
            try:
                row = db.execute("SELECT value FROM answers WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error as err:
                self._bypass(err)
                return None
            if row is None:
                return None
            blob = row[0]
        try:
            value = json.loads(zlib.decompress(blob))
        except (zlib.error, ValueError):
            logger.warning("Dropping an unreadable entry of the request cache %s; the call will be made again.", self.path)
            self._delete(key)
            return None
        return value

    def put(self, key: bytes, value: dict[str, Any]) -> None:
        """Keep `value`: written with the other answers of this turn of the event loop, in one
        transaction, as soon as the turn ends (at once when no loop runs)."""
        try:
            blob = zlib.compress(_ENCODER.encode(value).encode(), 1)
        except ValueError as err:  # text no UTF-8 file can hold (a lone surrogate): never worth a crash
            logger.warning("Not caching an answer that cannot be stored (%s); it will be asked again next time.", err)
            return
        self._pending[key] = blob
        if len(self._pending) == 1:
            try:
                asyncio.get_running_loop().call_soon(self.flush)
            except RuntimeError:
                self.flush()

    def flush(self) -> None:
        """Write the answers kept since the last flush."""
        pending, self._pending = self._pending, {}
        db = self._connect() if pending else None
        if db is None:
            return
        try:
            db.execute("BEGIN")
            db.executemany("INSERT OR REPLACE INTO answers (key, value) VALUES (?, ?)", pending.items())
            db.execute("COMMIT")
        except sqlite3.Error as err:
            if db.in_transaction:
                db.execute("ROLLBACK")
            self._bypass(err)

    def close(self) -> None:
        self.flush()
        if self._db is not None and self._pid == os.getpid():
            self._db.close()
        self._db = None

    def _connect(self) -> sqlite3.Connection | None:
        if self._broken:
            return None
        if self._db is not None and self._pid == os.getpid():
            return self._db
        for attempt in range(_OPEN_TRIES):
            try:
                self._db, self._pid = self._open(), os.getpid()
                return self._db
            except sqlite3.OperationalError as err:
                # Workers creating the file together: switching to WAL ignores the busy timeout.
                if "locked" not in str(err) or attempt == _OPEN_TRIES - 1:
                    self._bypass(err)
                    return None
                time.sleep(0.05)
            except (sqlite3.Error, OSError) as err:
                self._bypass(err)
                return None
        return None

    def _open(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=60, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(_SCHEMA)
            db.execute("SELECT key FROM answers LIMIT 1").fetchall()
        except sqlite3.Error:
            db.close()
            raise
        return db

    def _delete(self, key: bytes) -> None:
        try:
            self._db.execute("DELETE FROM answers WHERE key = ?", (key,))
        except sqlite3.Error as err:
            self._bypass(err)

    def _bypass(self, err: Exception) -> None:
        if not self._broken:
            logger.warning(
                "The request cache %s cannot be used (%s); going on without it. Delete the file, or pass "
                "cache_dir= to use another place, to cache calls again.",
                self.path,
                err,
            )
        self._broken = True
