"""Acknowledging from the CLI and the web UI: written to alerts.db, picked up by the
running alert manager on its next pass (the Slack message says who), audited."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import requests
from conftest import free_port
from prometheus_client import CollectorRegistry
from slack_server import SlackServer

from alerting.am.acks import group_id
from alerting.am.config import parse_config
from alerting.am.dispatch import AlertManager
from alerting.cli import slack_interactivity
from alerting.notify.slack import SlackNotifier
from alerting.state import Alert, fingerprint
from dashboards.app import create_app
from siem.backends import open_store
from siem.memory import MemoryStore
from siem.model import EventQuery
from vigil.auth import UserStore
from vigil.cli import main
from vigil.settings import from_mapping

CONFIG = """
route:
  receiver: team
  group_by: [alertname]
  group_wait: 0s
  group_interval: 1m
  repeat_interval: 1h
receivers:
  - name: team
"""


def firing(name: str, at: float) -> Alert:
    labels = {"alertname": name, "severity": "critical"}
    return Alert(fingerprint(labels), labels, {"summary": name}, "firing", 1.0, at, fired_at=at)


def test_cli_ack_is_picked_up_edits_slack_and_is_audited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("VIGIL_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("VIGIL_TOKEN", raising=False)
    now = time.time()
    a = firing("CheckoutDown", now)
    with SlackServer(token="xoxb-t") as slack:
        notifier = SlackNotifier("xoxb-t", "#alerts", api_url=slack.api_url, backoff_s=0.01)
        m = AlertManager(
            parse_config(CONFIG, "am.yml"),
            tmp_path / "alerts.db",
            {"team": [notifier]},
            registry=CollectorRegistry(),
        )
        m.process([a], now)
        m.deliver_now()
        gid = group_id(next(iter(m.groups)))

        assert main(["alert", "ack", "--list"]) == 0
        assert f"{gid}       1  -" in capsys.readouterr().out
        assert main(["alert", "ack", "nope"]) == 1
        assert "no alert group 'nope'" in capsys.readouterr().err
        assert main(["alert", "ack", gid, "--for", "1h", "--actor", "ana"]) == 0
        assert "acknowledged by ana" in capsys.readouterr().out
        assert main(["alert", "ack", "--list"]) == 0
        assert "ana until" in capsys.readouterr().out

        m.process([a], now + 1)  # the next pass picks it up and edits the message
        m.deliver_now()
        (update,) = slack.ok_calls("chat.update")
        assert any(
            "Acknowledged by @ana" in e.get("text", "")
            for b in update.payload["blocks"]
            if b["type"] == "context"
            for e in b["elements"]
        )
        m.close()
    store = open_store(from_mapping({"data_dir": str(tmp_path)}))
    (event,) = store.search(EventQuery(dataset="vigil.audit", limit=10))
    store.close()
    assert event.doc["user"]["name"] == "ana" and event.doc["event"]["action"] == "alert-ack"


def test_web_ack_needs_operator(tmp_path: Path) -> None:
    now = time.time()
    m = AlertManager(
        parse_config(CONFIG, "am.yml"), tmp_path / "alerts.db", {}, registry=CollectorRegistry()
    )
    m.process([firing("CheckoutDown", now)], now)
    gid = group_id(next(iter(m.groups)))
    store = MemoryStore()
    app = create_app(from_mapping({"data_dir": str(tmp_path)}), store=store)
    users = UserStore(tmp_path / "users.db")
    viewer = users.create_token("val", "viewer")[1]
    operator = users.create_token("olga", "operator")[1]
    client = app.test_client()
    url = f"/api/alerts/groups/{gid}/ack"
    r = client.post(url, headers={"Authorization": f"Bearer {viewer}"})
    assert r.status_code == 403 and m.acks.all() == []
    r = client.post(url, data={"for": "30m"}, headers={"Authorization": f"Bearer {operator}"})
    assert r.status_code == 200, r.text
    (ack,) = m.acks.all()
    assert ack.by == "olga" and ack.ends_at == pytest.approx(ack.at + 1800)
    r = client.post("/api/alerts/groups/nope/ack", headers={"Authorization": f"Bearer {operator}"})
    assert r.status_code == 400 and "no alert group" in r.text
    (event,) = store.search(EventQuery(dataset="vigil.audit", limit=10))
    assert event.doc["labels"] == {"group": gid, "via": "web"}
    m.close()


def test_alert_process_serves_the_button_endpoint_only_with_a_signing_secret(
    tmp_path: Path,
) -> None:
    m = AlertManager(
        parse_config(CONFIG, "am.yml"), tmp_path / "alerts.db", {}, registry=CollectorRegistry()
    )
    port = free_port()
    base = {"data_dir": str(tmp_path), "alert": {"slack": {"interactivity_port": port}}}
    assert slack_interactivity(from_mapping(base), m) is None
    base["alert"]["slack"]["signing_secret"] = "s3cret"  # type: ignore[index]
    server = slack_interactivity(from_mapping(base), m)
    assert server is not None
    try:
        r = requests.post(f"http://127.0.0.1:{port}/slack/actions", data={"payload": "{}"})
        assert r.status_code == 401
    finally:
        server.shutdown()
        m.close()
