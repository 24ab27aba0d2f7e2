"""The durable alert spool: every alert in an SQLite database, before anyone is told of it, with
ids that only ever increase (across restarts too, and after old alerts are pruned). A consumer
that was away asks for everything after the last id it saw and gets each missed alert once, in
order. Retention is bounded by age and by size.

SQLite in WAL mode with synchronous=NORMAL: a committed alert survives the daemon being killed
(kill -9, a crash); a power cut may lose the last few."""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .._proto.agent_sensor.v1 import sensor_pb2 as pb

PRUNE_EVERY = 256  # alerts between retention passes
PAGE = 500         # alerts read per query when replaying


@dataclass(frozen=True)
class Retention:
    max_bytes: int = 256 * 1024 * 1024
    max_age_s: float = 30 * 24 * 3600


class SpoolError(Exception):
    pass


class AlertSpool:
    def __init__(self, path: Path, retention: Retention = Retention(), clock=time.time):
        self.path = path
        self.retention = retention
        self._clock = clock
        self._lock = threading.Lock()  # one connection, shared by the judge and the API threads
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            # AUTOINCREMENT: an id is never handed out twice, even once the newest alerts are pruned.
            self._db.execute("CREATE TABLE IF NOT EXISTS alerts (id INTEGER PRIMARY KEY AUTOINCREMENT, "
                             "time REAL NOT NULL, data BLOB NOT NULL)")
            path.chmod(0o600)
        except (OSError, sqlite3.Error) as exc:
            raise SpoolError(f"alert spool {path}: {exc}") from exc
        self._since_prune = 0

    def reserve(self) -> int:
        """A new alert's id: a row is written now, so no later alert can take it."""
        with self._lock:
            cursor = self._db.execute("INSERT INTO alerts (time, data) VALUES (?, ?)", (self._clock(), b""))
            return cursor.lastrowid

    def store(self, alert: pb.Alert) -> None:
        """The alert (its id from reserve), committed before this returns."""
        with self._lock:
            self._db.execute("UPDATE alerts SET data = ? WHERE id = ?", (alert.SerializeToString(), alert.id))
            self._since_prune += 1
            if self._since_prune >= PRUNE_EVERY:
                self._prune()
                self._since_prune = 0

    def last_id(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'alerts'").fetchone()
            return row[0] if row else 0

    def after(self, since_id: int, until_id: int | None = None) -> Iterator[pb.Alert]:
        """Stored alerts with since_id < id <= until_id, oldest first (ids reserved but never
        stored, by a daemon killed in between, are skipped)."""
        last = since_id
        while True:
            with self._lock:
                rows = self._db.execute(
                    "SELECT id, data FROM alerts WHERE id > ? AND id <= ? AND length(data) > 0 ORDER BY id LIMIT ?",
                    (last, until_id if until_id is not None else 2**63 - 1, PAGE)).fetchall()
            for row_id, data in rows:
                yield pb.Alert.FromString(data)
                last = row_id
            if len(rows) < PAGE:
                return

    def oldest_id(self) -> int:
        with self._lock:
            row = self._db.execute("SELECT min(id) FROM alerts").fetchone()
            return row[0] or 0

    def _prune(self) -> None:
        """Oldest first: older than max_age, then until the rows fit max_bytes."""
        self._db.execute("DELETE FROM alerts WHERE time < ?", (self._clock() - self.retention.max_age_s,))
        excess = self._db.execute("SELECT coalesce(sum(length(data)), 0) FROM alerts").fetchone()[0] \
            - self.retention.max_bytes
        if excess <= 0:
            return
        cut = 0
        for row_id, size in self._db.execute("SELECT id, length(data) FROM alerts ORDER BY id"):
            cut, excess = row_id, excess - size
            if excess <= 0:
                break
        self._db.execute("DELETE FROM alerts WHERE id <= ?", (cut,))

    def prune(self) -> None:
        with self._lock:
            self._prune()

    def close(self) -> None:
        with self._lock:
            self._db.close()
