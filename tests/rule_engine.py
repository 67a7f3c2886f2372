"""Evaluate shipped rule files with the real alert engine over a store's samples."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry

from alerting.engine import AlertEngine
from alerting.rules import load_rules
from alerting.state import AlertBook, AlertDB
from siem.model import Store


def firing(tmp_path: Path, store: Store, rules: Path, times: list[float]) -> list[set[str]]:
    """The names of the firing alerts of ``rules`` after evaluating at each of ``times``."""
    engine = AlertEngine(
        store,
        load_rules([rules]),
        AlertBook(AlertDB(tmp_path / "alerts.db")),
        [],
        registry=CollectorRegistry(),
    )
    rv = []
    for at in times:
        engine.run_once(at=at)
        rv.append({a.name for a in engine.book.alerts() if a.state == "firing"})
    return rv
