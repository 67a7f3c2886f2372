"""Acknowledgements of alert groups, and each group's history.

An acknowledgement says who took a group and until when (``ends_at``); it
covers the alerts that were firing when it was made. While it holds, the
dispatcher does not re-send the unchanged group after ``repeat_interval``; it
lapses when the group resolves, when an alert joins (the group changed), or at
``ends_at``. Acknowledgements and each group's history (every notification,
acks, escalation steps, playbooks, silences) live in ``alerts.db`` next to the
silences, so ``vigil alert ack`` in one process is seen by ``vigil alert`` in
another on its next pass. The history keeps the newest ``MAX_HISTORY`` entries
of a group, and a gone group's for ``HISTORY_RETENTION_S``. Example::

    store = AckStore("data/alerts.db")
    store.ack(Ack(key, frozenset(firing), by="ana", at=now, ends_at=now + 3600))
    store.get(key).covers({"fp1"}, now)  # True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

from alerting.state import open_db
from vigil.errors import VigilError

DEFAULT_ACK_S = 4 * 3600.0
"""How long an acknowledgement holds when no ``--for`` is given."""
MAX_ACK_S = 7 * 24 * 3600.0
MAX_HISTORY = 500
"""History entries kept per group (the oldest go first)."""
HISTORY_RETENTION_S = 120 * 3600.0
"""A gone (resolved) group's history is kept this long after its last entry, as long as
expired silences are kept (``silences.RETENTION_S``)."""


def group_id(key: str) -> str:
    """A short stable id of a group key (Slack button values and the CLI use it)."""
    return hashlib.sha256(key.encode()).hexdigest()[:12]


class AckError(VigilError):
    """An acknowledgement cannot be made: no such group, not firing, or a bad duration."""


@dataclass(frozen=True)
class Ack:
    group_key: str
    fingerprints: frozenset[str]
    by: str
    at: float
    ends_at: float

    def covers(self, firing: set[str] | frozenset[str], now: float) -> bool:
        """True while it holds for these firing alerts (none joined, not expired)."""
        return now < self.ends_at and set(firing) <= self.fingerprints

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["fingerprints"] = sorted(self.fingerprints)
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Ack:
        data = json.loads(text)
        data["fingerprints"] = frozenset(data["fingerprints"])
        return cls(**data)


@dataclass(frozen=True)
class HistoryEntry:
    group_key: str
    at: float
    kind: str
    """``notification``, ``notification-failed``, ``ack``, ``escalation``…"""
    text: str


def new_ack(key: str, states: Mapping[str, str], by: str, for_s: float, now: float) -> Ack:
    """An acknowledgement of group ``key`` whose alerts are in ``states`` (fingerprint →
    ``firing``/``resolved``); raises ``AckError`` for a resolved group or a bad duration."""
    if not 0 < for_s <= MAX_ACK_S:
        raise AckError(f"for: between 1s and {int(MAX_ACK_S // 3600)}h, not {for_s:g}s")
    if not by.strip():
        raise AckError("by: say who acknowledges")
    firing = frozenset(fp for fp, state in states.items() if state == "firing")
    if not firing:
        raise AckError(f"alert group {key} is resolved; nothing to acknowledge")
    return Ack(key, firing, by, now, now + for_s)


class AckStore:
    """Acknowledgements and group history in SQLite; safe from threads and processes."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._db = open_db(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS am_acks (key TEXT PRIMARY KEY, data TEXT NOT NULL)"
        )
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS am_history (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " key TEXT NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS am_history_key ON am_history (key, at)")

    def ack(self, ack: Ack) -> None:
        """Store (or replace) the group's acknowledgement and note it in its history."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO am_acks (key, data) VALUES (?, ?)",
                (ack.group_key, ack.to_json()),
            )
        self.note(ack.group_key, ack.at, "ack", f"acknowledged by {ack.by}")

    def get(self, key: str) -> Ack | None:
        with self._lock:
            row = self._db.execute("SELECT data FROM am_acks WHERE key = ?", (key,)).fetchone()
        return Ack.from_json(row[0]) if row else None

    def all(self) -> list[Ack]:
        with self._lock:
            rows = self._db.execute("SELECT data FROM am_acks ORDER BY key").fetchall()
        return [Ack.from_json(r[0]) for r in rows]

    def clear(self, key: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM am_acks WHERE key = ?", (key,))

    def note(self, key: str, at: float, kind: str, text: str) -> None:
        """Append to the group's history, keeping its newest ``MAX_HISTORY`` entries."""
        with self._lock:
            self._db.execute(
                "INSERT INTO am_history (key, at, kind, text) VALUES (?, ?, ?, ?)",
                (key, at, kind, text),
            )
            self._db.execute(
                "DELETE FROM am_history WHERE key = ? AND id NOT IN"
                " (SELECT id FROM am_history WHERE key = ? ORDER BY id DESC LIMIT ?)",
                (key, key, MAX_HISTORY),
            )

    def history(self, key: str, limit: int = MAX_HISTORY) -> list[HistoryEntry]:
        """The group's newest ``limit`` entries, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, at, kind, text FROM am_history WHERE key = ? ORDER BY id DESC LIMIT ?",
                (key, limit),
            ).fetchall()
        return [HistoryEntry(*r) for r in reversed(rows)]

    def history_size(self, key: str) -> int:
        """How many entries the group's history holds."""
        with self._lock:
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM am_history WHERE key = ?", (key,)
            ).fetchone()
        return int(n)

    def forget(
        self, now: float, keep: Collection[str], retention_s: float = HISTORY_RETENTION_S
    ) -> int:
        """Delete the history of groups gone (not in ``keep``: the groups the manager
        holds) whose last entry is older than ``retention_s``; returns how many groups."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key FROM am_history GROUP BY key HAVING MAX(at) < ?",
                (now - retention_s,),
            ).fetchall()
            gone = [(k,) for (k,) in rows if k not in keep]
            self._db.executemany("DELETE FROM am_history WHERE key = ?", gone)
        return len(gone)

    def close(self) -> None:
        with self._lock:
            self._db.close()
