"""``vigil alert`` stopped (SIGTERM) and started again while an escalation step keeps
failing because Slack is down: the next run retries the saved step, and once Slack
recovers exactly one mention arrives. About 40 s (each start imports the stack; each
failed attempt is the Slack client's own retries of a 5xx)."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from alert_process import alert_env, start_alert, stop_alert
from alert_process import metric as read_metric
from conftest import free_port, wait_until
from slack_server import SlackServer

from alerting.am.acks import AckStore
from alerting.am.dispatch import stored_groups
from siem.model import Sample, make_labels
from siem.sqlite import SqliteStore

TOKEN = "xoxb-am-escalation-restart"
MENTION = "<!subteam^S0LEAD>"
STEP_S = 8
RULES = """\
groups:
  - name: escalation
    rules:
      - alert: InstanceDown
        expr: up == 0
        labels: {severity: critical}
        annotations: {summary: "{{ $labels.instance }} is down"}
"""
AM = f"""\
global: {{slack_api_url: 'https://slack.com/api/'}}
route:
  receiver: slack
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1s
  escalation:
    - after: {STEP_S}s
      notify: {{slack_mention: "{MENTION}"}}
    - after: 1h
      notify: {{channel: "#incidents"}}
receivers:
  - name: slack
    slack_configs: [{{channel: '#am'}}]
"""
FAILED = 'vigil_alertmanager_escalations_total{outcome="failed"}'


def test_failing_step_is_retried_after_a_restart_and_sent_once(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "am.yaml").write_text(AM)
    config = tmp_path / "vigil.yaml"
    config.write_text(
        f"data_dir: {data}\nalert:\n  rules: [{tmp_path / 'rules.yaml'}]\n  interval_s: 1\n"
        f"  alertmanager_config: {tmp_path / 'am.yaml'}\n"
    )
    store = SqliteStore(data / "siem.db")
    now = time.time()
    labels = make_labels("up", job="shop", instance="a:1")
    store.write(samples=[Sample(labels, now + i * 10, 0.0) for i in range(-3, 60)])
    store.close()
    with SlackServer(token=TOKEN) as slack:
        port = free_port()
        env = alert_env(
            port,
            VIGIL_SLACK_TOKEN=TOKEN,
            VIGIL_SLACK_API_URL=slack.api_url,
            VIGIL_ALERT_NOTIFY_MAX_BACKOFF="2",
        )

        def mentions() -> int:
            calls = slack.ok_calls("chat.postMessage")
            return sum(str(c.payload.get("text", "")).startswith(MENTION) for c in calls)

        proc: subprocess.Popen[bytes] = start_alert(config, env)
        try:
            wait_until("the page", lambda: len(slack.ok_calls("chat.postMessage")) == 1, 30)
            slack.outage(500)
            wait_until("a failed escalation", lambda: read_metric(port, FAILED) >= 1, STEP_S + 30)
            stop_alert(proc)  # Slack still down: the step waits in alerts.db
            proc = start_alert(config, env)
            wait_until("a retry by the new process", lambda: read_metric(port, FAILED) >= 1, 30)
            assert mentions() == 0
            slack.outage(None)
            wait_until("the mention", lambda: mentions() == 1, 30)
            time.sleep(3)  # a few passes and retry periods: nothing more goes out
            stop_alert(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert mentions() == 1
        assert len(slack.ok_calls("chat.postMessage")) == 2  # the page and the mention
    (group,) = stored_groups(data / "alerts.db")
    acks = AckStore(data / "alerts.db")
    try:
        history = [h.text for h in acks.history(group.key) if h.kind == "escalation"]
    finally:
        acks.close()
    assert history[0].startswith(f"step 1: after {STEP_S}s: {MENTION}: failed: ")
    assert len(history) == 2 and history[1].startswith(f"step 1: after {STEP_S}s: {MENTION}: sent")
