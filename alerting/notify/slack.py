"""Slack: one Block Kit message per alert (or per alert group), updated in place on resolve.

Firing posts ``chat.postMessage`` and keeps the message's ``channel`` and
``ts``; resolving edits that message (green, marked resolved) with
``chat.update`` and replies in its thread with how long it lasted. Slack's
429 (honouring ``Retry-After``) and 5xx answers are retried with bounded
backoff inside the client; a request that got such an answer was not
processed by Slack, so retrying it cannot post a duplicate.
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry
from slack_sdk import WebClient
from slack_sdk.http_retry.handler import RetryHandler
from slack_sdk.http_retry.interval_calculator import RetryIntervalCalculator
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState

from alerting.am.acks import group_id
from alerting.am.config import EscalationStep
from alerting.am.templates import Data, NotificationTemplates, group_data, template_errors
from alerting.notify.base import Delivery, GroupDelivery, GroupNotification
from alerting.state import Alert
from alerting.templates import TemplateError, go_float, humanize, humanize_duration

log = logging.getLogger(__name__)

MAX_TRIES = 5
MAX_WAIT_S = 30.0
SEVERITY_EMOJI = {"critical": "🔴", "error": "🔴", "warning": "🟠", "info": "🔵"}
SEVERITY_COLOR = {"critical": "#d40e0d", "error": "#d40e0d", "warning": "#e8a317"}
RESOLVED_COLOR = "#2eb886"
_HIDDEN_LABELS = ("alertname", "severity")


class _RateLimitRetry(RetryHandler):
    """429: wait ``Retry-After`` seconds (capped at ``MAX_WAIT_S``), then retry."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and response.status_code == 429

    def prepare_for_next_attempt(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> None:
        wait = 1.0
        headers = response.headers if response is not None else {}
        for name, values in headers.items():
            if name.lower() == "retry-after" and values:
                try:
                    wait = float(values[0])
                except ValueError:
                    wait = 1.0
        state.next_attempt_requested = True
        time.sleep(min(wait + random.random() * 0.2, MAX_WAIT_S))
        state.increment_current_attempt()


class _Backoff(RetryIntervalCalculator):
    """``factor * 2**attempt`` plus up to 25% jitter, never above ``MAX_WAIT_S``."""

    def __init__(self, factor: float) -> None:
        self.factor = factor

    def calculate_sleep_duration(self, current_attempt: int) -> float:
        base = self.factor * (2**current_attempt)
        return float(min(base * (1 + random.random() * 0.25), MAX_WAIT_S))


class _ServerErrorRetry(RetryHandler):
    """Any 5xx: exponential backoff with jitter."""

    def _can_retry(
        self,
        *,
        state: RetryState,
        request: HttpRequest,
        response: HttpResponse | None = None,
        error: Exception | None = None,
    ) -> bool:
        return response is not None and 500 <= response.status_code <= 599


def retry_handlers(backoff_s: float = 0.5) -> list[RetryHandler]:
    """The retry policy: at most ``MAX_TRIES`` tries of one request, in total."""
    return [
        _RateLimitRetry(max_retry_count=MAX_TRIES - 1),
        _ServerErrorRetry(
            max_retry_count=MAX_TRIES - 1,
            interval_calculator=_Backoff(backoff_s),
        ),
    ]


def _fmt_value(value: float) -> str:
    return humanize(value) if abs(value) >= 1000 else go_float(round(value, 6))


class SlackNotifier:
    """Posts alerts to one Slack channel through the Web API (``slack_sdk.WebClient``)."""

    integration = "slack"

    def __init__(
        self,
        token: str,
        channel: str,
        *,
        api_url: str = "https://slack.com/api/",
        name: str = "slack",
        timeout_s: float = 10.0,
        backoff_s: float = 0.5,
        send_resolved: bool = True,
        config: Mapping[str, Any] | None = None,
        templates: NotificationTemplates | None = None,
        registry: CollectorRegistry = REGISTRY,
    ) -> None:
        self.name = name
        self.channel = channel
        self.send_resolved = send_resolved
        self.config = dict(config or {})
        """The ``slack_configs`` entry (its templated fields), when the alert manager has one."""
        self.templates = templates
        self.template_errors = template_errors(registry)
        base = api_url if api_url.endswith("/") else api_url + "/"
        self.client = WebClient(
            token=token,
            base_url=base,
            timeout=int(max(1, timeout_s)),
            retry_handlers=retry_handlers(backoff_s),
        )

    def notify(self, alerts: Sequence[Alert]) -> list[Delivery]:
        rv: list[Delivery] = []
        for alert in alerts:
            try:
                if alert.state == "firing":
                    rv.append(self._fire(alert))
                else:
                    rv.append(self._resolve(alert))
            except Exception as exc:  # Slack being down must never stop the engine
                log.warning("slack: %s %s failed: %s", alert.state, alert.name, exc)
                rv.append(Delivery(alert.fingerprint, False, error=str(exc)))
        return rv

    def notify_group(self, n: GroupNotification) -> GroupDelivery:
        """One message per aggregation group: posted when the group first fires, edited
        with ``chat.update`` as alerts join and resolve; when the whole group resolves the
        message turns green and its thread says so. A group that fires again after that
        gets a new message. The receipt keeps ``channel`` and ``ts`` so a retry edits
        instead of posting twice."""
        receipt = dict(n.receipt)
        open_message = bool(receipt.get("ts")) and receipt.get("closed") != "1"
        body, channel = self.render(n)
        try:
            if not open_message:
                if not n.firing:
                    return GroupDelivery(True, receipt)  # never posted: nothing to resolve
                rv = self.client.chat_postMessage(channel=channel, **body)
                receipt = {"channel": str(rv["channel"]), "ts": str(rv["ts"])}
                return GroupDelivery(True, receipt)
            self.client.chat_update(channel=receipt["channel"], ts=receipt["ts"], **body)
            if not n.firing:
                self.client.chat_postMessage(
                    channel=receipt["channel"],
                    thread_ts=receipt["ts"],
                    text=f"✅ {group_title(n)} resolved.",
                )
                receipt["closed"] = "1"
        except Exception as exc:  # Slack being down must never stop the engine
            log.warning("slack: group %s failed: %s", n.group_key, exc)
            return GroupDelivery(False, receipt, str(exc), edited=open_message)
        return GroupDelivery(True, receipt, edited=True)

    def render(self, n: GroupNotification) -> tuple[dict[str, Any], str]:
        """The message body and channel for ``n``: Alertmanager's attachment rendered from the
        entry's templates when it sets a message field (``alertmanager_message``), else
        Vigil's blocks; either way with Vigil's acknowledgement line and buttons. A template
        that fails falls back to Vigil's message (counted, logged)."""
        channel = self.channel
        if self.templates is None:
            return group_message(n), channel
        data = group_data(n)
        field = "channel"
        try:
            if "{{" in self.config.get("channel", ""):
                channel = self.templates.render(self.config["channel"], data) or self.channel
            if not any(self.config.get(k) for k in MESSAGE_FIELDS):
                return group_message(n), channel
            body = {}
            for field in ("username", "icon_emoji", "icon_url"):
                if self.config.get(field):
                    body[field] = self.templates.render(self.config[field], data)
            body.update(alertmanager_message(n, self.config, self.templates, data))
        except Exception as exc:  # a broken template must not lose the notification
            self.template_errors.record(self.name, getattr(exc, "field", field), exc)
            return group_message(n), channel
        return body, channel

    def escalate(self, n: GroupNotification, step: EscalationStep) -> GroupDelivery:
        """An escalation step: ``slack_mention`` replies in the group message's thread
        (broadcast to the channel) naming who must look; ``channel`` posts the group's
        message to that channel. Not ``ok``, with Slack's error, when Slack refused (the
        caller retries it with back-off and counts it)."""
        title = group_title(n)
        try:
            if step.slack_mention:
                text = f"{step.slack_mention} {title} is not acknowledged yet."
                if n.receipt.get("ts"):
                    self.client.chat_postMessage(
                        channel=n.receipt["channel"],
                        thread_ts=n.receipt["ts"],
                        reply_broadcast=True,
                        text=text,
                    )
                else:
                    self.client.chat_postMessage(channel=self.channel, text=text)
            elif step.channel:
                self.client.chat_postMessage(channel=step.channel, **self.render(n)[0])
        except Exception as exc:
            log.warning("slack: escalating %s failed: %s", n.group_key, exc)
            return GroupDelivery(False, error=str(exc))
        return GroupDelivery(True)

    def _fire(self, alert: Alert) -> Delivery:
        receipt = alert.receipts.get(self.name, {})
        if receipt.get("ts"):
            # Already posted (a retried or repeated delivery): edit, never post twice.
            self.client.chat_update(channel=receipt["channel"], ts=receipt["ts"], **message(alert))
            return Delivery(alert.fingerprint, True)
        rv = self.client.chat_postMessage(channel=self.channel, **message(alert))
        return Delivery(
            alert.fingerprint, True, {"channel": str(rv["channel"]), "ts": str(rv["ts"])}
        )

    def _resolve(self, alert: Alert) -> Delivery:
        receipt = dict(alert.receipts.get(self.name, {}))
        if not receipt.get("ts"):
            return Delivery(alert.fingerprint, True)  # never posted: nothing to resolve
        try:
            if not receipt.get("resolved_update"):
                self.client.chat_update(
                    channel=receipt["channel"], ts=receipt["ts"], **message(alert)
                )
                receipt["resolved_update"] = "1"
            if not receipt.get("resolved_reply"):
                self.client.chat_postMessage(
                    channel=receipt["channel"], thread_ts=receipt["ts"], text=resolved_text(alert)
                )
                receipt["resolved_reply"] = "1"
        except Exception as exc:
            log.warning("slack: resolving %s failed: %s", alert.name, exc)
            return Delivery(alert.fingerprint, False, receipt, str(exc))
        return Delivery(alert.fingerprint, True, receipt)


def resolved_text(alert: Alert) -> str:
    """The thread reply on resolve: ``✅ Resolved after 2m 5s``."""
    lasted = ""
    if alert.resolved_at is not None and alert.fired_at is not None:
        lasted = f" after {humanize_duration(alert.resolved_at - alert.fired_at)}"
    return f"✅ {alert.name} resolved{lasted}."


def message(alert: Alert) -> dict[str, Any]:
    """``text``, ``blocks`` and a coloured attachment for ``chat.postMessage``/``chat.update``."""
    resolved = alert.state == "resolved"
    emoji = "✅" if resolved else SEVERITY_EMOJI.get(alert.severity, "⚪")
    status = "RESOLVED" if resolved else "FIRING"
    summary = alert.annotations.get("summary") or alert.name
    runbook = alert.annotations.get("runbook_url", "")
    title = f"{emoji} [{status}] {alert.name}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn", "text": f"*{summary}*"}},
    ]
    if alert.annotations.get("description"):
        blocks.append(
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": alert.annotations["description"]},
            }
        )
    fields = [
        f"*Severity*\n{alert.severity}",
        f"*Value*\n{_fmt_value(alert.value)}",
        *(f"*{k}*\n{v}" for k, v in sorted(alert.labels.items()) if k not in _HIDDEN_LABELS),
    ]
    blocks.append(
        {"type": "section", "fields": [{"type": "mrkdwn", "text": f} for f in fields[:10]]}
    )
    context = []
    if alert.annotations.get("playbook"):
        context.append(f"Playbook: `vigil playbook run {alert.annotations['playbook']}`")
    if runbook:
        context.append(f"Runbook: <{runbook}|{runbook}>")
    if context:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": t} for t in context]}
        )
    if runbook:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Runbook"},
                        "url": runbook,
                        "action_id": "runbook",
                    }
                ],
            }
        )
    if resolved:
        color = RESOLVED_COLOR
        note = resolved_text(alert)
    else:
        color = SEVERITY_COLOR.get(alert.severity, "#888888")
        note = f"Firing since <!date^{int(alert.fired_at or alert.active_at)}^{{time}}|start>"
    text = f"{title}: {summary}" + (f" — runbook: {runbook}" if runbook else "")
    return {
        "text": text,
        "blocks": blocks,
        "attachments": [{"color": color, "fallback": note, "text": note}],
    }


MAX_GROUP_ALERTS_SHOWN = 20
"""Alerts listed in one group message; Slack allows 50 blocks."""


def group_title(n: GroupNotification) -> str:
    """``[FIRING:2] HighLatency (service=checkout)`` as Alertmanager's default title."""
    names = sorted({a.name for a in n.alerts}) or ["alerts"]
    extra = ", ".join(f"{k}={v}" for k, v in sorted(n.group_labels.items()) if k != "alertname")
    status = f"FIRING:{len(n.firing)}" if n.firing else "RESOLVED"
    return f"[{status}] {', '.join(names)}" + (f" ({extra})" if extra else "")


ACK_ACTION = "vigil_ack"
SILENCE_ACTION = "vigil_silence_1h"
PLAYBOOK_ACTION = "vigil_playbook"
"""Shows the playbook's dry run with *Run it* (``PLAYBOOK_CONFIRM``) and *Cancel*."""
PLAYBOOK_CONFIRM = "vigil_playbook_confirm"
CANCEL_ACTION = "vigil_cancel"
MAX_PLAYBOOK_BUTTONS = 3


def who(actor: str) -> str:
    """``slack:U123`` as a Slack mention (shown as @name), a Vigil user as ``@ana``."""
    return f"<@{actor[6:]}>" if actor.startswith("slack:") else f"@{actor}"


def controls(n: GroupNotification) -> list[dict[str, Any]]:
    """Blocks under a firing group: who acknowledged it, and the buttons the interactivity
    endpoint (``alerting.am.slack_actions``) answers; each carries the group's short id."""
    if not n.firing:
        return []
    blocks: list[dict[str, Any]] = []
    if n.acknowledged_by:
        at = dt.datetime.fromtimestamp(n.acknowledged_at or 0, dt.UTC).strftime("%H:%M")
        text = f"Acknowledged by {who(n.acknowledged_by)} at {at} UTC"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": text}]})
    gid = group_id(n.group_key)
    buttons: list[dict[str, Any]] = []
    if not n.acknowledged_by:
        buttons.append(button("Acknowledge", ACK_ACTION, gid, style="primary"))
    buttons.append(button("Silence 1h", SILENCE_ACTION, gid))
    names = sorted({a.annotations["playbook"] for a in n.firing if a.annotations.get("playbook")})
    for name in names[:MAX_PLAYBOOK_BUTTONS]:
        label = "Run playbook" if len(names) == 1 else f"Run {name}"
        buttons.append(button(label[:75], PLAYBOOK_ACTION, f"{gid}|{name}"))
    blocks.append({"type": "actions", "block_id": f"vigil:{gid}", "elements": buttons})
    return blocks


def button(label: str, action: str, value: str, style: str = "") -> dict[str, Any]:
    rv: dict[str, Any] = {
        "type": "button",
        "text": {"type": "plain_text", "text": label},
        "action_id": action,
        "value": value,
    }
    if style:
        rv["style"] = style
    return rv


def group_message(n: GroupNotification) -> dict[str, Any]:
    """The Slack body for a group: one alert renders as before; more list each alert.
    A firing group ends with its acknowledgement and the buttons (``controls``)."""
    body = message(n.alerts[0]) if len(n.alerts) == 1 else _group_body(n)
    body["blocks"] = [*body["blocks"], *controls(n)]
    return body


def _group_body(n: GroupNotification) -> dict[str, Any]:
    firing = n.firing
    worst = next((a.severity for a in firing if a.severity in SEVERITY_COLOR), "")
    emoji = SEVERITY_EMOJI.get(worst, "⚪") if firing else "✅"
    title = f"{emoji} {group_title(n)}"
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150], "emoji": True}}
    ]
    for alert in n.alerts[:MAX_GROUP_ALERTS_SHOWN]:
        mark = "✅" if alert.state == "resolved" else SEVERITY_EMOJI.get(alert.severity, "⚪")
        summary = alert.annotations.get("summary") or alert.name
        labels = ", ".join(
            f"{k}={v}" for k, v in sorted(alert.labels.items()) if k not in _HIDDEN_LABELS
        )
        runbook = alert.annotations.get("runbook_url", "")
        line = f"{mark} *{summary}*" + (f"\n{labels}" if labels else "")
        if runbook:
            line += f"\n<{runbook}|runbook>"
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": line[:3000]}})
    if len(n.alerts) > MAX_GROUP_ALERTS_SHOWN:
        more = len(n.alerts) - MAX_GROUP_ALERTS_SHOWN
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"… and {more} more"}]}
        )
    color = SEVERITY_COLOR.get(worst, "#888888") if firing else RESOLVED_COLOR
    return {
        "text": title,
        "blocks": blocks,
        "attachments": [{"color": color, "fallback": title, "text": ""}],
    }


MESSAGE_FIELDS = (
    "title",
    "title_link",
    "pretext",
    "text",
    "fallback",
    "footer",
    "fields",
    "color",
    "actions",
    "message_text",
    "image_url",
    "thumb_url",
)
"""``slack_configs`` keys that make Vigil send Alertmanager's message instead of its own."""

SLACK_DEFAULTS = {
    "title": '{{ template "slack.default.title" . }}',
    "title_link": '{{ template "slack.default.titlelink" . }}',
    "pretext": '{{ template "slack.default.pretext" . }}',
    "text": '{{ template "slack.default.text" . }}',
    "fallback": '{{ template "slack.default.fallback" . }}',
    "callback_id": '{{ template "slack.default.callbackid" . }}',
    "footer": '{{ template "slack.default.footer" . }}',
    "color": '{{ if eq .Status "firing" }}danger{{ else }}good{{ end }}',
    "image_url": "",
    "thumb_url": "",
}
"""Alertmanager's ``DefaultSlackConfig`` for the attachment's fields."""
MAX_TITLE_RUNES = 1024


class FieldError(TemplateError):
    """A template error in one field of the Slack message (``field`` names it)."""

    def __init__(self, field: str, exc: TemplateError) -> None:
        super().__init__(f"{field}: {exc}")
        self.field = field


_ACTION_KEYS = ("type", "text", "url", "style", "name", "value")


def alertmanager_message(
    n: GroupNotification, config: Mapping[str, Any], templates: NotificationTemplates, data: Data
) -> dict[str, Any]:
    """Alertmanager's Slack attachment for ``n`` (each field rendered from the entry, or
    Alertmanager's default) with Vigil's acknowledgement line and buttons as blocks above
    it; raises ``TemplateError`` when a template fails."""

    def render(key: str, text: Any = None) -> str:
        text = text if text is not None else config.get(key) or SLACK_DEFAULTS.get(key, "")
        try:
            return templates.render(str(text), data)
        except TemplateError as exc:
            raise FieldError(key, exc) from None

    att: dict[str, Any] = {}
    for key in SLACK_DEFAULTS:
        value = render(key)
        if value:
            att[key] = value
    if len(att.get("title", "")) > MAX_TITLE_RUNES:
        att["title"] = att["title"][: MAX_TITLE_RUNES - 1] + "…"
    att["mrkdwn_in"] = list(config.get("mrkdwn_in") or ["fallback", "pretext", "text"])
    fields = []
    for item in config.get("fields") or []:
        if isinstance(item, Mapping):
            short = item.get("short", config.get("short_fields", False))
            fields.append(
                {
                    "title": render("fields.title", item.get("title", "")),
                    "value": render("fields.value", item.get("value", "")),
                    "short": bool(short),
                }
            )
    if fields:
        att["fields"] = fields
    actions = []
    for item in config.get("actions") or []:
        if isinstance(item, Mapping):
            actions.append(
                {k: render(f"actions.{k}", item[k]) for k in _ACTION_KEYS if item.get(k)}
            )
    if actions:
        att["actions"] = actions
    blocks = controls(n) or [
        {"type": "context", "elements": [{"type": "mrkdwn", "text": "✅ Resolved"}]}
    ]
    text = render("message_text") if config.get("message_text") else ""
    if text:  # Alertmanager's message text shows above the attachment
        blocks.insert(0, {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}})
    return {
        "text": text or att.get("fallback") or att.get("title") or group_title(n),
        "attachments": [att],
        "blocks": blocks,
    }
