"""``vigil alert`` with an Alertmanager configuration, stopped (SIGTERM) and started again
while a group waits for ``group_wait`` and while it fires: the group's one Slack message
comes once, at its time, and its resolve edits that same message. About 50 s (each
start imports the stack)."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alert_process import alert_env, start_alert, stop_alert
from alert_process import metric as read_metric
from conftest import free_port, wait_until
from slack_server import SlackServer

from siem.model import Sample, make_labels
from siem.sqlite import SqliteStore

TOKEN = "xoxb-am-restarts"
GROUP_WAIT_S = 12
RULES = """\
groups:
  - name: restarts
    rules:
      - alert: InstanceDown
        expr: up == 0
        labels: {severity: warning}
        annotations: {summary: "{{ $labels.instance }} is down"}
"""
AM = f"""\
global: {{slack_api_url: 'https://slack.com/api/'}}
route:
  receiver: slack
  group_by: [alertname]
  group_wait: {GROUP_WAIT_S}s
  group_interval: 1s
receivers:
  - name: slack
    slack_configs: [{{channel: '#am', send_resolved: true}}]
"""


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer(token=TOKEN) as server:
        yield server


def test_restart_during_group_wait_and_while_firing(tmp_path: Path, slack: SlackServer) -> None:
    data = tmp_path / "data"
    (tmp_path / "rules.yaml").write_text(RULES)
    (tmp_path / "am.yaml").write_text(AM)
    config = tmp_path / "vigil.yaml"
    config.write_text(
        f"data_dir: {data}\nalert:\n  rules: [{tmp_path / 'rules.yaml'}]\n  interval_s: 1\n"
        f"  alertmanager_config: {tmp_path / 'am.yaml'}\n"
    )
    labels = make_labels("up", job="shop", instance="a:1")

    def write(value: float) -> None:
        store = SqliteStore(data / "siem.db")
        now = time.time()
        store.write(samples=[Sample(labels, now + i * 10, value) for i in range(-3, 60)])
        store.close()

    write(0.0)
    port = free_port()
    env = alert_env(port, VIGIL_SLACK_TOKEN=TOKEN, VIGIL_SLACK_API_URL=slack.api_url)

    def start() -> subprocess.Popen[bytes]:
        return start_alert(config, env)

    def stop(proc: subprocess.Popen[bytes]) -> None:
        stop_alert(proc)

    def metric(name: str) -> float:
        return read_metric(port, name)

    def posts() -> list[object]:
        """Top-level messages (thread replies left out)."""
        return [c for c in slack.ok_calls("chat.postMessage") if "thread_ts" not in c.payload]

    proc = start()
    try:
        wait_until(
            "the group to form",
            lambda: metric("alertmanager_dispatcher_aggregation_groups") == 1,
            30,
        )
        first_seen = time.monotonic()
        stop(proc)  # during group_wait
        assert posts() == []
        proc = start()
        wait_until("the group's message", lambda: len(posts()) == 1, GROUP_WAIT_S + 30)
        assert time.monotonic() - first_seen >= GROUP_WAIT_S - 1  # not early after the restart
        stop(proc)  # while firing
        for _ in range(2):
            proc = start()
            wait_until(
                "an evaluation pass", lambda: metric("vigil_alert_group_evaluations_total") >= 2, 30
            )
            time.sleep(2)  # a few group_interval flushes
            stop(proc)
        assert len(posts()) == 1 and slack.ok_calls("chat.update") == []
        write(1.0)  # the instance is back
        proc = start()
        wait_until(
            "the resolve in the message's thread",
            lambda: any("thread_ts" in c.payload for c in slack.ok_calls("chat.postMessage")),
            30,
        )
        stop(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    (update,) = slack.ok_calls("chat.update")
    assert update.payload["text"].startswith("✅ [RESOLVED] InstanceDown")
    assert len(posts()) == 1
