"""The shipped ShopDatabaseLocked rule (config/rules/shop.yaml) fires on the shop's
shop_db_errors_total, through the alert engine."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import rule_engine

from alerting.rules import load_rules
from siem.memory import MemoryStore
from siem.model import Sample, make_labels

ROOT = Path(__file__).parents[2]
SHIPPED = ROOT / "config" / "rules" / "shop.yaml"
T0 = 1_700_000_000.0
STEP = 15.0
SHOP = {"job": "shop", "instance": "127.0.0.1:8001"}


def errors(store: MemoryStore, kind: str, end: float, total: Callable[[float], float]) -> None:
    """shop_db_errors_total{kind} every STEP seconds from T0 - 900 to ``end``."""
    labels = make_labels("shop_db_errors_total", kind=kind, **SHOP)
    times = [T0 - 900 + i * STEP for i in range(int((end - T0 + 900) // STEP) + 1)]
    store.write(samples=[Sample(labels, t, total(t)) for t in times])


def firing(tmp_path: Path, store: MemoryStore, times: list[float]) -> list[bool]:
    states = rule_engine.firing(tmp_path, store, SHIPPED, times)
    return ["ShopDatabaseLocked" in names for names in states]


def test_shop_database_locked_rule_has_its_runbook() -> None:
    (rule,) = [r for g in load_rules([SHIPPED]) for r in g.rules if r.name == "ShopDatabaseLocked"]
    text = (ROOT / rule.annotations["runbook_url"]).read_text(encoding="utf-8")
    assert "alert: ShopDatabaseLocked" in text
    for section in ("## Symptoms", "## Impact", "## Diagnosis", "## Remedy"):
        assert section in text


def test_shop_database_locked_fires_a_minute_after_repeated_lock_errors(tmp_path: Path) -> None:
    store = MemoryStore()
    # From T0 on, one "database is locked" every 30 s.
    errors(store, "busy", T0 + 600, lambda t: max(0.0, (t - T0) // 30))
    # Three errors at T0 + 90: pending at the T0 + 120 evaluation, firing a minute later.
    states = firing(tmp_path, store, [T0 - 60, T0 + 60, T0 + 120, T0 + 165, T0 + 180, T0 + 240])
    assert states == [False, False, False, False, True, True]


def test_shop_database_locked_quiet_on_a_single_error_or_other_kinds(tmp_path: Path) -> None:
    store = MemoryStore()
    errors(store, "busy", T0 + 600, lambda t: 1.0 if t >= T0 else 0.0)  # one, then none
    errors(store, "ioerr", T0 + 600, lambda t: max(0.0, (t - T0) // 10))  # not a lock
    assert firing(tmp_path, store, [T0 + 60 * m for m in range(8)]) == [False] * 8
