"""Escalation policies: an unacknowledged group mentions the on-call lead in its Slack
thread, then goes to another channel, and repeats until acknowledged; every step is in
the group's history. A fake clock drives the dispatcher; the far end is the fake Slack."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import wait_until
from prometheus_client import CollectorRegistry
from slack_server import SlackServer
from smtp_server import smtp_server

from alerting.am.config import AMConfigError, parse_config
from alerting.am.dispatch import AlertManager
from alerting.notify.email import EmailNotifier
from alerting.notify.slack import SlackNotifier
from alerting.state import Alert, fingerprint

T0 = 1_790_000_000.0
HEAD = """
global:
  smtp_smarthost: 127.0.0.1:25
  smtp_from: vigil@example.com
receivers:
  - name: team
    webhook_configs:
      - url: http://127.0.0.1:9/unused
  - name: mail
    email_configs:
      - to: lead@example.com
"""
CONFIG = (
    HEAD
    + """
route:
  receiver: team
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 4h
  escalation:
    - after: 5m
      notify: {slack_mention: "<!subteam^S0LEAD>"}
    - after: 15m
      notify: {channel: "#incidents"}
"""
)


def alert(name: str) -> Alert:
    labels = {"alertname": name, "severity": "critical"}
    return Alert(fingerprint(labels), labels, {"summary": name}, "firing", 1.0, T0, fired_at=T0)


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer(token="xoxb-t") as server:
        yield server


def manager(
    tmp_path: Path,
    slack: SlackServer,
    text: str = CONFIG,
    registry: CollectorRegistry | None = None,
) -> AlertManager:
    notifier = SlackNotifier("xoxb-t", "#alerts", api_url=slack.api_url, backoff_s=0.01)
    return AlertManager(
        parse_config(text, "am.yml"),
        tmp_path / "alerts.db",
        {"team": [notifier]},
        registry=registry or CollectorRegistry(),
        clock=lambda: T0,
    )


def step(m: AlertManager, alerts: list[Alert], at: float) -> None:
    m.clock = lambda: at
    m.process(alerts, at)
    m.deliver_now()


def posts(slack: SlackServer) -> list[tuple[str, str, bool]]:
    return [
        (c.payload["channel"], c.payload.get("text", "")[:20], "thread_ts" in c.payload)
        for c in slack.ok_calls("chat.postMessage")
    ]


def test_unacknowledged_group_escalates_and_repeats_until_acknowledged(
    tmp_path: Path, slack: SlackServer
) -> None:
    m = manager(tmp_path, slack)
    a = alert("CheckoutDown")
    step(m, [a], T0)
    step(m, [a], T0 + 4 * 60)
    assert len(posts(slack)) == 1  # the page itself; nothing escalated yet
    step(m, [a], T0 + 5 * 60)
    mention = slack.ok_calls("chat.postMessage")[-1].payload
    assert mention["text"].startswith("<!subteam^S0LEAD> [FIRING:1] CheckoutDown")
    assert mention["thread_ts"] == next(iter(slack.messages))[1]  # the page's thread
    assert mention["reply_broadcast"] in (True, "true", "1", "True")
    step(m, [a], T0 + 15 * 60)
    assert posts(slack)[-1][0] == "#incidents"
    step(m, [a], T0 + 20 * 60)  # the policy starts over: the mention again
    assert posts(slack)[-1][1].startswith("<!subteam^S0LEAD>")
    assert len(posts(slack)) == 4

    key = next(iter(m.groups))
    m.acknowledge(key, "ana", 3600, T0 + 21 * 60)
    for minute in range(22, 80, 5):
        step(m, [a], T0 + minute * 60)
    assert len(posts(slack)) == 4  # acknowledged: no more steps
    kinds = [(h.kind, h.text) for h in m.acks.history(key)]
    assert [(kind, text[:7]) for kind, text in kinds] == [
        ("notification", "sent fi"),  # the page
        ("escalation", "step 1:"),
        ("escalation", "step 2:"),
        ("escalation", "step 1:"),
        ("ack", "acknowl"),
        ("notification", "sent fi"),  # the page's message now says who acknowledged
    ]
    assert kinds[0][1].endswith("1 alert (1 firing, 0 resolved), new message")
    assert kinds[-1][1].endswith("1 alert (1 firing, 0 resolved), message updated")
    step(m, [a], T0 + 82 * 60)  # the acknowledgement ended: escalation resumes
    assert len(posts(slack)) == 5
    # the steps it skipped fell in the acknowledgement: not given up, not noted
    assert not any("earlier step" in h.text for h in m.acks.history(key))
    m.close()


def test_group_in_group_wait_is_not_escalated(tmp_path: Path, slack: SlackServer) -> None:
    text = CONFIG.replace("group_wait: 0s", "group_wait: 10m")
    m = manager(tmp_path, slack, text)
    step(m, [alert("CheckoutDown")], T0)
    step(m, [alert("CheckoutDown")], T0 + 6 * 60)
    assert posts(slack) == []  # not paged yet, so nothing to escalate
    m.close()


@pytest.mark.parametrize(
    ("policy", "message"),
    [
        ("[{after: 5m}]", "notify is required"),
        ("[{after: 5m, notify: {channel: '#a', email: mail}}]", "exactly one of"),
        ("[{after: 5m, notify: {email: team}}]", 'receiver "team" has no email_configs'),
        ("[{after: 5m, notify: {email: nobody}}]", 'undefined receiver "nobody"'),
        ("[{after: 0s, notify: {channel: '#a'}}]", "more than 0s"),
        ("[{after: 5m, notify: {pager: x}}]", "field pager not found"),
        (
            "[{after: 5m, notify: {channel: '#a'}}, {after: 5m, notify: {channel: '#b'}}]",
            "must grow",
        ),
        ("{after: 5m}", "must be a list"),
    ],
)
def test_bad_escalation_policies_are_located(policy: str, message: str) -> None:
    text = HEAD + f"route:\n  receiver: team\n  escalation: {policy}\n"
    with pytest.raises(AMConfigError) as info:
        parse_config(text, "am.yml")
    assert message in str(info.value)
    escalation_line = text.splitlines().index(f"  escalation: {policy}") + 1
    assert f"am.yml:{escalation_line}:" in str(info.value)


def test_email_step_mails_the_receivers_address_and_is_counted(
    tmp_path: Path, slack: SlackServer
) -> None:
    """An ``email`` step sends the group's mail through that receiver's ``email_configs``
    to a real SMTP server; a step the server refuses is counted as failed, still in the
    history."""
    with smtp_server() as (port, inbox):
        text = (
            CONFIG.replace("127.0.0.1:25", f"127.0.0.1:{port}")
            .replace(
                "smtp_from: vigil@example.com",
                "smtp_from: vigil@example.com\n  smtp_require_tls: false",
            )
            .replace('notify: {channel: "#incidents"}', "notify: {email: mail}")
        )
        cfg = parse_config(text, "am.yml")
        registry = CollectorRegistry()
        mail = EmailNotifier(cfg.receivers["mail"].email[0], name="mail/email/0", registry=registry)
        notifier = SlackNotifier("xoxb-t", "#alerts", api_url=slack.api_url, backoff_s=0.01)
        m = AlertManager(
            cfg,
            tmp_path / "alerts.db",
            {"team": [notifier], "mail": [mail]},
            registry=registry,
            clock=lambda: T0,
        )
        a = alert("CheckoutDown")
        step(m, [a], T0)
        step(m, [a], T0 + 5 * 60)
        assert inbox.received == []  # step 1 is the Slack mention
        step(m, [a], T0 + 15 * 60)
        (got,) = inbox.received
        assert got.recipients == ["lead@example.com"]
        assert str(got.message["Subject"]).startswith("[FIRING:1] CheckoutDown")
        assert len(posts(slack)) == 2  # the page and the mention: the mail went by SMTP only
    sent = registry.get_sample_value("vigil_alertmanager_escalations_total", {"outcome": "sent"})
    assert sent == 2
    step(m, [a], T0 + 20 * 60)  # the policy starts over (a 15m cycle): the mention
    step(m, [a], T0 + 30 * 60)  # ...then the mail, and the SMTP server is gone
    failed = registry.get_sample_value(
        "vigil_alertmanager_escalations_total", {"outcome": "failed"}
    )
    assert failed == 1
    history = [h.text for h in m.acks.history(next(iter(m.groups))) if h.kind == "escalation"]
    assert history[:3] == [
        "step 1: after 300s: <!subteam^S0LEAD>: sent",
        "step 2: after 900s: e-mail via mail: sent",
        "step 1: after 300s: <!subteam^S0LEAD>: sent",
    ]
    assert history[3].startswith("step 2: after 900s: e-mail via mail: failed: ")
    assert "Connection refused" in history[3] and history[3].endswith("; retrying")
    assert len(history) == 4
    m.close()


def escalations(registry: CollectorRegistry, outcome: str) -> float:
    value = registry.get_sample_value("vigil_alertmanager_escalations_total", {"outcome": outcome})
    return value or 0.0


def test_failed_step_is_retried_with_backoff_until_slack_recovers(
    tmp_path: Path, slack: SlackServer
) -> None:
    """The escalation worker retries a step Slack refused, with back-off, counting each
    failure; the history says it failed and why, then that it went out, once."""
    notifier = SlackNotifier("xoxb-t", "#alerts", api_url=slack.api_url, backoff_s=0.01)
    registry = CollectorRegistry()
    clock = [T0]
    m = AlertManager(
        parse_config(CONFIG, "am.yml"),
        tmp_path / "alerts.db",
        {"team": [notifier]},
        registry=registry,
        clock=lambda: clock[0],
        backoff_s=0.05,
        max_backoff_s=0.2,
    )
    m.start()
    try:
        a = alert("CheckoutDown")
        m.process([a], T0)
        wait_until("the page", lambda: len(posts(slack)) == 1, 10)
        slack.outage(500)
        clock[0] = T0 + 5 * 60
        m.process([a], clock[0])
        wait_until("two failed attempts", lambda: escalations(registry, "failed") >= 2, 10)
        assert len(posts(slack)) == 1
        failed_count = registry.get_sample_value(
            "vigil_notifier_failures_total", {"receiver": "escalation"}
        )
        assert failed_count is not None and failed_count >= 2
        slack.outage(None)
        wait_until("the mention after the outage", lambda: len(posts(slack)) == 2, 10)
        assert posts(slack)[-1][1].startswith("<!subteam^S0LEAD>")
        assert escalations(registry, "sent") == 1
        history = [h.text for h in m.acks.history(next(iter(m.groups))) if h.kind == "escalation"]
        assert len(history) == 2  # one line for the failure episode, one for the outcome
        assert history[0].startswith("step 1: after 300s: <!subteam^S0LEAD>: failed: ")
        assert "server_error" in history[0]
        attempts = int(escalations(registry, "failed")) + 1
        assert history[1] == f"step 1: after 300s: <!subteam^S0LEAD>: sent (attempt {attempts})"
    finally:
        m.stop(5)
        m.close()
    assert len(posts(slack)) == 2  # sent once: no retry after it went out


def test_failing_step_stops_when_acknowledged_or_replaced(
    tmp_path: Path, slack: SlackServer
) -> None:
    m = manager(tmp_path, slack)
    a = alert("CheckoutDown")
    step(m, [a], T0)
    slack.outage(500)
    step(m, [a], T0 + 5 * 60)  # step 1 fails
    step(m, [a], T0 + 15 * 60)  # step 2 is due: it replaces the failing step 1, and fails
    key = next(iter(m.groups))
    m.acknowledge(key, "ana", 3600, T0 + 16 * 60)
    slack.outage(None)
    step(m, [a], T0 + 17 * 60)  # acknowledged: step 2 is not sent after all
    assert len(posts(slack)) == 1
    texts = [h.text for h in m.acks.history(key) if h.kind in ("escalation", "ack")]
    assert texts[0].startswith("step 1: after 300s: <!subteam^S0LEAD>: failed: ")
    assert texts[1] == (
        "step 1: after 300s: <!subteam^S0LEAD>: not sent after 1 failed attempt(s)"
        " (replaced by step 2)"
    )
    assert texts[2].startswith("step 2: after 900s: #incidents: failed: ")
    assert texts[3] == "acknowledged by ana"
    assert texts[4] == (
        "step 2: after 900s: #incidents: not sent after 1 failed attempt(s) (acknowledged by ana)"
    )
    assert len(texts) == 5
    m.close()


def test_failing_step_stops_when_the_group_resolves(tmp_path: Path, slack: SlackServer) -> None:
    m = manager(tmp_path, slack)
    a = alert("CheckoutDown")
    step(m, [a], T0)
    slack.outage(500)
    step(m, [a], T0 + 5 * 60)  # step 1 fails
    key = next(iter(m.groups))
    slack.outage(None)
    resolved = dataclasses.replace(a, state="resolved", resolved_at=T0 + 6 * 60)
    step(m, [resolved], T0 + 6 * 60)
    mentions = [p for p in posts(slack) if p[1].startswith("<!subteam^S0LEAD>")]
    assert mentions == []
    texts = [h.text for h in m.acks.history(key) if h.kind in ("escalation", "ack")]
    assert texts[-1] == (
        "step 1: after 300s: <!subteam^S0LEAD>: not sent after 1 failed attempt(s)"
        " (the group resolved)"
    )
    m.close()


def mentions(slack: SlackServer) -> int:
    return sum(p[1].startswith("<!subteam^S0LEAD>") for p in posts(slack))


def escalation_history(m: AlertManager) -> list[str]:
    return [h.text for h in m.acks.history(next(iter(m.groups))) if h.kind == "escalation"]


def test_failing_step_survives_restarts_and_is_sent_once(
    tmp_path: Path, slack: SlackServer
) -> None:
    """A step still failing when the process stops is saved in alerts.db: the next run
    retries it (the failure is not noted again), and once Slack is back it goes out once
    and is not sent again by a later run."""
    m = manager(tmp_path, slack)
    a = alert("CheckoutDown")
    step(m, [a], T0)
    slack.outage(500)
    step(m, [a], T0 + 5 * 60)  # step 1 fails
    m.close()
    registry = CollectorRegistry()
    m = manager(tmp_path, slack, registry=registry)  # restarted, Slack still down
    m.clock = lambda: T0 + 6 * 60
    m.deliver_now()  # the saved step is retried before any evaluation pass
    assert escalations(registry, "failed") == 1
    m.close()
    slack.outage(None)
    m = manager(tmp_path, slack)  # restarted again, Slack back
    m.clock = lambda: T0 + 7 * 60
    m.deliver_now()
    assert mentions(slack) == 1
    step(m, [a], T0 + 8 * 60)
    m.close()
    m = manager(tmp_path, slack)
    step(m, [a], T0 + 9 * 60)
    step(m, [a], T0 + 14 * 60)
    assert mentions(slack) == 1 and len(posts(slack)) == 2  # the page and one mention
    history = escalation_history(m)
    assert history[0].startswith("step 1: after 300s: <!subteam^S0LEAD>: failed: ")
    assert history[1:] == ["step 1: after 300s: <!subteam^S0LEAD>: sent (attempt 3)"]
    m.close()


def test_sent_step_is_not_sent_again_after_a_restart(tmp_path: Path, slack: SlackServer) -> None:
    m = manager(tmp_path, slack)
    a = alert("CheckoutDown")
    step(m, [a], T0)
    step(m, [a], T0 + 5 * 60)
    assert mentions(slack) == 1
    m.close()
    m = manager(tmp_path, slack)
    m.deliver_now()
    step(m, [a], T0 + 6 * 60)
    step(m, [a], T0 + 14 * 60)
    assert len(posts(slack)) == 2
    step(m, [a], T0 + 15 * 60)  # the next step comes at its time
    assert [p[0] for p in posts(slack)][-1] == "#incidents" and len(posts(slack)) == 3
    m.close()


def test_step_due_while_down_is_sent_once_at_start(tmp_path: Path, slack: SlackServer) -> None:
    """The process was down when step 1 became due: its first pass sends it, once."""
    m = manager(tmp_path, slack)
    a = alert("CheckoutDown")
    step(m, [a], T0)
    step(m, [a], T0 + 60)
    m.close()
    m = manager(tmp_path, slack)
    step(m, [a], T0 + 8 * 60)
    step(m, [a], T0 + 9 * 60)
    assert mentions(slack) == 1 and len(posts(slack)) == 2
    assert escalation_history(m) == ["step 1: after 300s: <!subteam^S0LEAD>: sent"]
    m.close()


def test_unreadable_saved_step_is_dropped_and_counted(tmp_path: Path, slack: SlackServer) -> None:
    m = manager(tmp_path, slack)
    m.store.put("am_escalations", '{}:{alertname="X"}', '{"notification": 1}')
    m.close()
    registry = CollectorRegistry()
    m = manager(tmp_path, slack, registry=registry)
    assert escalations(registry, "dropped") == 1
    assert m.escalator.jobs == {} and m.store.rows("am_escalations") == []
    m.deliver_now()
    assert slack.calls == []
    m.close()


def test_steps_due_while_down_send_only_the_latest_and_count_the_others(
    tmp_path: Path, slack: SlackServer
) -> None:
    """Both steps became due while the process was down: the first pass sends step 2
    once, and step 1 is given up, noted and counted, not sent late."""
    m = manager(tmp_path, slack)
    a = alert("CheckoutDown")
    step(m, [a], T0)
    m.close()
    registry = CollectorRegistry()
    m = manager(tmp_path, slack, registry=registry)
    step(m, [a], T0 + 16 * 60)
    step(m, [a], T0 + 17 * 60)
    assert [p[0] for p in posts(slack)] == ["#alerts", "#incidents"]
    assert escalation_history(m) == [
        "1 earlier step(s) due while vigil alert was down not sent: step 2 goes instead",
        "step 2: after 900s: #incidents: sent",
    ]
    assert escalations(registry, "abandoned") == 1 and escalations(registry, "sent") == 1
    m.close()
