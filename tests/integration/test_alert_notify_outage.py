"""Notifications outside the evaluation loop: Slack down, evaluation on time, nothing lost
or repeated.

The issue's drill: 60 s of Slack answering 500 while rules are evaluated every
second. Evaluation must keep its interval, and once Slack is back every
notification arrives exactly once. This test runs for about 70 s on purpose.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until
from prometheus_client import CollectorRegistry
from slack_server import Call, SlackServer

from alerting.engine import AlertEngine
from alerting.notify.base import Delivery, Notifier
from alerting.notify.slack import SlackNotifier
from alerting.rules import load_rules
from alerting.state import Alert, AlertBook, AlertDB
from siem.memory import MemoryStore
from siem.model import Sample, make_labels

TOKEN = "xoxb-outage"
OUTAGE_S = 60.0
RULES = """\
groups:
  - name: outage
    interval: 1s
    rules:
      - alert: InstanceDown
        expr: up == 0
        labels:
          severity: critical
        annotations:
          summary: "{{ $labels.instance }} is down"
"""


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer(token=TOKEN) as server:
        yield server


def up(store: MemoryStore, instance: str, value: float) -> None:
    labels = make_labels("up", job="shop", instance=instance)
    store.write(samples=[Sample(labels, time.time(), value)])


def posts(slack: SlackServer, instance: str) -> list[Call]:
    """Top-level messages (not thread replies) Slack accepted about ``instance``."""
    return [
        c
        for c in slack.ok_calls("chat.postMessage")
        if "thread_ts" not in c.payload and f"{instance} is down" in json.dumps(c.payload)
    ]


def test_alert_notify_slack_outage_keeps_evaluation_on_time_and_delivers_once(
    tmp_path: Path, slack: SlackServer
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    store = MemoryStore()
    registry = CollectorRegistry()
    # Slack's own retry policy as shipped (5 tries, backoff from 0.5 s): what stalled the loop.
    notifier = SlackNotifier(TOKEN, "#alerts", api_url=slack.api_url)
    engine = AlertEngine(
        store,
        load_rules([rules]),
        AlertBook(AlertDB(tmp_path / "alerts.db")),
        [notifier],
        registry=registry,
        max_backoff_s=3.0,
    )

    def evaluations() -> float:
        return (
            registry.get_sample_value("vigil_alert_group_evaluations_total", {"group": "outage"})
            or 0.0
        )

    def metric(name: str) -> float:
        return registry.get_sample_value(name, {"receiver": "slack"}) or 0.0

    up(store, "a:1", 0.0)
    up(store, "b:1", 1.0)
    up(store, "c:1", 1.0)
    stop = threading.Event()
    thread = threading.Thread(target=engine.run, args=(stop,))
    thread.start()
    try:
        wait_until("a:1's alert in Slack", lambda: len(posts(slack, "a:1")) == 1, 10)

        slack.outage(500)
        started, before = time.monotonic(), evaluations()
        up(store, "b:1", 0.0)  # two new alerts and one resolution while Slack is down
        up(store, "c:1", 0.0)
        up(store, "a:1", 1.0)
        wait_until("a failed delivery", lambda: metric("vigil_notifier_failures_total") > 0, 50)
        assert metric("vigil_notifier_queue_items") == 3
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - started)))
        during = evaluations() - before
        elapsed = time.monotonic() - started
        slack.outage(None)

        # The bound: at a 1 s interval, still (about) one evaluation per second.
        assert during >= 0.9 * elapsed, f"{during:.0f} evaluations in {elapsed:.0f} s"
        assert slack.ok_calls("chat.update") == []
        assert len(slack.ok_calls("chat.postMessage")) == 1

        def all_told() -> bool:
            return (
                len(posts(slack, "b:1")) == 1
                and len(posts(slack, "c:1")) == 1
                and len(slack.ok_calls("chat.update")) == 1
            )

        wait_until("every notification after the outage", all_told, 30)
        time.sleep(3)  # a few more passes: nothing is sent twice
    finally:
        stop.set()
        thread.join(timeout=15)
    assert not thread.is_alive()
    assert [len(posts(slack, i)) for i in ("a:1", "b:1", "c:1")] == [1, 1, 1]
    (update,) = slack.ok_calls("chat.update")
    assert update.payload["ts"] == "1700000000.000100"  # a:1's message, the first one posted
    replies = [c for c in slack.ok_calls("chat.postMessage") if "thread_ts" in c.payload]
    assert [r.payload["thread_ts"] for r in replies] == [update.payload["ts"]]
    assert metric("vigil_notifier_queue_items") == 0
    assert metric("vigil_notifier_dropped_total") == 0


class Gate:
    """A notifier that blocks until released and records what it was told."""

    name = "gate"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.told: list[tuple[str, str]] = []

    def notify(self, alerts: list[Alert]) -> list[Delivery]:
        self.release.wait(30)
        self.told.extend((a.labels["instance"], a.state) for a in alerts)
        return [Delivery(a.fingerprint, True) for a in alerts]


def test_alert_notify_full_queue_is_counted_and_waits_for_a_later_pass(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    store = MemoryStore()
    registry = CollectorRegistry()
    gate = Gate()
    notifiers: list[Notifier] = [gate]
    engine = AlertEngine(
        store,
        load_rules([rules]),
        AlertBook(AlertDB(tmp_path / "alerts.db")),
        notifiers,
        registry=registry,
        queue_size=1,
    )
    for instance in ("a:1", "b:1", "c:1"):
        up(store, instance, 0.0)
    engine.outboxes.start()
    try:
        # A second after the samples were written, so the evaluation surely sees them all
        # (this test failed once in a fresh-clone run with nothing dropped, as if it had not).
        engine.evaluate_group(engine.groups[0], time.time() + 1)
        engine.notify()  # the worker takes one alert and blocks in the receiver
        engine.notify()  # the queue (size 1) cannot take the other two: counted, not blocked
        assert gate.told == []  # both passes returned while the receiver was still blocked
        dropped = registry.get_sample_value("vigil_notifier_dropped_total", {"receiver": "gate"})
        assert dropped is not None and dropped >= 2
        assert registry.get_sample_value("vigil_notifier_queue_items", {"receiver": "gate"}) == 1
        gate.release.set()

        def told_all() -> bool:
            engine.notify()  # later passes offer what is still undelivered
            return sorted(gate.told) == [("a:1", "firing"), ("b:1", "firing"), ("c:1", "firing")]

        wait_until("every alert told once", told_all, 10)
    finally:
        engine.outboxes.stop(5)
    assert engine.book.needing("gate") == []


class Down:
    """A receiver that is down: every delivery fails."""

    name = "slack"

    def notify(self, alerts: list[Alert]) -> list[Delivery]:
        return [Delivery(a.fingerprint, False, error="down") for a in alerts]


def test_alert_notify_restart_delivers_what_was_queued_exactly_once(
    tmp_path: Path, slack: SlackServer
) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    store = MemoryStore()
    up(store, "a:1", 0.0)

    def start(notifier: Notifier) -> AlertEngine:
        book = AlertBook(AlertDB(tmp_path / "alerts.db"))
        return AlertEngine(
            store, load_rules([rules]), book, [notifier], registry=CollectorRegistry()
        )

    first = start(Down())
    first.run_once()
    assert len(first.outboxes.boxes[0]) == 1  # queued, undelivered, when the process stops
    first.book.db.close()
    for _ in range(3):  # restarts with Slack back: told once, never again
        again = start(SlackNotifier(TOKEN, "#alerts", api_url=slack.api_url))
        again.run_once()
        again.book.db.close()
    assert len(posts(slack, "a:1")) == 1
