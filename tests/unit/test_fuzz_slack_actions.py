"""Signed Slack button requests and escalation policies take any input: the endpoint answers
200/400 (never 500, nothing changed by a bad payload); a policy loads or fails located."""

from __future__ import annotations

import json
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from fuzz_inputs import FUZZ, hostile_files, mutated
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from slack_sdk.signature import SignatureVerifier

from alerting.am.config import AMConfigError, load_config, parse_config
from alerting.am.dispatch import AlertManager
from alerting.am.slack_actions import create_app

SECRET = "fuzz-secret"
CONFIG = """
global:
  smtp_smarthost: 127.0.0.1:25
  smtp_from: vigil@example.com
route:
  receiver: team
  group_by: [alertname]
  escalation:
    - after: 5m
      notify: {slack_mention: "<!subteam^S1>"}
    - after: 15m
      notify: {channel: "#incidents"}
    - after: 30m
      notify: {email: mail}
receivers:
  - name: team
  - name: mail
    email_configs:
      - to: lead@example.com
"""
VALID_PAYLOAD = json.dumps(
    {
        "type": "block_actions",
        "user": {"id": "U1"},
        "actions": [{"action_id": "vigil_ack", "value": "abc", "type": "button"}],
    }
).encode()


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    db = tmp_path_factory.mktemp("slack-fuzz") / "alerts.db"
    m = AlertManager(parse_config(CONFIG, "am.yml"), db, {}, registry=CollectorRegistry())
    app = create_app(m, signing_secret=SECRET, audit=lambda e: None, registry=CollectorRegistry())
    yield app.test_client()
    m.close()


@FUZZ
@given(st.one_of(mutated(VALID_PAYLOAD), st.binary(max_size=300)))
def test_fuzz_signed_payloads_never_fail_the_endpoint(client: FlaskClient, data: bytes) -> None:
    body = urllib.parse.urlencode({"payload": data.decode("utf-8", "replace")}).encode()
    ts = str(int(time.time()))
    sig = SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=body)
    r = client.post(
        "/slack/actions",
        data=body,
        headers={
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": str(sig),
            "Content-Type": "application/x-www-form-urlencoded",
        },
    )
    assert r.status_code in (200, 400, 401)  # 401: hypothesis repeated an identical body


@FUZZ
@given(hostile_files(CONFIG.encode()))
def test_fuzz_escalation_policies_load_or_fail_located(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = Path(tmp_path_factory.getbasetemp()) / "fuzz-escalation.yml"
    path.write_bytes(data)
    try:
        cfg = load_config(path)
    except AMConfigError as exc:
        assert str(exc).startswith(str(path))
        return
    for route in cfg.route.walk():
        for step in route.escalation:
            assert step.after_s > 0 and step.describe()
