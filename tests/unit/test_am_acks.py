"""The alert groups' history in alerts.db stays bounded: the newest entries per group, and
the history of groups gone longer than the retention is deleted."""

from __future__ import annotations

from pathlib import Path

import pytest

from alerting.am import acks
from alerting.am.acks import AckStore


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
