"""Slack notifier against the Slack-compatible test server, through the real slack_sdk."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slack_server import SlackServer

from alerting.notify.slack import MAX_TRIES, SlackNotifier
from alerting.state import Alert

TOKEN = "xoxb-test-token"


@pytest.fixture
def slack() -> Iterator[SlackServer]:
    with SlackServer(token=TOKEN) as server:
        yield server


def notifier(slack: SlackServer, token: str = TOKEN) -> SlackNotifier:
    return SlackNotifier(token, "#alerts", api_url=slack.api_url, backoff_s=0.01)


def firing() -> Alert:
    return Alert(
        fingerprint="abc123",
        labels={"alertname": "ShopHighErrorRate", "severity": "critical", "job": "shop"},
        annotations={
            "summary": "Shop 5xx ratio is 9.8% (above 5%)",
            "runbook_url": "http://ui:8090/runbooks/shop-high-error-rate.md",
            "playbook": "rollback-shop",
        },
        state="firing",
        value=0.098,
        active_at=1000.0,
        fired_at=1030.0,
    )


def resolved(alert: Alert, receipt: dict[str, str]) -> Alert:
    return Alert(
        **{
            **alert.__dict__,
            "state": "resolved",
            "resolved_at": 1155.0,
            "delivered": {"slack": "firing"},
            "receipts": {"slack": receipt},
        }
    )


def test_slack_notifier_posts_block_kit_message_on_firing(slack: SlackServer) -> None:
    (delivery,) = notifier(slack).notify([firing()])
    assert delivery.ok, delivery.error
    (call,) = slack.ok_calls("chat.postMessage")
    assert delivery.receipt == {"channel": "#alerts", "ts": "1700000000.000100"}
    blocks = call.payload["blocks"]
    assert blocks[0]["type"] == "header"
    assert blocks[0]["text"]["text"] == "🔴 [FIRING] ShopHighErrorRate"
    assert "Shop 5xx ratio is 9.8% (above 5%)" in blocks[1]["text"]["text"]
    fields = [f["text"] for b in blocks if b["type"] == "section" for f in b.get("fields", [])]
    assert "*Severity*\ncritical" in fields
    assert "*Value*\n0.098" in fields
    assert "*job*\nshop" in fields
    (button,) = [e for b in blocks if b["type"] == "actions" for e in b["elements"]]
    assert button["url"] == "http://ui:8090/runbooks/shop-high-error-rate.md"
    assert "http://ui:8090/runbooks/shop-high-error-rate.md" in call.payload["text"]
    assert call.payload["attachments"][0]["color"] == "#d40e0d"


def test_slack_notifier_updates_message_and_replies_in_thread_on_resolve(
    slack: SlackServer,
) -> None:
    (posted,) = notifier(slack).notify([firing()])
    (delivery,) = notifier(slack).notify([resolved(firing(), dict(posted.receipt))])
    assert delivery.ok, delivery.error
    (update,) = slack.ok_calls("chat.update")
    assert update.payload["ts"] == posted.receipt["ts"]
    assert update.payload["blocks"][0]["text"]["text"] == "✅ [RESOLVED] ShopHighErrorRate"
    assert update.payload["attachments"][0]["color"] == "#2eb886"
    _, reply = slack.ok_calls("chat.postMessage")
    assert reply.payload["thread_ts"] == posted.receipt["ts"]
    assert reply.payload["text"] == "✅ ShopHighErrorRate resolved after 2m 5s."
    message = slack.messages[("#alerts", posted.receipt["ts"])]
    assert message["text"].startswith("✅ [RESOLVED] ShopHighErrorRate")


def test_slack_notifier_retries_429_after_retry_after_without_duplicate(
    slack: SlackServer,
) -> None:
    slack.fail_next(1, status=429, retry_after=1)
    (delivery,) = notifier(slack).notify([firing()])
    assert delivery.ok, delivery.error
    assert [c.status for c in slack.calls] == [429, 200]
    assert len(slack.messages) == 1


@pytest.mark.parametrize("status", [500, 502, 503])
def test_slack_notifier_retries_server_errors(slack: SlackServer, status: int) -> None:
    slack.fail_next(2, status=status)
    (delivery,) = notifier(slack).notify([firing()])
    assert delivery.ok, delivery.error
    assert [c.status for c in slack.calls] == [status, status, 200]
    assert len(slack.messages) == 1


def test_slack_notifier_gives_up_after_bounded_tries_without_raising(
    slack: SlackServer,
) -> None:
    slack.fail_next(MAX_TRIES + 3, status=500)
    (delivery,) = notifier(slack).notify([firing()])
    assert not delivery.ok
    assert len(slack.calls) == MAX_TRIES
    assert slack.messages == {}


def test_slack_notifier_reports_bad_token(slack: SlackServer) -> None:
    (delivery,) = notifier(slack, token="xoxb-wrong").notify([firing()])
    assert not delivery.ok
    assert "invalid_auth" in delivery.error


def test_slack_notifier_resumes_half_done_resolve(slack: SlackServer) -> None:
    (posted,) = notifier(slack).notify([firing()])
    slack.fail_next(MAX_TRIES, status=500, method="chat.postMessage")
    (half,) = notifier(slack).notify([resolved(firing(), dict(posted.receipt))])
    assert not half.ok
    assert half.receipt["resolved_update"] == "1"
    (done,) = notifier(slack).notify([resolved(firing(), dict(half.receipt))])
    assert done.ok, done.error
    assert len(slack.ok_calls("chat.update")) == 1  # the update is not repeated
    assert [c.payload.get("thread_ts") for c in slack.ok_calls("chat.postMessage")] == [
        None,
        posted.receipt["ts"],
    ]
