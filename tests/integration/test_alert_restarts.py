"""``vigil alert`` restarted again and again while an alert fires: Slack hears it once.

The process is stopped the way ``vigil up`` and systemd stop it (SIGTERM), once
while Slack is down and the notification still waits in its queue, then
repeatedly after it was posted. About 45 s: each start imports the stack, and
the stop during the outage waits for the in-flight retries (up to 10 s).
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from alert_process import metric, start_alert, stop_alert
from conftest import free_port, wait_until
from slack_server import SlackServer

from siem.model import Sample, make_labels
from siem.sqlite import SqliteStore

TOKEN = "xoxb-restarts"
RESTARTS = 12
RULES = """\
groups:
  - name: restarts
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


def test_alert_restarts_while_firing_post_once(tmp_path: Path, slack: SlackServer) -> None:
    data = tmp_path / "data"
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    config = tmp_path / "vigil.yaml"
    config.write_text(f"data_dir: {data}\nalert:\n  rules: [{rules}]\n  interval_s: 1\n")
    store = SqliteStore(data / "siem.db")
    # Down for the next ten minutes: one sample per 10 s keeps `up` fresh for PromQL.
    now = time.time()
    labels = make_labels("up", job="shop", instance="a:1")
    store.write(samples=[Sample(labels, now + i * 10, 0.0) for i in range(-3, 60)])
    store.close()
    port = free_port()
    env = dict(
        os.environ,
        VIGIL_SLACK_TOKEN=TOKEN,
        VIGIL_SLACK_API_URL=slack.api_url,
        VIGIL_ALERT_PORT=str(port),
    )
    env.pop("VIGIL_DATA_DIR", None)
    env.pop("VIGIL_ALERT_INTERVAL", None)

    def start() -> subprocess.Popen[bytes]:
        return start_alert(config, env)

    def posted() -> int:
        return len(slack.ok_calls("chat.postMessage"))

    def evaluated() -> bool:
        """This process has run an evaluation pass (its own /metrics says so)."""
        return metric(port, "vigil_alert_group_evaluations_total{") >= 1

    def cache_hit() -> bool:
        return metric(port, 'vigil_alert_sample_cache_reads_total{result="hit"}') >= 1

    slack.outage(500)
    proc = start()
    try:
        wait_until("a refused post", lambda: len(slack.calls) > 0, 30)
        assert posted() == 0
        stop_alert(proc)  # the notification was still queued: it must survive
        slack.outage(None)
        for n in range(RESTARTS):
            proc = start()
            wait_until("an evaluation pass", evaluated, 30)
            if n == 0:  # `up` comes from the evaluator's sample cache, which says so
                wait_until("a read from the sample cache", cache_hit, 10)
                assert metric(port, "vigil_alert_sample_cache_series ") == 1
            wait_until("the alert in Slack", lambda: posted() >= 1, 30)
            stop_alert(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert posted() == 1
