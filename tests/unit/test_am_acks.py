"""The alert groups' history in alerts.db stays bounded: the newest entries per group, and
the history of groups gone longer than the retention is deleted. Each firing episode is an
incident with its own history; incidents are bounded per group and by the retention."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from alerting.am import acks
from alerting.am.acks import Ack, AckStore
from alerting.state import Alert, fingerprint


def test_history_keeps_the_newest_entries_of_each_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acks, "MAX_HISTORY", 5)
    store = AckStore(tmp_path / "alerts.db")
    for n in range(8):
        store.note("g1", 100.0 + n, "notification", f"sent {n}")
    store.note("g2", 100.0, "ack", "acknowledged by ana")
    assert [h.text for h in store.history("g1")] == [f"sent {n}" for n in range(3, 8)]
    assert [h.text for h in store.history("g1", 2)] == ["sent 6", "sent 7"]
    assert store.history_size("g1") == 5 and store.history_size("g2") == 1
    store.close()


def test_history_of_groups_gone_past_the_retention_is_forgotten(tmp_path: Path) -> None:
    store = AckStore(tmp_path / "alerts.db")
    day = 86400.0
    store.note("old-gone", 0.0, "notification", "sent")
    store.note("old-firing", 0.0, "notification", "sent")
    store.note("recent-gone", 0.0, "notification", "sent")
    store.note("recent-gone", 6 * day, "notification", "sent resolved")
    now = 6 * day + 3600
    assert store.forget(now, keep={"old-firing"}, retention_s=5 * day) == 1
    assert store.history("old-gone") == []
    assert len(store.history("old-firing")) == 1 and len(store.history("recent-gone")) == 2
    store.close()


def _resolved(name: str, start: float, end: float) -> Alert:
    labels = {"alertname": name}
    return Alert(fingerprint(labels), labels, {}, "resolved", 1.0, start, start, end)


def test_incidents_separate_history_and_stay_bounded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(acks, "MAX_INCIDENTS", 3)
    monkeypatch.setattr(acks, "MAX_INCIDENT_ALERTS", 2)
    store = AckStore(tmp_path / "alerts.db")
    store.note("g", 1.0, "notification", "before incidents")
    ids = []
    for n in range(4):
        ids.append(store.begin_incident("g", 10.0 * n, "team", {"alertname": "A"}))
        store.ack(Ack("g", frozenset({"fp"}), "ana", 10.0 * n + 1, 10.0 * n + 99))
        store.ack(Ack("g", frozenset({"fp"}), "ana", 10.0 * n + 2, 10.0 * n + 99))
        store.note("g", 10.0 * n + 3, "notification", f"sent {n}")
        gone = [_resolved(f"A{k}", 10.0 * n, 10.0 * n + 5) for k in range(3)]
        store.end_incident("g", gone, 10.0 * n + 5)
    found, total = store.incidents("g", 10)
    assert total == 3 and [i.id for i in found] == ids[:0:-1]  # the oldest went
    newest = found[0]
    assert (newest.started_at, newest.resolved_at) == (30.0, 35.0)
    assert newest.acked_by == ["ana"] and newest.receiver == "team"
    assert [a.labels["alertname"] for a in newest.alerts] == ["A0", "A1"]
    assert newest.alerts_total == 3
    assert [e.text for e in store.incident_history("g", ids[3], 2)] == [
        "acknowledged by ana",
        "sent 3",
    ]
    assert [e.text for e in store.incident_history("g", 0, 5)] == ["before incidents"]
    assert store.incident_sizes("g") == {0: 1, **{i: 3 for i in ids}}
    assert store.incident_ids("g") == ids[:0:-1]
    resolved, n = store.resolved(15.0, 2)
    assert [i.id for i in resolved] == [ids[3], ids[2]] and n == 3
    store.close()


def test_incidents_past_the_retention_are_forgotten(tmp_path: Path) -> None:
    store = AckStore(tmp_path / "alerts.db")
    day = 86400.0
    store.begin_incident("old", 0.0, "team", {})
    store.end_incident("old", [], day)
    store.begin_incident("dropped", 0.0, "team", {})  # its route went: never resolved
    store.begin_incident("live", 0.0, "team", {})
    store.begin_incident("recent", 0.0, "team", {})
    store.end_incident("recent", [], 6 * day)
    store.forget(6 * day + 3600, keep={"live"}, retention_s=5 * day)
    assert store.incidents("old", 5) == ([], 0)
    assert store.incidents("dropped", 5) == ([], 0)
    assert store.incidents("live", 5)[1] == 1 and store.incidents("recent", 5)[1] == 1
    store.close()


def test_history_written_before_incidents_reads_as_incident_zero(tmp_path: Path) -> None:
    db = sqlite3.connect(tmp_path / "alerts.db")
    db.execute(
        "CREATE TABLE am_history (id INTEGER PRIMARY KEY AUTOINCREMENT,"
        " key TEXT NOT NULL, at REAL NOT NULL, kind TEXT NOT NULL, text TEXT NOT NULL)"
    )
    db.execute("INSERT INTO am_history (key, at, kind, text) VALUES ('g', 1, 'ack', 'old')")
    db.commit()
    db.close()
    store = AckStore(tmp_path / "alerts.db")
    AckStore(tmp_path / "alerts.db").close()  # a second process opening it adds nothing twice
    iid = store.begin_incident("g", 2.0, "team", {})
    store.note("g", 3.0, "notification", "new")
    assert [(e.incident, e.text) for e in store.history("g")] == [(0, "old"), (iid, "new")]
    store.close()
