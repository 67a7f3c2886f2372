"""Configured notification templates arrive rendered: a ``slack_configs`` title/text at the
Slack-compatible test server, an ``email_configs`` Subject/html/text at a real SMTP server
(aiosmtpd); a template that fails at render time still delivers (Vigil's text) and is
counted in ``vigil_notifier_template_errors_total``; an edited template file changes the
next mail of a running manager, a broken one keeps the last good text."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from slack_server import SlackServer
from smtp_server import smtp_server

from alerting.am.config import AMConfig, load_config
from alerting.cli import alert_manager
from alerting.notify.base import GroupNotification
from alerting.notify.email import EmailNotifier
from alerting.notify.slack import SlackNotifier
from alerting.state import Alert
from vigil.settings import load_settings

ROOT = Path(__file__).resolve().parents[2]

TOKEN = "xoxb-templates"
TEMPLATES = (
    '{{ define "team.title" }}{{ .CommonLabels.alertname }} on'
    " {{ .CommonLabels.team | toUpper }}{{ end }}\n"
    '{{ define "team.text" }}{{ range .Alerts.Firing }}'
    "• {{ .Annotations.summary }} ({{ .Labels.instance }})\n{{ end }}{{ end }}\n"
)
CONFIG = """\
global:
  slack_api_url: 'https://slack.com/api/'
  smtp_smarthost: '127.0.0.1:{port}'
  smtp_from: 'vigil@example.com'
  smtp_require_tls: false
templates: ['templates/*.tmpl']
route:
  receiver: team
receivers:
  - name: team
    slack_configs:
      - channel: '#team-{{{{ .CommonLabels.team }}}}'
        title: '{{{{ template "team.title" . }}}}'
        text: '{{{{ template "team.text" . }}}}'
        fields: [{{title: Severity, value: '{{{{ .CommonLabels.severity }}}}', short: true}}]
    email_configs:
      - to: 'oncall@example.com'
        headers: {{Subject: '{{{{ template "team.title" . }}}} ({{{{ len .Alerts }}}})'}}
        text: '{{{{ template "team.text" . }}}}'
  - name: broken
    slack_configs:
      - channel: '#broken'
        title: '{{{{ template "no.such.template" . }}}}'
    email_configs:
      - to: 'oncall@example.com'
        html: '{{{{ .Nope }}}}'
"""


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer(token=TOKEN) as server:
        yield server


def notification(receiver: str) -> GroupNotification:
    alerts = [
        Alert(
            f"fp{i}",
            {"alertname": "HighLatency", "team": "shop", "severity": "critical", "instance": i},
            {"summary": f"p99 high on {i} <&>"},
            "firing",
            3.0,
            1_700_000_000.0,
            fired_at=1_700_000_000.0,
        )
        for i in ("shop-1", "shop-2")
    ]
    return GroupNotification(receiver, "{}:{}", {"alertname": "HighLatency"}, alerts)


def config(tmp_path: Path, port: int) -> AMConfig:
    (tmp_path / "templates").mkdir()
    (tmp_path / "templates" / "team.tmpl").write_text(TEMPLATES)
    path = tmp_path / "alertmanager.yml"
    path.write_text(CONFIG.format(port=port))
    return load_config(path)


def test_slack_title_and_text_arrive_rendered_with_vigils_buttons(
    tmp_path: Path, slack: SlackServer
) -> None:
    cfg = config(tmp_path, 25)
    registry = CollectorRegistry()
    sc = cfg.receivers["team"].slack[0]
    notifier = SlackNotifier(
        TOKEN,
        "#default",
        api_url=slack.api_url,
        config=sc.fields,
        templates=cfg.notification_templates,
        registry=registry,
    )
    firing = notification("team")
    posted = notifier.notify_group(firing)
    assert posted.ok
    (call,) = slack.ok_calls("chat.postMessage")
    assert call.payload["channel"] == "#team-shop"
    (att,) = call.payload["attachments"]
    assert att["title"] == "HighLatency on SHOP"
    assert att["text"] == "• p99 high on shop-1 <&> (shop-1)\n• p99 high on shop-2 <&> (shop-2)\n"
    assert att["title_link"] == "/#/alerts?receiver=team"  # Alertmanager's default
    assert att["color"] == "danger"
    assert att["fields"] == [{"title": "Severity", "value": "critical", "short": True}]
    buttons = [e["text"]["text"] for b in call.payload["blocks"] for e in b.get("elements", [])]
    assert "Acknowledge" in buttons and "Silence 1h" in buttons

    resolved = [
        dataclasses.replace(a, state="resolved", resolved_at=1_700_000_600.0) for a in firing.alerts
    ]
    done = dataclasses.replace(firing, alerts=resolved, receipt=posted.receipt)
    assert notifier.notify_group(done).ok
    (update,) = slack.ok_calls("chat.update")
    (att,) = update.payload["attachments"]
    assert att["color"] == "good" and att["title"] == "HighLatency on SHOP" and "text" not in att
    assert "Acknowledge" not in str(update.payload["blocks"])  # resolved: no buttons
    assert registry.get_sample_value("vigil_notifier_template_errors_total") is None


def test_slack_template_failing_at_render_time_sends_vigils_message_and_counts(
    tmp_path: Path, slack: SlackServer
) -> None:
    cfg = config(tmp_path, 25)
    registry = CollectorRegistry()
    sc = cfg.receivers["broken"].slack[0]
    notifier = SlackNotifier(
        TOKEN,
        "#broken",
        api_url=slack.api_url,
        name="broken/slack/0",
        config=sc.fields,
        templates=cfg.notification_templates,
        registry=registry,
    )
    assert notifier.notify_group(notification("broken")).ok
    (call,) = slack.ok_calls("chat.postMessage")
    assert call.payload["text"].endswith("[FIRING:2] HighLatency")  # Vigil's own message
    labels = {"receiver": "broken/slack/0", "field": "title"}
    assert registry.get_sample_value("vigil_notifier_template_errors_total", labels) == 1


def test_email_subject_and_text_arrive_rendered_html_is_alertmanagers(tmp_path: Path) -> None:
    with smtp_server() as (port, inbox):
        cfg = config(tmp_path, port)
        registry = CollectorRegistry()
        team = EmailNotifier(
            cfg.receivers["team"].email[0],
            name="team/email/0",
            registry=registry,
            templates=cfg.notification_templates,
        )
        assert team.notify_group(notification("team")).ok
        broken = EmailNotifier(
            cfg.receivers["broken"].email[0],
            name="broken/email/0",
            registry=registry,
            templates=cfg.notification_templates,
        )
        assert broken.notify_group(notification("broken")).ok
    mail, fallback = (r.message for r in inbox.received)
    assert mail["Subject"] == "HighLatency on SHOP (2)"
    text = mail.get_body(("plain",))
    assert text is not None and text.get_content().startswith("• p99 high on shop-1 <&>")
    html = mail.get_body(("html",))
    assert html is not None
    assert "p99 high on shop-1 &lt;&amp;&gt;" in html.get_content()  # html/template escaping
    assert "View in Alertmanager" in html.get_content()
    assert fallback["Subject"] == "[FIRING:2] HighLatency (critical shop)"
    fallback_html = fallback.get_body(("html",))
    assert fallback_html is not None and "Sent by" not in fallback_html.get_content()
    labels = {"receiver": "broken/email/0", "field": "html"}
    assert registry.get_sample_value("vigil_notifier_template_errors_total", labels) == 1


MAIL_ONLY = """\
global:
  {{smtp_smarthost: '127.0.0.1:{port}', smtp_from: vigil@example.com, smtp_require_tls: false}}
templates: ['templates/*.tmpl']
route: {{receiver: team, group_wait: 0s, group_interval: 1m}}
receivers:
  - name: team
    email_configs:
      - to: oncall@example.com
        headers: {{Subject: '{{{{ template "team.title" . }}}} ({{{{ len .Alerts }}}})'}}
"""


def test_edited_template_file_changes_the_next_mail_a_broken_one_keeps_the_last_good(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    title = (tmp_path / "templates" / "team.tmpl", '{{{{ define "team.title" }}}}{}{{{{ end }}}}')
    with smtp_server() as (port, inbox):
        (tmp_path / "templates").mkdir()
        title[0].write_text(title[1].format("one"))
        (tmp_path / "am.yml").write_text(MAIL_ONLY.format(port=port))
        settings = load_settings(
            None,
            env={
                "VIGIL_CONFIG": str(ROOT / "config" / "vigil.yaml"),
                "VIGIL_DATA_DIR": str(tmp_path / "data"),
                "VIGIL_ALERTMANAGER_CONFIG": str(tmp_path / "am.yml"),
            },
        )
        registry = CollectorRegistry()
        manager = alert_manager(settings, registry)
        assert manager is not None
        first, second = notification("team").alerts
        third = dataclasses.replace(second, fingerprint="fp3", labels={"alertname": "HighLatency"})
        try:
            manager.process([first], 1_700_000_000.0)
            manager.deliver_now()
            title[0].write_text(title[1].format("two"))  # only the template file changes
            assert manager.reload_if_changed() is True
            manager.process([first, second], 1_700_000_070.0)  # a new alert, a group_interval later
            manager.deliver_now()
            with caplog.at_level("ERROR", logger="vigil.alertmanager"):
                title[0].write_text(title[1].format("{{ end"))
                assert manager.reload_if_changed() is False
            assert any("team.tmpl:1: template:" in r.getMessage() for r in caplog.records)
            assert registry.get_sample_value("alertmanager_config_last_reload_successful") == 0
            manager.process([first, second, third], 1_700_000_140.0)  # another new alert
            manager.deliver_now()
        finally:
            manager.close()
    assert [str(r.message["Subject"]) for r in inbox.received] == ["one (1)", "two (2)", "two (3)"]
