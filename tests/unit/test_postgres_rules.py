"""The shipped PostgreSQL rules (config/rules/postgres.yaml) fire on the poller's metrics."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import rule_engine

from alerting.rules import check_files, load_rules
from siem.memory import MemoryStore
from siem.model import Sample, make_labels

ROOT = Path(__file__).parents[2]
SHIPPED = ROOT / "config" / "rules" / "postgres.yaml"
T0 = 1_700_000_000.0
STEP = 15.0
PG = {"job": "postgres", "instance": "127.0.0.1:5432"}


def put(
    store: MemoryStore,
    name: str,
    labels: dict[str, str],
    end: float,
    value: Callable[[float], float],
) -> None:
    """One sample every STEP seconds from T0 - 900 to ``end``, valued ``value(t)``."""
    start = T0 - 900
    steps = int((end - start) // STEP) + 1
    times = [start + i * STEP for i in range(steps)]
    store.write(samples=[Sample(make_labels(name, **labels), t, value(t)) for t in times])


def connections(store: MemoryStore, end: float, idle: Callable[[float], float]) -> None:
    put(
        store,
        "pg_stat_activity_count",
        {**PG, "datname": "shop", "state": "active"},
        end,
        lambda t: 3,
    )
    put(store, "pg_stat_activity_count", {**PG, "datname": "shop", "state": "idle"}, end, idle)


def firing(tmp_path: Path, store: MemoryStore, times: list[float]) -> list[set[str]]:
    """The names of the firing alerts after evaluating at each of ``times``."""
    return rule_engine.firing(tmp_path, store, SHIPPED, times)


def test_postgres_rules_load_with_runbooks() -> None:
    assert check_files([str(SHIPPED)]) == []
    (group,) = load_rules([SHIPPED])
    assert {rule.name for rule in group.rules} == {"PostgresDown", "PostgresTooManyConnections"}
    for rule in group.rules:
        text = (ROOT / rule.annotations["runbook_url"]).read_text(encoding="utf-8")
        assert f"alert: {rule.name}" in text
        for section in ("## Symptoms", "## Impact", "## Diagnosis", "## Remedy"):
            assert section in text


def test_postgres_rules_quiet_when_healthy(tmp_path: Path) -> None:
    store = MemoryStore()
    put(store, "up", PG, T0 + 900, lambda t: 1.0)
    connections(store, T0 + 900, lambda t: 20.0)
    assert firing(tmp_path, store, [T0 + 60 * m for m in range(15)]) == [set()] * 15


def test_postgres_rules_down_fires_after_a_minute(tmp_path: Path) -> None:
    store = MemoryStore()
    put(store, "up", PG, T0 + 900, lambda t: 0.0 if t >= T0 else 1.0)
    connections(store, T0, lambda t: 20.0)
    states = firing(tmp_path, store, [T0 + 15, T0 + 45, T0 + 90])
    assert states == [set(), set(), {"PostgresDown"}]


def test_postgres_rules_too_many_connections_after_five_minutes(tmp_path: Path) -> None:
    store = MemoryStore()
    put(store, "up", PG, T0 + 900, lambda t: 1.0)
    # 3 active + 90 idle from T0 on: 93 connections.
    connections(store, T0 + 900, lambda t: 90.0 if t >= T0 else 20.0)
    states = firing(tmp_path, store, [T0 + 15, T0 + 240, T0 + 330])
    assert states == [set(), set(), {"PostgresTooManyConnections"}]
