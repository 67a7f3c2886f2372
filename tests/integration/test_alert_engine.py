"""The alert engine end to end: stored samples and events → states → Slack, webhook, events."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from slack_server import SlackServer
from webhook_receiver import Receiver

from alerting.engine import AlertEngine, RuleSource
from alerting.notify.base import Notifier
from alerting.notify.slack import MAX_TRIES, SlackNotifier
from alerting.notify.webhook import WebhookNotifier
from alerting.rules import RuleGroup, load_rules
from alerting.state import AlertBook, AlertDB
from siem.memory import MemoryStore
from siem.model import Event, EventQuery, Sample, make_labels

SHIPPED = Path(__file__).parents[2] / "config" / "rules" / "shop.yaml"
T0 = 1_700_000_000.0
TOKEN = "xoxb-engine"


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer(token=TOKEN) as server:
        yield server


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rv = Receiver()
    yield rv
    rv.close()


def shop_traffic(
    store: MemoryStore, totals: dict[str, float], start: float, end: float, errors: int
) -> None:
    """Counters of a shop instance every 5 s: 100 OK and ``errors`` 502 more per step."""
    t = start
    samples = []
    while t <= end:
        totals["200"] = totals.get("200", 0.0) + 100
        totals["502"] = totals.get("502", 0.0) + errors
        for status, total in totals.items():
            labels = make_labels(
                "shop_http_requests_total",
                job="shop",
                instance="a:1",
                route="/api/checkout",
                status=status,
            )
            samples.append(Sample(labels, t, total))
        t += 5
    store.write(samples=samples)


def engine_for(
    tmp_path: Path,
    store: MemoryStore,
    groups: list[RuleGroup],
    notifiers: list[Notifier],
    registry: CollectorRegistry,
) -> AlertEngine:
    return AlertEngine(
        store,
        groups,
        AlertBook(AlertDB(tmp_path / "alerts.db")),
        notifiers,
        runbook_base_url="http://127.0.0.1:8090/",
        registry=registry,
    )


def test_alert_engine_high_error_rate_fires_and_resolves(
    tmp_path: Path, slack: SlackServer, receiver: Receiver
) -> None:
    store = MemoryStore()
    registry = CollectorRegistry()
    notifiers: list[Notifier] = [
        SlackNotifier(TOKEN, "#alerts", api_url=slack.api_url, backoff_s=0.01),
        WebhookNotifier(receiver.url, external_url="http://127.0.0.1:8090/"),
    ]
    engine = engine_for(tmp_path, store, load_rules([SHIPPED]), notifiers, registry)
    totals: dict[str, float] = {}
    shop_traffic(store, totals, T0 - 120, T0 + 30, errors=10)

    first = engine.run_once(at=T0)
    assert [(c.alert.name, c.after) for c in first] == [("ShopHighErrorRate", "pending")]
    assert slack.calls == []
    fired = engine.run_once(at=T0 + 30)
    assert [(c.alert.name, c.after) for c in fired] == [("ShopHighErrorRate", "firing")]
    assert (
        fired[0].alert.annotations["summary"]
        == "Shop 5xx ratio on /api/checkout at a:1 is 9.091% (above 5%)"
    )

    (post,) = slack.ok_calls("chat.postMessage")
    assert post.payload["blocks"][0]["text"]["text"] == "🔴 [FIRING] ShopHighErrorRate"
    runbook = "http://127.0.0.1:8090/runbooks/shop-high-error-rate.md"
    assert runbook in post.payload["text"]
    (hook,) = receiver.bodies
    assert hook["status"] == "firing"
    assert hook["alerts"][0]["annotations"]["runbook_url"] == runbook

    assert engine.run_once(at=T0 + 35) == []  # still firing: nobody is told twice
    assert len(slack.ok_calls("chat.postMessage")) == 1

    shop_traffic(store, totals, T0 + 35, T0 + 120, errors=0)  # rolled back
    resolved = engine.run_once(at=T0 + 120)
    assert [(c.alert.name, c.after) for c in resolved] == [("ShopHighErrorRate", "resolved")]
    (update,) = slack.ok_calls("chat.update")
    assert update.payload["ts"] == "1700000000.000100"
    reply = slack.ok_calls("chat.postMessage")[1]
    assert reply.payload["thread_ts"] == "1700000000.000100"
    assert reply.payload["text"] == "✅ ShopHighErrorRate resolved after 1m 30s."
    assert receiver.bodies[1]["status"] == "resolved"
    assert engine.book.alerts() == []  # every receiver knows: forgotten

    events = store.search(EventQuery(dataset="vigil.alert"))
    states = sorted((e.doc["vigil"]["alert"]["state"], e.timestamp) for e in events)
    assert states == [("firing", T0 + 30), ("pending", T0), ("resolved", T0 + 120)]
    assert all(e.doc["rule"]["name"] == "ShopHighErrorRate" for e in events)
    ok = registry.get_sample_value(
        "vigil_alert_notifications_total", {"receiver": "slack", "outcome": "success"}
    )
    assert ok == 2


def test_alert_engine_webhook_payload_is_alertmanager_v4(
    tmp_path: Path, receiver: Receiver
) -> None:
    store = MemoryStore()
    store.write(samples=[Sample(make_labels("up", job="shop", instance="a:1"), T0 - 1, 0.0)])
    groups = load_rules([SHIPPED])
    notifiers: list[Notifier] = [
        WebhookNotifier(receiver.url, name="ops", external_url="http://vigil:8090")
    ]
    engine = engine_for(tmp_path, store, groups, notifiers, CollectorRegistry())
    engine.run_once(at=T0)
    engine.run_once(at=T0 + 30)
    (body,) = receiver.bodies
    assert set(body) == {
        "receiver",
        "status",
        "alerts",
        "groupLabels",
        "commonLabels",
        "commonAnnotations",
        "externalURL",
        "version",
        "groupKey",
        "truncatedAlerts",
    }
    assert body["version"] == "4"
    assert body["receiver"] == "ops"
    assert body["status"] == "firing"
    assert body["groupLabels"] == {"alertname": "ShopInstanceDown"}
    assert body["groupKey"] == '{}:{alertname="ShopInstanceDown"}'
    assert body["truncatedAlerts"] == 0
    assert body["externalURL"] == "http://vigil:8090"
    (alert,) = body["alerts"]
    assert set(alert) == {
        "status",
        "labels",
        "annotations",
        "startsAt",
        "endsAt",
        "generatorURL",
        "fingerprint",
    }
    assert alert["labels"] == {
        "alertname": "ShopInstanceDown",
        "instance": "a:1",
        "job": "shop",
        "severity": "critical",
        "team": "shop",
    }
    assert alert["annotations"]["summary"] == "Shop instance a:1 does not answer its scrape"
    assert alert["startsAt"] == "2023-11-14T22:13:50.000Z"
    assert alert["endsAt"] == "0001-01-01T00:00:00Z"
    assert alert["generatorURL"].startswith("http://vigil:8090/alerts?expr=up")
    assert body["commonLabels"] == alert["labels"]


def test_alert_engine_event_rule_fires_per_group_value(tmp_path: Path) -> None:
    store = MemoryStore()
    events = []
    for i, ip in enumerate(["1.2.3.4"] * 11 + ["5.6.7.8"] * 3):
        stamp = dt.datetime.fromtimestamp(T0 - 60 + i, tz=dt.UTC).isoformat()
        doc = {
            "@timestamp": stamp,
            "event": {"dataset": "shop.auth", "outcome": "failure"},
            "source": {"ip": ip},
        }
        events.append(Event.from_doc(doc, source="auth.log", position=i))
    store.write(events=events)
    engine = engine_for(tmp_path, store, load_rules([SHIPPED]), [], CollectorRegistry())
    changes = engine.run_once(at=T0)
    (brute,) = [c.alert for c in changes if c.alert.name == "BruteForceLogin"]
    assert brute.state == "firing"
    assert brute.labels["source_ip"] == "1.2.3.4"
    assert brute.value == 11.0
    assert brute.annotations["summary"] == "11 failed logins from 1.2.3.4 in 5 minutes"
    later = engine.run_once(at=T0 + 301)  # the window has moved past every failure
    assert [(c.alert.name, c.after) for c in later] == [("BruteForceLogin", "resolved")]


def test_alert_engine_retries_failed_notification_next_pass(
    tmp_path: Path, slack: SlackServer
) -> None:
    store = MemoryStore()
    store.write(samples=[Sample(make_labels("up", job="shop", instance="a:1"), T0, 0.0)])
    registry = CollectorRegistry()
    notifiers: list[Notifier] = [
        SlackNotifier(TOKEN, "#alerts", api_url=slack.api_url, backoff_s=0.01)
    ]
    engine = engine_for(tmp_path, store, load_rules([SHIPPED]), notifiers, registry)
    engine.run_once(at=T0)
    slack.fail_next(MAX_TRIES, status=503)
    engine.run_once(at=T0 + 30)
    failures = registry.get_sample_value(
        "vigil_alert_notifications_total", {"receiver": "slack", "outcome": "failure"}
    )
    assert failures == 1
    assert slack.messages == {}
    engine.run_once(at=T0 + 35)
    assert len(slack.messages) == 1
    engine.run_once(at=T0 + 40)
    assert len(slack.ok_calls("chat.postMessage")) == 1


def test_alert_engine_keeps_state_across_restart(tmp_path: Path, slack: SlackServer) -> None:
    store = MemoryStore()
    store.write(samples=[Sample(make_labels("up", job="shop", instance="a:1"), T0, 0.0)])

    def start() -> AlertEngine:
        notifiers: list[Notifier] = [SlackNotifier(TOKEN, "#alerts", api_url=slack.api_url)]
        return engine_for(tmp_path, store, load_rules([SHIPPED]), notifiers, CollectorRegistry())

    first = start()
    first.run_once(at=T0)
    first.run_once(at=T0 + 30)
    first.book.db.close()
    second = start()
    assert second.run_once(at=T0 + 35) == []
    store.write(samples=[Sample(make_labels("up", job="shop", instance="a:1"), T0 + 36, 1.0)])
    (change,) = second.run_once(at=T0 + 40)
    assert change.after == "resolved"
    assert len(slack.ok_calls("chat.postMessage")) == 2  # the alert and its thread reply
    (update,) = slack.ok_calls("chat.update")
    assert update.payload["ts"] == "1700000000.000100"


def test_alert_engine_reload_keeps_last_good_rules(tmp_path: Path) -> None:
    rules = tmp_path / "rules"
    rules.mkdir()
    path = rules / "a.yaml"
    path.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n")
    source = RuleSource([str(rules / "*.yaml")])
    registry = CollectorRegistry()
    engine = AlertEngine(
        MemoryStore(),
        source.load(),
        AlertBook(AlertDB(tmp_path / "alerts.db")),
        [],
        registry=registry,
        source=source,
    )
    assert engine.reload_if_changed() is False
    path.write_text("groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up ==\n")
    assert engine.reload_if_changed() is False
    assert registry.get_sample_value("vigil_alert_rule_reload_failures_total") == 1
    assert [r.name for g in engine.groups for r in g.rules] == ["A"]
    path.write_text("groups:\n  - name: g\n    rules:\n      - alert: B\n        expr: up == 1\n")
    assert engine.reload_if_changed() is True
    assert [r.name for g in engine.groups for r in g.rules] == ["B"]


def test_alert_engine_run_loop_stops_on_event(tmp_path: Path) -> None:
    store = MemoryStore()
    store.write(samples=[Sample(make_labels("up", job="shop", instance="a:1"), T0, 0.0)])
    registry = CollectorRegistry()
    clock_now = [T0]
    engine = AlertEngine(
        store,
        load_rules([SHIPPED]),
        AlertBook(AlertDB(tmp_path / "alerts.db")),
        [],
        registry=registry,
        clock=lambda: clock_now[0],
    )
    stop = threading.Event()
    thread = threading.Thread(target=engine.run, args=(stop,))
    thread.start()
    for _ in range(200):
        if registry.get_sample_value("vigil_alerts", {"state": "pending"}) == 1:
            break
        stop.wait(0.01)
    stop.set()
    thread.join(timeout=5)
    assert not thread.is_alive()
    assert registry.get_sample_value("vigil_alerts", {"state": "pending"}) == 1
    assert registry.get_sample_value("vigil_alert_group_evaluations_total", {"group": "shop"}) >= 1


def test_alert_engine_counts_failed_evaluations_while_elasticsearch_is_down(
    tmp_path: Path, es_url: str
) -> None:
    # `vigil alert` started before the cluster: every rule's evaluation fails (counted,
    # the engine goes on); once the cluster answers, the rules fire as usual.
    from es_outage import proxy_to

    from siem.elasticsearch import ElasticsearchStore

    now = [0.0]  # the store's clock: one setup attempt while down, then past its backoff
    registry = CollectorRegistry()
    with proxy_to(es_url) as proxy:
        proxy.set_mode("refuse")
        store = ElasticsearchStore(
            proxy.url, compat_headers=False, refresh="true", clock=lambda: now[0]
        )
        rules = load_rules([SHIPPED])
        engine = engine_for(tmp_path, store, rules, [], registry)
        assert engine.run_once(at=T0) == []
        failed = {
            s.labels["alertname"]
            for metric in registry.collect()
            for s in metric.samples
            if s.name == "vigil_alert_rule_evaluation_failures_total" and s.value == 1
        }
        assert failed == {rule.name for group in rules for rule in group.rules}
        proxy.set_mode("forward")
        now[0] += 60
        failures = [
            Event.from_doc(
                {
                    "@timestamp": dt.datetime.fromtimestamp(T0 - 60 + i, tz=dt.UTC).isoformat(),
                    "event": {"dataset": "shop.auth", "outcome": "failure"},
                    "source": {"ip": "1.2.3.4"},
                },
                source="auth.log",
                position=i,
            )
            for i in range(11)
        ]
        assert store.write(events=failures).events == 11
        changes = engine.run_once(at=T0 + 1)
        store.close()
    assert [c.alert.name for c in changes if c.after == "firing"] == ["BruteForceLogin"]
