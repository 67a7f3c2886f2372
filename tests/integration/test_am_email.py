"""E-mail receivers of the alert manager end to end: an alertmanager.yaml routing critical
alerts to an ``email_configs`` receiver, the rule engine, the alert manager and a real
SMTP server (aiosmtpd). One mail per group notification with Alertmanager's subject,
joins batched by ``group_interval``, resolved mail per ``send_resolved``, and an SMTP
server that hangs is retried with backoff while Slack gets its message."""

from __future__ import annotations

import dataclasses
import logging
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import free_port, wait_until
from prometheus_client import CollectorRegistry
from slack_server import SlackServer
from smtp_server import Inbox, smtp_server

from alerting.am.dispatch import AlertManager
from alerting.cli import alert_manager
from alerting.engine import AlertEngine
from alerting.rules import load_rules
from alerting.state import AlertBook, AlertDB
from siem.memory import MemoryStore
from siem.model import Sample, make_labels
from vigil.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "xoxb-am-email"
T0 = 1_700_000_000.0
AM = """\
global:
  smtp_smarthost: '127.0.0.1:{port}'
  smtp_from: 'Vigil <vigil@example.com>'
  smtp_require_tls: false
  slack_api_url: 'https://slack.com/api/'
route:
  receiver: slack-ops
  group_by: ['alertname']
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 4h
  routes:
    - matchers: ['severity="critical"']
      receiver: oncall
receivers:
  - name: slack-ops
    slack_configs: [{{channel: '#ops'}}]
  - name: oncall
    email_configs:
      - to: 'oncall@example.com'
        send_resolved: true
        timeout: 2s
    slack_configs:
      - channel: '#pager'
        send_resolved: true
"""
RULES = """\
groups:
  - name: disks
    interval: 1s
    rules:
      - alert: DiskFull
        expr: disk_used_percent > 90
        labels: {severity: critical, team: ops}
        annotations: {summary: "Disk of {{ $labels.instance }} is full"}
      - alert: DiskFilling
        expr: disk_used_percent > 80
        labels: {severity: warning, team: ops}
"""


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer(token=TOKEN) as server:
        yield server


def settings_for(tmp_path: Path, slack: SlackServer, smtp_port: int) -> Settings:
    (tmp_path / "alertmanager.yaml").write_text(AM.format(port=smtp_port))
    return load_settings(
        None,
        env={
            "VIGIL_CONFIG": str(ROOT / "config" / "vigil.yaml"),
            "VIGIL_DATA_DIR": str(tmp_path / "data"),
            "VIGIL_SLACK_TOKEN": TOKEN,
            "VIGIL_SLACK_API_URL": slack.api_url,
            "VIGIL_ALERTMANAGER_CONFIG": str(tmp_path / "alertmanager.yaml"),
            "VIGIL_ALERT_NOTIFY_MAX_BACKOFF": "1",
        },
    )


def engine_for(
    tmp_path: Path, settings: Settings, store: MemoryStore, registry: CollectorRegistry
) -> AlertEngine:
    (tmp_path / "rules.yaml").write_text(RULES)
    manager = alert_manager(settings, registry)
    assert isinstance(manager, AlertManager)
    return AlertEngine(
        store,
        load_rules([tmp_path / "rules.yaml"]),
        AlertBook(AlertDB(Path(settings.data_dir) / "alerts.db")),
        [],
        registry=registry,
        manager=manager,
    )


def disks(store: MemoryStore, at: float, **used: float) -> None:
    store.write(
        samples=[
            Sample(make_labels("disk_used_percent", instance=i), at, v) for i, v in used.items()
        ]
    )


def subjects(inbox: Inbox) -> list[str]:
    return [str(r.message["Subject"]) for r in inbox.received]


def text(inbox: Inbox, index: int) -> str:
    body = inbox.received[index].message.get_body(("plain",))
    assert body is not None
    return str(body.get_content())


def posts(slack: SlackServer, channel: str) -> list[str]:
    return [
        c.payload["text"]
        for c in slack.ok_calls("chat.postMessage")
        if c.payload.get("channel") == channel and "thread_ts" not in c.payload
    ]


def test_email_receiver_one_mail_per_group_notification_joins_and_resolution(
    tmp_path: Path, slack: SlackServer
) -> None:
    store = MemoryStore()
    with smtp_server() as (port, inbox):
        engine = engine_for(
            tmp_path, settings_for(tmp_path, slack, port), store, CollectorRegistry()
        )
        disks(store, T0, a=95, c=85)
        engine.run_once(at=T0)
        # DiskFull(a) is critical: mailed (and paged on Slack); the warnings go to #ops only
        assert subjects(inbox) == ["[FIRING:1] DiskFull (a critical ops)"]
        assert inbox.received[0].recipients == ["oncall@example.com"]
        assert "Disk of a is full" in text(inbox, 0)

        disks(store, T0 + 10, a=95, b=97, c=85)
        engine.run_once(at=T0 + 10)
        assert len(inbox.received) == 1  # b joined within group_interval: batched
        disks(store, T0 + 60, a=95, b=97, c=85)
        engine.run_once(at=T0 + 60)
        assert subjects(inbox)[1:] == ["[FIRING:2] DiskFull (critical ops)"]
        assert "Disk of a is full" in text(inbox, 1) and "Disk of b is full" in text(inbox, 1)

        for t in (70.0, 120.0):
            disks(store, T0 + t, a=10, b=10, c=10)
            engine.run_once(at=T0 + t)
        assert subjects(inbox)[2:] == ["[RESOLVED] DiskFull (critical ops)"]
        assert "2 resolved" in text(inbox, 2)
        engine.run_once(at=T0 + 200)
        assert len(inbox.received) == 3  # nothing more to say
    assert len(posts(slack, "#pager")) == 1  # one Slack message per group, edited
    assert [p.split(":")[0] for p in posts(slack, "#ops")] == ["🟠 [FIRING"]


def test_email_receiver_hanging_smtp_server_is_retried_while_slack_gets_its_message(
    tmp_path: Path, slack: SlackServer
) -> None:
    """The SMTP server accepts the connection and never answers: each attempt times out
    (2 s) and is retried with backoff by the e-mail integration's own worker, while the
    Slack integration of the same receiver posts at once; once the server answers, the
    group's mail goes out once."""
    registry = CollectorRegistry()
    store = MemoryStore()
    port = free_port()
    hung = socket.socket()
    hung.bind(("127.0.0.1", port))
    hung.listen(16)  # connections queue in the backlog; no banner ever comes
    engine = engine_for(tmp_path, settings_for(tmp_path, slack, port), store, registry)
    disks(store, time.time(), a=95)  # in the lookback window for the whole test

    def failed() -> float:
        labels = {"integration": "email", "receiver": "oncall"}
        return registry.get_sample_value("alertmanager_notifications_failed_total", labels) or 0

    stop = threading.Event()
    thread = threading.Thread(target=engine.run, args=(stop,))
    thread.start()
    try:
        wait_until("the Slack page", lambda: len(posts(slack, "#pager")) == 1, 10)
        assert failed() == 0  # the e-mail worker is still waiting for the banner
        wait_until("two timed-out e-mail attempts", lambda: failed() >= 2, 20)
        hung.close()
        with smtp_server(port=port) as (_, inbox):
            wait_until("the mail once the server answers", lambda: len(inbox.received) == 1, 15)
            assert subjects(inbox) == ["[FIRING:1] DiskFull (a critical ops)"]
            stop.wait(2.5)  # more passes and retries: nothing is sent twice
            assert len(inbox.received) == 1
    finally:
        hung.close()
        stop.set()
        thread.join(timeout=15)
    assert not thread.is_alive()
    assert len(posts(slack, "#pager")) == 1


def test_email_configs_become_integrations_and_alert_email_is_not_used_beside_them(
    tmp_path: Path, slack: SlackServer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = settings_for(tmp_path, slack, free_port())
    settings = dataclasses.replace(
        settings,
        alert=dataclasses.replace(
            settings.alert, email=dataclasses.replace(settings.alert.email, to="x@example.com")
        ),
    )
    with caplog.at_level(logging.WARNING, logger="vigil"):
        manager = alert_manager(settings, CollectorRegistry())
    assert manager is not None
    assert [n.integration for n in manager.integrations["oncall"]] == ["slack", "email"]
    assert [n.name for n in manager.integrations["oncall"]][1] == "oncall/email/0"
    warnings = [r.getMessage() for r in caplog.records]
    assert any(w.startswith("alert.email is not used with") for w in warnings), warnings
    assert not any("not delivered" in w for w in warnings), warnings
    manager.close()
