"""Acknowledgements of alert groups, and each group's history.

An acknowledgement says who took a group and until when (``ends_at``); it
covers the alerts that were firing when it was made. While it holds, the
dispatcher does not re-send the unchanged group after ``repeat_interval``; it
lapses when the group resolves, when an alert joins (the group changed), or at
``ends_at``. Acknowledgements and each group's history (every notification,
acks, escalation steps, playbooks, silences) live in ``alerts.db`` next to the
silences, so ``vigil alert ack`` in one process is seen by ``vigil alert`` in
another on its next pass. The history keeps the newest ``MAX_HISTORY`` entries
of a group, and a gone group's for ``HISTORY_RETENTION_S``.

Each time a group starts firing anew an *incident* begins (``begin_incident``: a
row of ``am_incidents`` with the group's receiver and labels); every history entry
carries the incident current when it was noted, so a group that fires again does
not mix the earlier incident's history into the new one. When the group resolves
and goes, ``end_incident`` keeps its alerts (at most ``MAX_INCIDENT_ALERTS``) and
resolution time: the recently resolved incidents the Alerts page lists
(``resolved``), kept for ``HISTORY_RETENTION_S`` as the history is. Example::

    store = AckStore("data/alerts.db")
    store.ack(Ack(key, frozenset(firing), by="ana", at=now, ends_at=now + 3600))
    store.get(key).covers({"fp1"}, now)  # True
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from alerting.state import Alert, open_db
from vigil.errors import VigilError

DEFAULT_ACK_S = 4 * 3600.0
"""How long an acknowledgement holds when no ``--for`` is given."""
MAX_ACK_S = 7 * 24 * 3600.0
MAX_HISTORY = 500
"""History entries kept per group (the oldest go first)."""
HISTORY_RETENTION_S = 120 * 3600.0
"""A gone (resolved) group's history is kept this long after its last entry, as long as
expired silences are kept (``silences.RETENTION_S``)."""
MAX_INCIDENTS = 100
"""Incidents kept per group (the oldest go first; a flapping group cannot grow the table)."""
MAX_INCIDENT_ALERTS = 50
"""Alerts an ended incident keeps (the first to resolve); the count is kept too."""


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
    incident: int = 0
    """The incident it belongs to (0: noted before incidents were recorded)."""


@dataclass(frozen=True)
class Incident:
    """One firing episode of a group: from when it started firing until it resolved
    (``resolved_at`` None while it has not)."""

    id: int
    key: str
    receiver: str
    labels: dict[str, str]
    started_at: float
    resolved_at: float | None
    alerts: list[Alert]
    """Its alerts as they ended (at most ``MAX_INCIDENT_ALERTS``)."""
    alerts_total: int
    acked_by: list[str]
    """Who acknowledged it, in order (each person once)."""

    @property
    def group_id(self) -> str:
        return group_id(self.key)


_INCIDENT_COLUMNS = (
    "id, key, receiver, labels, started_at, resolved_at, alerts, alerts_total, acked_by"
)


def _incident(row: Sequence[object]) -> Incident:
    iid, key, receiver, labels, started, resolved, alerts, total, acked = row
    return Incident(
        int(str(iid)),
        str(key),
        str(receiver),
        json.loads(str(labels)),
        float(str(started)),
        None if resolved is None else float(str(resolved)),
        [Alert(**a) for a in json.loads(str(alerts))],
        int(str(total)),
        json.loads(str(acked)),
    )


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
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS am_incidents (id INTEGER PRIMARY KEY AUTOINCREMENT,"
            " key TEXT NOT NULL, receiver TEXT NOT NULL, labels TEXT NOT NULL,"
            " started_at REAL NOT NULL, resolved_at REAL, alerts TEXT NOT NULL DEFAULT '[]',"
            " alerts_total INTEGER NOT NULL DEFAULT 0, acked_by TEXT NOT NULL DEFAULT '[]')"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS am_incidents_key ON am_incidents (key, id)")
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS am_incidents_resolved ON am_incidents (resolved_at)"
        )
        self._add_incident_column()

    def _add_incident_column(self) -> None:
        """``am_history.incident`` (files made before incidents: their entries get 0)."""
        with self._lock:
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(am_history)")}
            if "incident" not in columns:
                try:
                    self._db.execute(
                        "ALTER TABLE am_history ADD COLUMN incident INTEGER NOT NULL DEFAULT 0"
                    )
                except sqlite3.OperationalError as exc:  # another process added it first
                    if "duplicate column" not in str(exc):
                        raise
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS am_history_incident ON am_history (key, incident, id)"
            )

    def ack(self, ack: Ack) -> None:
        """Store (or replace) the group's acknowledgement and note it in its history."""
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO am_acks (key, data) VALUES (?, ?)",
                (ack.group_key, ack.to_json()),
            )
            row = self._db.execute(
                "SELECT id, acked_by FROM am_incidents WHERE key = ? ORDER BY id DESC LIMIT 1",
                (ack.group_key,),
            ).fetchone()
            if row is not None and ack.by not in (acked := json.loads(row[1])):
                self._db.execute(
                    "UPDATE am_incidents SET acked_by = ? WHERE id = ?",
                    (json.dumps([*acked, ack.by]), row[0]),
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
        """Append to the group's history, in its current incident, keeping its newest
        ``MAX_HISTORY`` entries."""
        with self._lock:
            self._db.execute(
                "INSERT INTO am_history (key, at, kind, text, incident) VALUES (?, ?, ?, ?,"
                " COALESCE((SELECT MAX(id) FROM am_incidents WHERE key = ?), 0))",
                (key, at, kind, text, key),
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
                "SELECT key, at, kind, text, incident FROM am_history WHERE key = ?"
                " ORDER BY id DESC LIMIT ?",
                (key, limit),
            ).fetchall()
        return [HistoryEntry(*r) for r in reversed(rows)]

    def incident_sizes(self, key: str) -> dict[int, int]:
        """How many entries the group's history holds per incident (from the index)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT incident, COUNT(*) FROM am_history WHERE key = ? GROUP BY incident",
                (key,),
            ).fetchall()
        return {int(i): int(n) for i, n in rows}

    def incident_history(self, key: str, incident: int, limit: int) -> list[HistoryEntry]:
        """The newest ``limit`` entries of one incident of the group, oldest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key, at, kind, text, incident FROM am_history"
                " WHERE key = ? AND incident = ? ORDER BY id DESC LIMIT ?",
                (key, incident, limit),
            ).fetchall()
        return [HistoryEntry(*r) for r in reversed(rows)]

    # -- incidents ---------------------------------------------------------------------------

    def begin_incident(self, key: str, at: float, receiver: str, labels: Mapping[str, str]) -> int:
        """A new incident of group ``key`` (it starts firing anew); the entries noted from
        now on belong to it. Keeps the group's newest ``MAX_INCIDENTS``."""
        with self._lock:
            cur = self._db.execute(
                "INSERT INTO am_incidents (key, receiver, labels, started_at) VALUES (?, ?, ?, ?)",
                (key, receiver, json.dumps(dict(labels), sort_keys=True), at),
            )
            self._db.execute(
                "DELETE FROM am_incidents WHERE key = ? AND id NOT IN"
                " (SELECT id FROM am_incidents WHERE key = ? ORDER BY id DESC LIMIT ?)",
                (key, key, MAX_INCIDENTS),
            )
            return int(cur.lastrowid or 0)

    def keep_alerts(self, key: str, alerts: Sequence[Alert]) -> None:
        """Add ``alerts`` (resolved and forgotten by the group) to its current incident, the
        first ``MAX_INCIDENT_ALERTS`` of them; the count goes on."""
        if not alerts:
            return
        with self._lock:
            row = self._db.execute(
                "SELECT id, alerts, alerts_total FROM am_incidents WHERE key = ?"
                " ORDER BY id DESC LIMIT 1",
                (key,),
            ).fetchone()
            if row is None:
                return
            kept = json.loads(row[1])
            seen = {a["fingerprint"] for a in kept}
            new = [a for a in alerts if a.fingerprint not in seen]
            room = max(0, MAX_INCIDENT_ALERTS - len(kept))
            kept += [dataclasses.asdict(a) for a in new[:room]]
            self._db.execute(
                "UPDATE am_incidents SET alerts = ?, alerts_total = ? WHERE id = ?",
                (json.dumps(kept, sort_keys=True), int(row[2]) + len(new), row[0]),
            )

    def end_incident(self, key: str, alerts: Sequence[Alert], at: float) -> None:
        """The group's current incident resolved at ``at`` (its last alert's end) with
        ``alerts`` (those it still held)."""
        self.keep_alerts(key, alerts)
        with self._lock:
            self._db.execute(
                "UPDATE am_incidents SET resolved_at = ? WHERE id ="
                " (SELECT MAX(id) FROM am_incidents WHERE key = ?) AND resolved_at IS NULL",
                (at, key),
            )

    def incident_ids(self, key: str) -> list[int]:
        """The ids of the group's incidents (at most ``MAX_INCIDENTS``), newest first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT id FROM am_incidents WHERE key = ? ORDER BY id DESC", (key,)
            ).fetchall()
        return [int(r[0]) for r in rows]

    def incidents(self, key: str, limit: int) -> tuple[list[Incident], int]:
        """The group's newest ``limit`` incidents, newest first, and how many it has."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_INCIDENT_COLUMNS} FROM am_incidents WHERE key = ?"
                " ORDER BY id DESC LIMIT ?",
                (key, limit),
            ).fetchall()
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM am_incidents WHERE key = ?", (key,)
            ).fetchone()
        return [_incident(r) for r in rows], int(n)

    def resolved(self, since: float, limit: int) -> tuple[list[Incident], int]:
        """Incidents resolved at or after ``since``, the last resolved first, at most
        ``limit``, and how many there are."""
        with self._lock:
            rows = self._db.execute(
                f"SELECT {_INCIDENT_COLUMNS} FROM am_incidents WHERE resolved_at >= ?"
                " ORDER BY resolved_at DESC, id DESC LIMIT ?",
                (since, limit),
            ).fetchall()
            (n,) = self._db.execute(
                "SELECT COUNT(*) FROM am_incidents WHERE resolved_at >= ?", (since,)
            ).fetchone()
        return [_incident(r) for r in rows], int(n)

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
        holds) whose last entry is older than ``retention_s``, and the incidents resolved
        before then (and a gone group's never-resolved ones); returns how many groups."""
        with self._lock:
            rows = self._db.execute(
                "SELECT key FROM am_history GROUP BY key HAVING MAX(at) < ?",
                (now - retention_s,),
            ).fetchall()
            gone = [(k,) for (k,) in rows if k not in keep]
            self._db.executemany("DELETE FROM am_history WHERE key = ?", gone)
            old = now - retention_s
            self._db.execute("DELETE FROM am_incidents WHERE resolved_at < ?", (old,))
            rows = self._db.execute(
                "SELECT DISTINCT key FROM am_incidents"
                " WHERE resolved_at IS NULL AND started_at < ?",
                (old,),
            ).fetchall()
            self._db.executemany(  # open incidents of groups dropped with their route
                "DELETE FROM am_incidents WHERE key = ? AND resolved_at IS NULL",
                [(k,) for (k,) in rows if k not in keep],
            )
        return len(gone)

    def close(self) -> None:
        with self._lock:
            self._db.close()
