"""Alert states: inactive → pending (for) → firing → resolved, persisted in SQLite."""

from __future__ import annotations

import json
from pathlib import Path

from prometheus_client import CollectorRegistry

from alerting.engine import AlertEngine
from alerting.promql import Engine
from alerting.rules import Rule, load_rules
from alerting.state import AlertBook, AlertDB, Hit, fingerprint, rule_key
from siem.memory import MemoryStore
from siem.model import Sample, make_labels

RULE = Rule(
    "ShopInstanceDown",
    expr='up{job="shop"} == 0',
    for_s=30.0,
    labels={"severity": "critical"},
    annotations={"summary": "{{ $labels.instance }} down ({{ $value }})"},
)
DOWN = Hit(make_labels("up", job="shop", instance="a:1"), 0.0)


def book(tmp_path: Path) -> AlertBook:
    return AlertBook(AlertDB(tmp_path / "alerts.db"))


def test_alert_state_pending_then_firing_after_for(tmp_path: Path) -> None:
    alerts = book(tmp_path)
    (change,) = alerts.update(RULE, [DOWN], now=100.0)
    assert (change.before, change.after) == (None, "pending")
    assert change.alert.labels == {
        "alertname": "ShopInstanceDown",
        "instance": "a:1",
        "job": "shop",
        "severity": "critical",
    }
    assert change.alert.annotations == {"summary": "a:1 down (0)"}
    assert alerts.update(RULE, [DOWN], now=120.0) == []
    (change,) = alerts.update(RULE, [DOWN], now=130.0)
    assert (change.before, change.after) == ("pending", "firing")
    assert change.alert.active_at == 100.0
    assert change.alert.fired_at == 130.0


def test_alert_state_zero_for_fires_at_once(tmp_path: Path) -> None:
    rule = Rule("Now", expr="up == 0")
    (change,) = book(tmp_path).update(rule, [DOWN], now=1.0)
    assert (change.before, change.after) == (None, "firing")


def test_alert_state_pending_that_clears_goes_inactive(tmp_path: Path) -> None:
    alerts = book(tmp_path)
    alerts.update(RULE, [DOWN], now=100.0)
    (change,) = alerts.update(RULE, [], now=110.0)
    assert (change.before, change.after) == ("pending", None)
    assert alerts.alerts() == []
    (change,) = alerts.update(RULE, [DOWN], now=120.0)
    assert change.alert.active_at == 120.0  # the `for` clock starts again


def test_alert_state_firing_resolves_when_result_is_empty(tmp_path: Path) -> None:
    alerts = book(tmp_path)
    alerts.update(RULE, [DOWN], now=100.0)
    alerts.update(RULE, [DOWN], now=130.0)
    (change,) = alerts.update(RULE, [], now=200.0)
    assert (change.before, change.after) == ("firing", "resolved")
    assert change.alert.resolved_at == 200.0
    assert alerts.update(RULE, [], now=205.0) == []


def test_alert_state_tracks_each_fingerprint(tmp_path: Path) -> None:
    alerts = book(tmp_path)
    other = Hit(make_labels("up", job="shop", instance="b:2"), 0.0)
    changes = alerts.update(RULE, [DOWN, other], now=100.0)
    assert len({c.alert.fingerprint for c in changes}) == 2
    alerts.update(RULE, [DOWN, other], now=130.0)
    (change,) = alerts.update(RULE, [other], now=140.0)
    assert change.alert.labels["instance"] == "a:1"
    assert change.after == "resolved"
    assert [a.state for a in alerts.alerts()] == ["resolved", "firing"]


def test_alert_state_fingerprint_ignores_label_order() -> None:
    assert fingerprint({"a": "1", "b": "2"}) == fingerprint({"b": "2", "a": "1"})
    assert fingerprint({"a": "1"}) != fingerprint({"a": "2"})


def test_alert_state_survives_restart_with_receipts(tmp_path: Path) -> None:
    alerts = book(tmp_path)
    alerts.update(RULE, [DOWN], now=100.0)
    (change,) = alerts.update(RULE, [DOWN], now=130.0)
    fp = change.alert.fingerprint
    alerts.delivered(change.alert, "slack", "firing", {"channel": "C1", "ts": "1700000000.000100"})
    alerts.db.close()

    reopened = book(tmp_path)
    (alert,) = reopened.alerts()
    assert (alert.state, alert.fired_at, alert.active_at) == ("firing", 130.0, 100.0)
    assert alert.receipts == {"slack": {"channel": "C1", "ts": "1700000000.000100"}}
    assert reopened.needing("slack") == []
    assert reopened.update(RULE, [DOWN], now=140.0) == []  # no second "firing"
    (change,) = reopened.update(RULE, [], now=150.0)
    assert change.after == "resolved"
    assert [a.fingerprint for a in reopened.needing("slack")] == [fp]


def test_alert_state_pending_survives_restart(tmp_path: Path) -> None:
    alerts = book(tmp_path)
    alerts.update(RULE, [DOWN], now=100.0)
    alerts.db.close()
    reopened = book(tmp_path)
    (change,) = reopened.update(RULE, [DOWN], now=131.0)
    assert (change.before, change.after) == ("pending", "firing")


def test_alert_state_forgets_resolved_once_every_receiver_knows(tmp_path: Path) -> None:
    alerts = book(tmp_path)
    alerts.update(RULE, [DOWN], now=100.0)
    (fired,) = alerts.update(RULE, [DOWN], now=130.0)
    fp = fired.alert.fingerprint
    (resolved,) = alerts.update(RULE, [], now=140.0)
    alerts.delivered(resolved.alert, "slack", "resolved", {})
    assert alerts.forget_delivered(["slack", "webhook"]) == []
    alerts.delivered(resolved.alert, "webhook", "resolved", {})
    assert alerts.forget_delivered(["slack", "webhook"]) == [fp]
    assert book(tmp_path).alerts() == []


def test_alert_state_failed_delivery_keeps_partial_receipt(tmp_path: Path) -> None:
    alerts = book(tmp_path)
    (fired,) = alerts.update(Rule("Now", expr="up == 0"), [DOWN], now=1.0)
    alerts.delivered(fired.alert, "slack", None, {"ts": "1.1"})
    (alert,) = alerts.needing("slack")
    assert alert.receipts["slack"] == {"ts": "1.1"}
    assert "slack" not in alert.delivered


def test_alert_state_delivery_of_an_earlier_episode_is_ignored(tmp_path: Path) -> None:
    alerts = book(tmp_path)
    rule = Rule("Now", expr="up == 0")
    (first,) = alerts.update(rule, [DOWN], now=1.0)
    alerts.update(rule, [], now=2.0)
    (again,) = alerts.update(rule, [DOWN], now=3.0)  # the same label set fires anew
    alerts.delivered(first.alert, "slack", "firing", {"ts": "1.1"})
    (alert,) = alerts.needing("slack")
    assert alert.active_at == again.alert.active_at
    assert alert.receipts == {}
    assert alert.delivered == {}


SAME_NAME_RULES = """\
groups:
  - name: disk
    rules:
      - alert: DiskFilling
        expr: disk_used_ratio > 0.8
        labels: {severity: warning}
      - alert: DiskFilling
        expr: disk_used_ratio > 0.9
        labels: {severity: critical}
"""


def test_alert_state_same_named_rules_keep_each_others_alerts(tmp_path: Path) -> None:
    """A warning/critical pair with one alert name (kube-prometheus, Sloth) both fire and
    stay firing: evaluating one rule does not resolve the other's alert."""
    (tmp_path / "r.yaml").write_text(SAME_NAME_RULES)
    store = MemoryStore()
    engine = AlertEngine(
        store,
        load_rules([tmp_path / "r.yaml"]),
        book(tmp_path),
        [],
        evaluator=Engine(store),
        registry=CollectorRegistry(),
    )
    for t in (10.0, 20.0, 30.0, 40.0):
        store.write(samples=[Sample(make_labels("disk_used_ratio", host="h1"), t, 0.95)])
        engine.run_once(t)
        firing = {a.labels["severity"]: a for a in engine.book.alerts() if a.state == "firing"}
        assert sorted(firing) == ["critical", "warning"], t
        assert {a.fired_at for a in firing.values()} == {10.0}  # never resolved and re-fired
    rule_c = engine.groups[0].rules[1]
    assert [a.labels["severity"] for a in engine.book.rule_alerts(rule_c)] == ["critical"]
    store.write(samples=[Sample(make_labels("disk_used_ratio", host="h1"), 50.0, 0.85)])
    engine.run_once(50.0)
    states = {a.labels["severity"]: (a.state, a.fired_at) for a in engine.book.alerts()}
    assert states == {"warning": ("firing", 10.0)}  # critical resolved (and, told to no
    # receiver, forgotten); warning still the same firing alert


def test_alert_state_rows_from_before_rule_keys_are_adopted(tmp_path: Path) -> None:
    """alerts.db rows written before alerts were keyed by rule (no ``rule`` in their
    JSON) are taken over by the rule that matches them, not resolved by its twin."""
    warning = Rule("DiskFilling", expr="x > 0.8", labels={"severity": "warning"})
    critical = Rule("DiskFilling", expr="x > 0.9", labels={"severity": "critical"})
    hit = Hit(make_labels("x", host="h1"), 0.95)
    old = book(tmp_path)
    old.update(warning, [hit], now=10.0)
    old.update(critical, [hit], now=10.0)
    db = old.db._db
    for fp, data in db.execute("SELECT fingerprint, data FROM alerts").fetchall():
        legacy = json.loads(data)
        del legacy["rule"]
        db.execute(
            "UPDATE alerts SET rule = ?, data = ? WHERE fingerprint = ?",
            ("DiskFilling", json.dumps(legacy), fp),
        )
    old.db.close()
    alerts = book(tmp_path)
    assert {a.rule for a in alerts.alerts()} == {""}
    assert alerts.update(warning, [hit], now=20.0) == []
    assert alerts.update(critical, [], now=20.0)[0].alert.labels["severity"] == "critical"
    states = {a.labels["severity"]: (a.state, a.rule) for a in alerts.alerts()}
    assert states["warning"] == ("firing", rule_key(warning))
    assert states["critical"][0] == "resolved"


def test_alert_state_same_name_and_labels_other_expr_are_separate_rules(tmp_path: Path) -> None:
    """Two rules differing only by their expression each keep their own alerts."""
    cpu = Rule("HostTrouble", expr="cpu > 0.9", labels={"severity": "warning"})
    mem = Rule("HostTrouble", expr="mem > 0.9", labels={"severity": "warning"})
    alerts = book(tmp_path)
    alerts.update(cpu, [Hit(make_labels("cpu", host="h1"), 0.95)], now=10.0)
    alerts.update(mem, [Hit(make_labels("mem", host="h2"), 0.95)], now=10.0)
    for now in (20.0, 30.0):
        assert alerts.update(cpu, [Hit(make_labels("cpu", host="h1"), 0.95)], now=now) == []
        assert alerts.update(mem, [Hit(make_labels("mem", host="h2"), 0.95)], now=now) == []
    assert sorted(a.labels["host"] for a in alerts.alerts() if a.state == "firing") == ["h1", "h2"]


def test_alert_state_reload_with_an_edited_expr_keeps_the_firing_alert(tmp_path: Path) -> None:
    """As Prometheus carries state over by name and labels: the edited rule inherits the
    alert (no resolve, no new episode); a rule that is gone takes its alerts with it."""
    old = Rule("DiskFilling", expr="x > 0.9", labels={"severity": "critical"})
    new = Rule("DiskFilling", expr="x > 0.95", labels={"severity": "critical"})
    hit = Hit(make_labels("x", host="h1"), 0.97)
    alerts = book(tmp_path)
    alerts.update(old, [hit], now=10.0)
    alerts.forget_rules_except([new])
    (alert,) = alerts.alerts()
    assert alert.rule == rule_key(new) and alert.fired_at == 10.0
    assert alerts.update(new, [hit], now=20.0) == []
    alerts.forget_rules_except([Rule("Other", expr="y > 1")])
    assert alerts.alerts() == []
