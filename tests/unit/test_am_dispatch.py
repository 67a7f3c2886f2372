"""The alert manager groups, waits, deduplicates, silences, inhibits and mutes as
Alertmanager does, and survives restarts without losing or repeating a notification."""

from __future__ import annotations

import dataclasses
import logging
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alerting.am.config import parse_config
from alerting.am.dispatch import AlertManager, Group, stored_groups
from alerting.am.silences import new_silence
from alerting.notify.base import GroupDelivery, GroupNotification
from alerting.state import Alert, fingerprint

CONFIG = """
route:
  receiver: team
  group_by: [alertname]
  group_wait: 30s
  group_interval: 5m
  repeat_interval: 4h
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      group_by: [alertname, instance]
      group_wait: 0s
      group_interval: 1m
    - matchers: ['team="night"']
      receiver: team
      mute_time_intervals: [always]
time_intervals:
  - name: always
    time_intervals:
      - times: [{start_time: '00:00', end_time: '24:00'}]
inhibit_rules:
  - source_matchers: ['alertname="InstanceDown"']
    target_matchers: ['severity="warning"']
    equal: [instance]
receivers:
  - name: team
    webhook_configs:
      - url: http://127.0.0.1:9/team
  - name: pager
    webhook_configs:
      - url: http://127.0.0.1:9/pager
        send_resolved: false
"""


class Recorder:
    """A receiver that keeps what it was told (the notification is the thing under test)."""

    integration = "webhook"

    def __init__(self, name: str, send_resolved: bool = True) -> None:
        self.name = name
        self.send_resolved = send_resolved
        self.sent: list[GroupNotification] = []
        self.fail = False
        self.defer = False

    def notify_group(self, n: GroupNotification) -> GroupDelivery:
        if self.fail:
            return GroupDelivery(False, error="down")
        if self.defer:  # as a rate-limited e-mail receiver answers
            return GroupDelivery(False, deferred=True, error="rate limit")
        self.sent.append(n)
        return GroupDelivery(True, {"n": str(len(self.sent))})

    def summary(self) -> list[tuple[str, list[tuple[str, str]]]]:
        return [
            (n.status, [(a.labels.get("instance", ""), a.state) for a in n.alerts])
            for n in self.sent
        ]


def alert(name: str, state: str = "firing", at: float = 0.0, **labels: str) -> Alert:
    all_labels = {"alertname": name, **labels}
    return Alert(
        fingerprint(all_labels),
        all_labels,
        {"summary": name},
        state,  # type: ignore[arg-type]
        1.0,
        at,
        fired_at=at,
        resolved_at=None,
    )


def resolved(a: Alert, at: float) -> Alert:
    return dataclasses.replace(a, state="resolved", resolved_at=at)


@pytest.fixture
def team() -> Recorder:
    return Recorder("team")


@pytest.fixture
def pager() -> Recorder:
    return Recorder("pager", send_resolved=False)


@pytest.fixture
def make(tmp_path: Path, team: Recorder, pager: Recorder) -> Iterator:
    managers: list[AlertManager] = []

    def build(text: str = CONFIG) -> AlertManager:
        m = AlertManager(
            parse_config(text, "am.yml"),
            tmp_path / "alerts.db",
            {"team": [team], "pager": [pager]},
            registry=CollectorRegistry(),
            clock=lambda: now[0],
        )
        managers.append(m)
        return m

    now = [0.0]
    build.now = now  # type: ignore[attr-defined]
    yield build
    for m in managers:
        m.close()


def step(m: AlertManager, alerts: list[Alert], at: float) -> None:
    m.clock = lambda: at
    m.process(alerts, at)
    m.deliver_now()


def test_group_wait_batches_alerts_into_one_notification(make, team: Recorder) -> None:
    m = make()
    a = alert("DiskFull", instance="a", severity="warning")
    b = alert("DiskFull", instance="b", severity="warning")
    step(m, [a], 0)
    step(m, [a, b], 10)
    assert team.sent == []  # still within group_wait
    step(m, [a, b], 30)
    assert team.summary() == [("firing", [("a", "firing"), ("b", "firing")])]
    step(m, [a, b], 60)
    step(m, [a, b], 330)
    assert len(team.sent) == 1  # nothing changed: no repeat before repeat_interval


def test_joining_alert_waits_for_group_interval_then_resolved_is_sent(make, team) -> None:
    m = make()
    a = alert("DiskFull", instance="a", severity="warning")
    b = alert("DiskFull", instance="b", severity="warning")
    step(m, [a], 0)
    step(m, [a], 30)
    step(m, [a, b], 60)
    assert len(team.sent) == 1
    step(m, [a, b], 330)  # 30s + 5m
    assert team.summary()[-1] == ("firing", [("a", "firing"), ("b", "firing")])
    step(m, [resolved(a, 400), b], 400)
    step(m, [b], 630)
    assert team.summary()[-1] == ("firing", [("b", "firing"), ("a", "resolved")])
    step(m, [resolved(b, 700)], 700)
    step(m, [], 930)
    assert team.summary()[-1] == ("resolved", [("b", "resolved")])
    assert len(team.sent) == 4
    step(m, [], 5000)
    assert len(team.sent) == 4 and m.groups == {}  # the resolved group is forgotten


def test_repeat_interval_resends_an_unchanged_group(make, team) -> None:
    m = make()
    a = alert("DiskFull", instance="a", severity="warning")
    for t in range(0, 4 * 3600 + 700, 300):
        step(m, [a], t)
    assert len(team.sent) == 2


def test_critical_route_pages_at_once_per_instance_without_resolved(make, pager) -> None:
    m = make()
    a = alert("ShopDown", instance="a", severity="critical")
    b = alert("ShopDown", instance="b", severity="critical")
    step(m, [a, b], 0)
    assert sorted(n.group_labels["instance"] for n in pager.sent) == ["a", "b"]
    step(m, [resolved(a, 10), b], 10)
    step(m, [b], 100)
    assert len(pager.sent) == 2  # send_resolved: false → no resolved notification
    assert [k for k in m.groups if 'instance="a"' in k] == []  # resolved, logged, forgotten
    key = next(k for k in m.groups if 'instance="b"' in k)
    assert key.startswith('{}/{severity="critical"}:')


def test_silence_suppresses_until_it_expires(make, team) -> None:
    m = make()
    a = alert("DiskFull", instance="a", severity="warning")
    sid = m.silences.add(
        new_silence('alertname="DiskFull"', created_by="ana", comment="disk swap", now=0),
        now=0,
    )
    step(m, [a], 0)
    step(m, [a], 30)
    assert team.sent == []
    (view,) = m.alerts(30)
    assert view.state == "suppressed" and view.silenced_by == (sid,)
    m.silences.expire(sid, now=40)
    step(m, [a], 330)
    assert team.summary() == [("firing", [("a", "firing")])]
    assert m.alerts(330)[0].state == "active"
    assert m.silences.query(expired=True, now=400)[0].id == sid  # kept for history
    # silencing an alert that was already sent neither resolves nor re-sends it
    sid2 = m.silences.add(
        new_silence("instance=a", created_by="ana", comment="again", now=400), now=400
    )
    step(m, [a], 630)
    m.silences.expire(sid2, now=700)
    step(m, [a], 930)
    assert len(team.sent) == 1


def test_inhibition_needs_a_firing_source_with_equal_labels(make, team, pager) -> None:
    m = make()
    down = alert("InstanceDown", instance="a", severity="critical")
    slow_a = alert("Slow", instance="a", severity="warning")
    slow_b = alert("Slow", instance="b", severity="warning")
    step(m, [down, slow_a, slow_b], 0)
    step(m, [down, slow_a, slow_b], 30)
    slow = [n for n in team.sent if n.group_labels["alertname"] == "Slow"]
    assert [[a.labels["instance"] for a in n.alerts] for n in slow] == [["b"]]
    states = {v.alert.labels["instance"]: v for v in m.alerts(30) if v.alert.name == "Slow"}
    assert states["a"].inhibited_by == (down.fingerprint,) and states["b"].state == "active"


def test_mute_time_interval_sends_nothing(make, team) -> None:
    m = make()
    a = alert("Backup", team="night")
    step(m, [a], 0)
    step(m, [a], 30)
    step(m, [a], 400)
    assert team.sent == []


def test_restart_during_group_wait_sends_once_at_the_planned_time(make, team) -> None:
    m = make()
    a = alert("DiskFull", instance="a", severity="warning")
    step(m, [a], 0)
    m.close()
    m2 = make()
    step(m2, [a], 20)
    assert team.sent == []
    step(m2, [a], 30)
    step(m2, [a], 40)
    assert len(team.sent) == 1


def test_restart_while_firing_sends_no_duplicate_and_resolves(make, team) -> None:
    m = make()
    a = alert("DiskFull", instance="a", severity="warning")
    step(m, [a], 0)
    step(m, [a], 30)
    m.close()
    m2 = make()
    step(m2, [a], 35)
    step(m2, [a], 330)
    assert len(team.sent) == 1
    step(m2, [resolved(a, 400)], 400)
    m2.close()
    m3 = make()
    step(m3, [], 630)  # the rule engine forgot the resolved alert; the group did not
    assert team.summary()[-1] == ("resolved", [("a", "resolved")])
    assert team.sent[-1].receipt == {"n": "1"}  # the receipt of the first message came back


def test_failed_delivery_is_retried_not_lost(make, team) -> None:
    m = make()
    a = alert("DiskFull", instance="a", severity="warning")
    team.fail = True
    step(m, [a], 0)
    step(m, [a], 30)
    m.close()
    team.fail = False
    m2 = make()  # restarted while the notification was owed
    step(m2, [a], 31)
    assert len(team.sent) == 1


def test_deferred_delivery_is_retried_and_not_counted_as_failed(
    tmp_path: Path, team: Recorder, pager: Recorder
) -> None:
    registry = CollectorRegistry()
    m = AlertManager(
        parse_config(CONFIG, "am.yml"),
        tmp_path / "alerts.db",
        {"team": [team], "pager": [pager]},
        registry=registry,
        clock=lambda: 0.0,
    )
    try:
        a = alert("DiskFull", instance="a", severity="warning")
        team.defer = True
        step(m, [a], 0)
        step(m, [a], 30)  # group_wait over: held back by the receiver
        team.defer = False
        step(m, [a], 31)  # the window allows it: sent once

        def value(name: str, **labels: str) -> float:
            return registry.get_sample_value(name, labels) or 0.0

        assert len(team.sent) == 1
        sent = {"integration": "webhook", "receiver": "team"}
        assert value("alertmanager_notifications_total", **sent) == 1
        assert value("alertmanager_notifications_failed_total", **sent) == 0
        assert value("vigil_notifier_failures_total", receiver="team/webhook/0") == 0
        deferred = {"receiver": "team/webhook/0", "outcome": "deferred"}
        assert value("vigil_alert_notifications_total", **deferred) >= 1
    finally:
        m.close()


def test_bad_reload_keeps_last_good_config(
    tmp_path: Path, team, pager, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "am.yml"
    path.write_text(CONFIG)
    from alerting.am.config import load_config

    registry = CollectorRegistry()
    m = AlertManager(
        load_config(path),
        tmp_path / "alerts.db",
        {"team": [team], "pager": [pager]},
        registry=registry,
        config_path=path,
        build_integrations=lambda c: {"team": [team], "pager": [pager]},
    )
    try:
        a = alert("DiskFull", instance="a", severity="warning")
        step(m, [a], 0)
        path.write_text(CONFIG.replace("group_wait: 30s", "group_wait: soon"))
        import os

        os.utime(path, (1, 1))
        with caplog.at_level(logging.ERROR, logger="vigil.alertmanager"):
            assert m.reload_if_changed() is False
        assert registry.get_sample_value("alertmanager_config_last_reload_successful") == 0
        assert "keeping the last good one" in caplog.text
        assert f"{path}:" in caplog.text and "group_wait: bad duration 'soon'" in caplog.text
        assert m.config.route.group_wait_s == 30
        path.write_text(CONFIG.replace("group_wait: 30s", "group_wait: 10s"))
        os.utime(path, (2, 2))
        assert m.reload_if_changed() is True
        assert m.config.route.group_wait_s == 10
        assert registry.get_sample_value("alertmanager_config_last_reload_successful") == 1
        step(m, [a], 30)  # the group formed before the reload is notified through the new one
        assert team.summary() == [("firing", [("a", "firing")])]
    finally:
        m.close()


def test_posted_alerts_fire_until_ends_at(make, team) -> None:
    from alerting.am.dispatch import api_alert

    m = make()
    labels = {"alertname": "External", "severity": "warning"}
    m.post_alerts([api_alert(labels, {}, 0, 100, 0)])
    step(m, [], 0)
    step(m, [], 30)
    assert team.summary() == [("firing", [("", "firing")])]
    step(m, [], 330)
    assert team.summary()[-1] == ("resolved", [("", "resolved")])
    # without endsAt an alert fires for resolve_timeout (5m), renewed by every post
    other = {"alertname": "Heartbeat", "severity": "warning"}
    m.clock = lambda: 1000.0
    m.post_alerts([api_alert(other, {}, 1000, None, 1000)])
    step(m, [], 1030)
    m.clock = lambda: 1200.0
    m.post_alerts([api_alert(other, {}, 1000, None, 1200)])
    step(m, [], 1400)  # 1000 + 5m passed, but the second post renewed it
    assert m.alerts(1400)[0].alert.labels["alertname"] == "Heartbeat"
    step(m, [], 1600)
    assert m.alerts(1600) == []


def test_metrics_use_alertmanagers_names(tmp_path: Path, team: Recorder, pager: Recorder) -> None:
    registry = CollectorRegistry()
    m = AlertManager(
        parse_config(CONFIG, "am.yml"),
        tmp_path / "alerts.db",
        {"team": [team], "pager": [pager]},
        registry=registry,
        clock=lambda: 0.0,
    )
    try:
        m.silences.add(new_silence("instance=b", created_by="ana", comment="x", now=0.0), now=0.0)
        a = alert("DiskFull", instance="a", severity="warning")
        b = alert("DiskFull", instance="b", severity="warning")
        step(m, [a, b], 0)
        step(m, [a, b], 30)
        team.fail = True
        step(m, [a, b, alert("DiskFull", instance="c", severity="warning")], 330)

        def value(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, labels)

        sent = {"integration": "webhook", "receiver": "team"}
        assert value("alertmanager_notifications_total", **sent) == 2
        assert value("alertmanager_notifications_failed_total", **sent) == 1
        assert value("alertmanager_alerts", state="active") == 2
        assert value("alertmanager_alerts", state="suppressed") == 1
        assert value("alertmanager_silences", state="active") == 1
        assert value("alertmanager_dispatcher_aggregation_groups") == 1
        assert value("vigil_notifier_queue_items", receiver="team/webhook/0") == 1
    finally:
        m.close()


def test_alert_resolving_while_the_notification_is_queued_is_not_lost(make, team) -> None:
    m = make()
    a = alert("DiskFull", instance="a", severity="warning")
    b = alert("DiskFull", instance="b", severity="warning")
    step(m, [a], 0)
    step(m, [a], 30)
    m.process([a, b], 330)  # flush: b joined, queued for delivery
    m.process([resolved(a, 331), b], 331)  # a resolves before the worker delivers
    m.clock = lambda: 332.0
    m.deliver_now()
    step(m, [b], 630)
    step(m, [resolved(b, 700)], 700)
    step(m, [], 930)
    assert team.summary() == [
        ("firing", [("a", "firing")]),
        ("firing", [("b", "firing"), ("a", "resolved")]),
        ("resolved", [("b", "resolved")]),
    ]


def test_alert_that_fired_and_resolved_unheard_sends_nothing(make, team) -> None:
    m = make()
    a = alert("DiskFull", instance="a", severity="warning")
    step(m, [a], 0)
    m.process([a], 30)  # queued
    m.process([resolved(a, 31)], 31)
    m.clock = lambda: 32.0
    m.deliver_now()
    step(m, [], 330)
    assert team.sent == [] and m.groups == {}


class Hanging(Recorder):
    """A receiver whose server never answers until ``release`` is set."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.release = threading.Event()
        self.entered = threading.Event()

    def notify_group(self, n: GroupNotification) -> GroupDelivery:
        self.entered.set()
        self.release.wait(30)
        return super().notify_group(n)


class Flaky(Recorder):
    """A receiver that fails its first ``failures`` attempts; keeps when each came."""

    def __init__(self, name: str, failures: int) -> None:
        super().__init__(name)
        self.failures = failures
        self.attempts: list[float] = []

    def notify_group(self, n: GroupNotification) -> GroupDelivery:
        self.attempts.append(time.monotonic())
        if len(self.attempts) <= self.failures:
            return GroupDelivery(False, error="503 from the receiver")
        return super().notify_group(n)


def test_a_hanging_or_failing_receiver_never_holds_up_evaluation_or_the_others(
    tmp_path: Path, team: Recorder
) -> None:
    """Each integration has its own worker: while one receiver hangs and another fails
    (retried with growing back-off, counted), evaluation passes go on and the third
    receiver is told at once; the hanging one is told once it answers."""
    text = """
route:
  receiver: team
  group_by: [alertname]
  group_wait: 0s
  routes:
    - {receiver: hang, continue: true}
    - {receiver: flaky, continue: true}
    - {receiver: team}
receivers: [{name: team}, {name: hang}, {name: flaky}]
"""
    hang, flaky = Hanging("hang"), Flaky("flaky", failures=3)
    registry = CollectorRegistry()
    m = AlertManager(
        parse_config(text, "am.yml"),
        tmp_path / "alerts.db",
        {"team": [team], "hang": [hang], "flaky": [flaky]},
        registry=registry,
        backoff_s=0.05,
        max_backoff_s=5.0,
    )
    m.start()
    try:
        a = alert("DiskFull", instance="a")
        m.process([a])
        assert hang.entered.wait(10)

        def passes() -> None:
            for _ in range(20):
                m.process([a])

        evaluation = threading.Thread(target=passes)
        evaluation.start()
        evaluation.join(10)
        assert not evaluation.is_alive(), "an evaluation pass waited for a receiver"
        deadline = time.monotonic() + 10
        while (not team.sent or not flaky.sent) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(team.sent) == 1 and len(flaky.sent) == 1
        assert hang.sent == []  # still hanging: the others did not wait for it
        gaps = [b - a for a, b in zip(flaky.attempts, flaky.attempts[1:], strict=False)]
        assert len(gaps) == 3 and gaps[0] < gaps[1] < gaps[2]  # 0.05 s, 0.1 s, 0.2 s (+25%)
        failed = {"integration": "webhook", "receiver": "flaky"}
        assert registry.get_sample_value("alertmanager_notifications_failed_total", failed) == 3

        hang.release.set()
        deadline = time.monotonic() + 10
        while not hang.sent and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(hang.sent) == 1 and len(team.sent) == 1 and len(flaky.sent) == 1
    finally:
        hang.release.set()
        m.stop(5)
        m.close()


def test_sibling_routes_that_match_alike_each_notify_their_receiver(
    tmp_path: Path, team: Recorder, pager: Recorder
) -> None:
    """``continue: true`` to a sibling with the same (here: no) matchers: each route has
    its own group and its receiver is told, as Alertmanager keeps groups per route."""
    text = """
route:
  receiver: team
  group_by: [alertname]
  group_wait: 0s
  routes:
    - {receiver: pager, continue: true}
    - {receiver: team}
receivers: [{name: team}, {name: pager}]
"""
    m = AlertManager(
        parse_config(text, "am.yml"),
        tmp_path / "alerts.db",
        {"team": [team], "pager": [pager]},
        registry=CollectorRegistry(),
        clock=lambda: 0.0,
    )
    try:
        step(m, [alert("DiskFull", instance="a")], 0)
        assert [n.group_key for n in pager.sent] == ['{}/{}:{alertname="DiskFull"}']
        assert [n.group_key for n in team.sent] == ['{}/{}/1:{alertname="DiskFull"}']
    finally:
        m.close()


def test_groups_saved_before_the_firing_column_are_read_firing_first(tmp_path: Path) -> None:
    db = tmp_path / "alerts.db"
    old = sqlite3.connect(db)  # alerts.db as written before am_groups.firing existed
    old.execute("CREATE TABLE am_groups (key TEXT PRIMARY KEY, data TEXT NOT NULL)")
    for name, state in (("A", "resolved"), ("B", "firing"), ("C", "resolved")):
        g = Group(f"0:{name}", "0", "team", {}, {"fp": alert(name, state)}, 0.0, 0.0)
        old.execute("INSERT INTO am_groups VALUES (?, ?)", (g.key, g.to_json()))
    old.commit()
    old.close()
    assert [g.key for g in stored_groups(db)] == ["0:B", "0:A", "0:C"]
    assert [g.key for g in stored_groups(db, 2)] == ["0:B", "0:A"]


def test_history_of_a_resolved_group_is_kept_for_the_retention_then_deleted(
    make, team: Recorder
) -> None:
    m = make()
    a = alert("DiskFull", instance="a", severity="warning")
    step(m, [a], 0)
    step(m, [a], 30)
    (key,) = m.groups
    step(m, [resolved(a, 60)], 60)
    step(m, [], 330)
    assert m.groups == {} and [n.status for n in team.sent] == ["firing", "resolved"]
    texts = [h.text for h in m.acks.history(key)]
    assert texts == [
        "sent firing to team/webhook/0: 1 alert (1 firing, 0 resolved), new message",
        "sent resolved to team/webhook/0: 1 alert (0 firing, 1 resolved), new message",
    ]
    step(m, [], 330 + 119 * 3600)
    assert len(m.acks.history(key)) == 2
    step(m, [], 330 + 121 * 3600)
    assert m.acks.history(key) == []
