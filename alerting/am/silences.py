"""Silences: matchers, a start and an end, who made it and why; kept after they expire.

A silence is *pending* before ``starts_at``, *active* until ``ends_at``, then
*expired* — and stays in the table for the history (``vigil silence query
--expired``) for ``RETENTION_S`` (120 h, as Alertmanager keeps them).
Expiring an active silence moves its end to now; a pending one is ended before
it starts. Silences live in SQLite (WAL) in the same file as the
alert states (``<data_dir>/alerts.db``), so ``vigil silence add`` in one
process is seen by ``vigil alert`` in another on its next pass. Example::

    store = SilenceStore("data/alerts.db")
    sid = store.add(new_silence('alertname="Disk"', hours=2, created_by="ana", comment="move"))
    store.active(now)  # [Silence(...)]
    store.expire(sid, now)
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from alerting.am.matchers import MatcherSyntaxError, format_matcher, matches_all, parse_matchers
from alerting.state import open_db
from siem.model import Matcher
from vigil.errors import VigilError

SilenceState = Literal["pending", "active", "expired"]
RETENTION_S = 120 * 3600.0
"""Expired silences are kept this long for the history, then deleted (Alertmanager's
``--data.retention`` default)."""
MAX_SILENCE_MATCHERS = 64
MAX_COMMENT = 4096


class SilenceError(VigilError):
    """A silence cannot be made, changed or found; says which field and why."""


@dataclass(frozen=True)
class Silence:
    id: str
    matchers: tuple[Matcher, ...]
    starts_at: float
    ends_at: float
    created_by: str
    comment: str
    updated_at: float

    def state(self, now: float) -> SilenceState:
        if now < self.starts_at:
            return "pending"
        return "active" if now < self.ends_at else "expired"

    def mutes(self, labels: Mapping[str, str]) -> bool:
        return matches_all(self.matchers, labels)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["matchers"] = [[m.name, m.op, m.value] for m in self.matchers]
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Silence:
        data = json.loads(text)
        data["matchers"] = tuple(Matcher(n, op, v) for n, op, v in data["matchers"])
        return cls(**data)

    def describe(self) -> str:
        return ",".join(format_matcher(m) for m in self.matchers)


def validate(silence: Silence) -> None:
    """Raise ``SilenceError`` for a silence Alertmanager would refuse."""
    if not silence.matchers:
        raise SilenceError("matchers: at least one matcher is required")
    if len(silence.matchers) > MAX_SILENCE_MATCHERS:
        raise SilenceError(f"matchers: at most {MAX_SILENCE_MATCHERS}")
    if all(m.matches({}) for m in silence.matchers):
        raise SilenceError("matchers: at least one matcher must not match the empty string")
    if silence.ends_at <= silence.starts_at:
        raise SilenceError("endsAt: the end must be after the start")
    if len(silence.comment) > MAX_COMMENT:
        raise SilenceError(f"comment: at most {MAX_COMMENT} characters")
    if len(silence.created_by) > MAX_COMMENT:
        raise SilenceError(f"createdBy: at most {MAX_COMMENT} characters")
    # An empty createdBy is accepted, as Alertmanager's validateSilence does; the
    # command line and Slack fill it from their user, the API records its caller.


def new_silence(
    matchers: str | Sequence[Matcher],
    *,
    created_by: str,
    comment: str,
    starts_at: float | None = None,
    ends_at: float | None = None,
    duration_s: float = 3600.0,
    now: float | None = None,
) -> Silence:
    """A checked silence from matcher text (``alertname="X",job=~"a|b"``) or matchers."""
    now = time.time() if now is None else now
    if isinstance(matchers, str):
        try:
            parsed: Sequence[Matcher] = parse_matchers(matchers)
        except MatcherSyntaxError as exc:
            raise SilenceError(f"matchers: {exc}") from None
    else:
        parsed = matchers
    start = now if starts_at is None else starts_at
    end = start + duration_s if ends_at is None else ends_at
    silence = Silence("", tuple(parsed), start, end, created_by, comment, now)
    validate(silence)
    return silence


def _can_update(old: Silence, new: Silence, now: float) -> bool:
    """Alertmanager's ``canUpdate``: whether ``old`` can become ``new`` without changing
    the history of what was silenced when."""
    if old.matchers != new.matchers:
        return False
    state = old.state(now)
    if state == "active":
        return int(old.starts_at) == int(new.starts_at) and new.ends_at >= now
    return state == "pending" and new.starts_at >= now


class SilenceStore:
    """Silences in SQLite; every method is safe from several threads and processes."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._db = open_db(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS silences (id TEXT PRIMARY KEY, ends_at REAL NOT NULL,"
            " data TEXT NOT NULL)"
        )
        self._db.execute("CREATE INDEX IF NOT EXISTS silences_ends_at ON silences (ends_at)")

    def add(self, silence: Silence, *, now: float | None = None) -> str:
        """Store a new silence, or change the one named by ``silence.id``; returns its id.

        A change follows Alertmanager's ``Silences.Set``: the silence is updated in place
        (same id) when its matchers are unchanged and it is active with the same start
        (to the second) and an end not in the past, or pending with a start not in the
        past; otherwise the old one is expired (unless it already is) and a new one with
        a new id replaces it. A start in the past becomes now."""
        now = time.time() if now is None else now
        validate(silence)
        if silence.ends_at <= now:
            raise SilenceError("endsAt: the silence would already be expired")
        if silence.id:
            old = self.get(silence.id)
            if _can_update(old, silence, now):
                kept = dataclasses.replace(silence, updated_at=now)
                self._write(kept)
                return kept.id
            if old.state(now) != "expired":
                self.expire(old.id, now=now)
        sid = str(uuid.uuid4())
        stored = dataclasses.replace(
            silence, id=sid, starts_at=max(silence.starts_at, now), updated_at=now
        )
        self._write(stored)
        return sid

    def _write(self, silence: Silence) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO silences (id, ends_at, data) VALUES (?, ?, ?)",
                (silence.id, silence.ends_at, silence.to_json()),
            )

    def get(self, sid: str) -> Silence:
        with self._lock:
            row = self._db.execute("SELECT data FROM silences WHERE id = ?", (sid,)).fetchone()
        if row is None:
            raise SilenceError(f"silence {sid!r} not found")
        return Silence.from_json(row[0])

    def expire(self, sid: str, *, now: float | None = None) -> Silence:
        """End the silence now; an already expired one raises ``SilenceError``."""
        now = time.time() if now is None else now
        silence = self.get(sid)
        state = silence.state(now)
        if state == "expired":
            raise SilenceError(f"silence {sid} is already expired")
        start = now if state == "pending" else silence.starts_at
        done = dataclasses.replace(silence, starts_at=start, ends_at=now, updated_at=now)
        with self._lock:
            self._db.execute(
                "UPDATE silences SET ends_at = ?, data = ? WHERE id = ?",
                (done.ends_at, done.to_json(), sid),
            )
        return done

    def all(self) -> list[Silence]:
        """Every silence, expired ones included, newest end first."""
        with self._lock:
            rows = self._db.execute("SELECT data FROM silences ORDER BY ends_at DESC").fetchall()
        return [Silence.from_json(r[0]) for r in rows]

    def unexpired(self, now: float, limit: int | None = None) -> list[Silence]:
        """Pending and active silences, ending first; at most ``limit``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM silences WHERE ends_at > ? ORDER BY ends_at LIMIT ?",
                (now, -1 if limit is None else limit),
            ).fetchall()
        return [Silence.from_json(r[0]) for r in rows]

    def expired(self, now: float, limit: int) -> list[Silence]:
        """At most ``limit`` expired silences, ended last first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM silences WHERE ends_at <= ? ORDER BY ends_at DESC LIMIT ?",
                (now, limit),
            ).fetchall()
        return [Silence.from_json(r[0]) for r in rows]

    def count(self) -> int:
        """How many silences are stored, expired ones included."""
        with self._lock:
            (n,) = self._db.execute("SELECT COUNT(*) FROM silences").fetchone()
        return int(n)

    def active(self, now: float, limit: int | None = None) -> list[Silence]:
        """Active silences (of the first ``limit`` unexpired ones, ending first)."""
        return [s for s in self.unexpired(now, limit) if s.state(now) == "active"]

    def query(
        self, matchers: Sequence[Matcher] = (), *, expired: bool = False, now: float | None = None
    ) -> list[Silence]:
        """Silences (only unexpired unless ``expired``) whose own matchers include every
        one of ``matchers`` (as ``amtool silence query`` filters)."""
        now = time.time() if now is None else now
        wanted = {(m.name, m.op, m.value) for m in matchers}
        rv = []
        for s in self.all():
            if (s.state(now) == "expired") != expired:
                continue
            if wanted <= {(m.name, m.op, m.value) for m in s.matchers}:
                rv.append(s)
        return rv

    def counts(self, now: float) -> dict[SilenceState, int]:
        """Silences per state; expired ones are counted in SQL, not loaded."""
        rv: dict[SilenceState, int] = {"active": 0, "pending": 0, "expired": 0}
        for s in self.unexpired(now):
            rv[s.state(now)] += 1
        with self._lock:
            (expired,) = self._db.execute(
                "SELECT COUNT(*) FROM silences WHERE ends_at <= ?", (now,)
            ).fetchone()
        rv["expired"] = int(expired)
        return rv

    def forget_expired(self, now: float, retention_s: float = RETENTION_S) -> int:
        """Delete silences that ended more than ``retention_s`` ago; returns how many."""
        with self._lock:
            cur = self._db.execute("DELETE FROM silences WHERE ends_at < ?", (now - retention_s,))
        return cur.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()
