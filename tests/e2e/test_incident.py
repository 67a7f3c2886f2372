"""The peak-sale incident, end to end, on the real stack.

Load through haproxy → a bad release goes out → on-call gets a Slack alert with
a runbook link → the rollback playbook runs → the alert resolves, the Slack
message is updated and a thread reply says so. Prints time to detect and time
to recover.
"""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml
from conftest import free_port, http_get, require_server, up_env
from slack_sdk.signature import SignatureVerifier
from slack_server import SlackServer

from siem.model import EventQuery
from siem.sqlite import SqliteStore
from vigil.haproxy import haproxy_binary

REPO = Path(__file__).resolve().parents[2]
TOKEN = "xoxb-incident-test"
SIGNING_SECRET = "incident-signing-secret"
ALICE = "U0ALICE"  # the on-call engineer's Slack user id, mapped to Vigil's alice (operator)
# The bound: the Slack alert arrives within 60 s of the deploy (counted
# from the moment `vigil deploy` has rolled every instance onto v2).
DETECT_WITHIN = 60.0
LOAD_PROFILE = """\
description: steady shoppers for the incident drill
users: 40
spawn_rate: 40
duration: 6m
shape: constant
gates:
  error_ratio: 1.0
"""


def wait_for(what: str, predicate: Callable[[], Any], timeout: float) -> float:
    """Poll until ``predicate`` is truthy; return the monotonic time it became so."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return time.monotonic()
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for: {what}")


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer(token=TOKEN) as server:
        yield server


@pytest.fixture
def stack(tmp_path: Path, slack: SlackServer) -> Iterator[dict[str, str]]:
    if haproxy_binary() is None:
        require_server("haproxy", "the haproxy binary is not installed")
    # The repository's config plus who the Slack users are (for the buttons).
    config = yaml.safe_load((REPO / "config" / "vigil.yaml").read_text(encoding="utf-8"))
    config.setdefault("alert", {}).setdefault("slack", {}).update(
        {"users": {ALICE: "alice"}, "roles": {ALICE: "operator"}}
    )
    (tmp_path / "vigil.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    env = up_env(
        tmp_path / "data",
        VIGIL_CONFIG=str(tmp_path / "vigil.yaml"),
        VIGIL_COLLECT_INTERVAL="1",
        VIGIL_ALERT_INTERVAL="1",
        VIGIL_SLACK_TOKEN=TOKEN,
        VIGIL_SLACK_CHANNEL="#shop-oncall",
        VIGIL_SLACK_API_URL=slack.api_url,
        VIGIL_SLACK_SIGNING_SECRET=SIGNING_SECRET,
        VIGIL_SLACK_INTERACTIVITY_PORT=str(free_port()),
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "vigil.cli", "up"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    front = f"http://127.0.0.1:{env['VIGIL_UP_HAPROXY_PORT']}"
    try:
        wait_for(
            "the stack to serve through haproxy",
            lambda: http_get(front + "/api/version")[0] == 200,
            90,
        )
        yield {**env, "front": front}
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
        assert proc.returncode == 0, out.decode(errors="replace")[-3000:]


def vigil(
    env: dict[str, str], *args: str, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vigil.cli", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


ALERT = "ShopHighErrorRate"


def resolved_reply(payload: dict[str, Any]) -> bool:
    """The group's thread reply on resolve: ``✅ [RESOLVED] ShopHighErrorRate (instance=…)
    resolved.`` (one message per alert group)."""
    return bool(re.search(rf"\[RESOLVED\] {ALERT}\b[^\n]* resolved", payload.get("text", "")))


def press(env: dict[str, str], action_id: str, value: str) -> dict[str, Any]:
    """Alice presses a button of the Slack message: the signed block_actions request Slack
    sends to the interactivity URL; returns the ephemeral answer."""
    payload = {
        "type": "block_actions",
        "user": {"id": ALICE, "username": "alice"},
        "actions": [{"type": "button", "action_id": action_id, "value": value}],
    }
    body = urllib.parse.urlencode({"payload": json.dumps(payload)})
    ts = str(int(time.time()))
    signature = SignatureVerifier(SIGNING_SECRET).generate_signature(timestamp=ts, body=body)
    r = requests.post(
        f"http://127.0.0.1:{env['VIGIL_SLACK_INTERACTIVITY_PORT']}/slack/actions",
        data=body,
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": str(signature),
        },
        timeout=30,
    )
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


def button(post: Any, action_id: str) -> dict[str, Any]:
    return next(
        e
        for b in post.payload["blocks"]
        if b["type"] == "actions"
        for e in b["elements"]
        if e.get("action_id") == action_id
    )


def alert_posts(slack: SlackServer, alertname: str) -> list[Any]:
    return [
        c
        for c in slack.ok_calls("chat.postMessage")
        if alertname in json.dumps(c.payload) and "thread_ts" not in c.payload
    ]


def test_incident_bad_deploy_alert_rollback_resolved(
    stack: dict[str, str],
    slack: SlackServer,
    tmp_path: Path,
    record_property: Callable[[str, object], None],
) -> None:
    profile = tmp_path / "incident.yaml"
    profile.write_text(LOAD_PROFILE)
    load = subprocess.Popen(
        [sys.executable, "-m", "vigil.cli", "loadtest", str(profile), "--host", stack["front"]],
        env=stack,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        time.sleep(20)  # a healthy baseline under load first
        assert alert_posts(slack, "ShopHighErrorRate") == []

        deploy_started = time.monotonic()
        deploy = vigil(stack, "deploy", "--release", "v2", "--actor", "release-bot")
        assert deploy.returncode == 0, deploy.stderr
        deployed = time.monotonic()

        # The 1m rate window still holds healthy v1 traffic for a while after the
        # deploy (v2 fails about 40% of checkouts), then `for: 30s` runs.
        detected = wait_for(
            "a Slack alert for ShopHighErrorRate",
            lambda: alert_posts(slack, "ShopHighErrorRate"),
            DETECT_WITHIN,
        )
        (post,) = alert_posts(slack, "ShopHighErrorRate")
        assert "runbooks/shop-high-error-rate.md" in json.dumps(post.payload)
        assert post.payload["channel"] == "#shop-oncall"

        # Alice acknowledges from Slack; the message then says so.
        ack = press(stack, "vigil_ack", button(post, "vigil_ack")["value"])
        assert "alice acknowledged" in ack["text"], ack
        wait_for(
            "the Slack message to show the acknowledgement",
            lambda: any(
                "Acknowledged by @alice" in json.dumps(c.payload)
                for c in slack.ok_calls("chat.update")
            ),
            30,
        )
        # Run playbook: the dry run first, then Run it.
        rollback_started = time.monotonic()
        dry = press(stack, "vigil_playbook", button(post, "vigil_playbook")["value"])
        assert "Dry run of playbook rollback-shop" in dry["text"], dry
        confirm = dry["blocks"][-1]["elements"][0]
        started = press(stack, confirm["action_id"], confirm["value"])
        assert "alice started playbook rollback-shop" in started["text"], started

        def rolled_back() -> bool:
            status, body = http_get(stack["front"] + "/api/version")
            return status == 200 and json.loads(body)["release"] == "v1"

        wait_for("the rollback to v1 (run from Slack)", rolled_back, 300)

        def resolved() -> bool:
            updates = [
                c
                for c in slack.ok_calls("chat.update")
                if "ShopHighErrorRate" in json.dumps(c.payload)
                and "RESOLVED" in json.dumps(c.payload).upper()
            ]
            replies = [
                c
                for c in slack.ok_calls("chat.postMessage")
                if c.payload.get("thread_ts") and resolved_reply(c.payload)
            ]
            return bool(updates and replies)

        recovered = wait_for("the alert to resolve in Slack", resolved, 180)
    finally:
        load.send_signal(signal.SIGTERM)
        load.communicate(timeout=60)

    # The original message was updated in place, and the reply sits in its thread.
    update = next(
        c
        for c in slack.ok_calls("chat.update")
        if "ShopHighErrorRate" in json.dumps(c.payload)
        and "RESOLVED" in json.dumps(c.payload).upper()
    )
    acked = next(
        c
        for c in slack.ok_calls("chat.update")
        if "Acknowledged by @alice" in json.dumps(c.payload)
    )
    assert acked.payload["ts"] == update.payload["ts"]  # both edit the page's message
    # The SLO burn-rate alerts (config/slos.yaml) post and resolve in threads of their own.
    reply = next(
        c
        for c in slack.ok_calls("chat.postMessage")
        if c.payload.get("thread_ts") and resolved_reply(c.payload)
    )
    assert update.payload["channel"] == post.payload["channel"]
    assert reply.payload["thread_ts"] == update.payload["ts"]

    store = SqliteStore(Path(stack["VIGIL_DATA_DIR"]) / "siem.db")
    try:
        deploys = store.search(EventQuery(dataset="vigil.deploy"))
        playbook = store.search(EventQuery(dataset="vigil.playbook", limit=1000))
        alerts = store.search(EventQuery(dataset="vigil.alert", limit=1000))
    finally:
        store.close()
    assert [(e.get("event.action"), e.get("labels.release_after")) for e in deploys] == [
        ("rollback", "v1"),
        ("deploy", "v2"),
    ]
    assert any(e.get("labels.playbook") == "rollback-shop" for e in playbook)
    assert {e.get("user.name") for e in playbook} == {"alice"}
    assert any(e.get("labels.alertname") == "ShopHighErrorRate" for e in alerts)

    ttd = detected - deployed
    ttr = recovered - rollback_started
    drill = (
        f"incident drill: time to detect {ttd:.1f} s (deploy done → Slack alert; "
        f"{detected - deploy_started:.1f} s from the deploy's start, which took "
        f"{deployed - deploy_started:.1f} s), "
        f"time to recover {ttr:.1f} s (rollback start → resolved in Slack)"
    )
    print("\n" + drill)
    record_property("measured", drill)
