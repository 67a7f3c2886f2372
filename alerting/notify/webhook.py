"""Webhook: the Alertmanager webhook payload (version 4), so existing integrations work.

Per Alertmanager's ``webhook_config``, the body is ``receiver``, ``status``
(``firing`` if any alert in the group fires), ``alerts`` (each with
``status``, ``labels``, ``annotations``, ``startsAt``, ``endsAt``,
``generatorURL``, ``fingerprint``), ``groupLabels``, ``commonLabels``,
``commonAnnotations``, ``externalURL``, ``version`` "4", ``groupKey`` and
``truncatedAlerts``. Without the alert manager Vigil groups by ``alertname``;
with it (``notify_group``) one POST carries one aggregation group.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any, TypedDict

from alerting.notify.base import Delivery, GroupDelivery, GroupNotification
from alerting.state import Alert

log = logging.getLogger(__name__)

ZERO_TIME = "0001-01-01T00:00:00Z"


class WebhookAlert(TypedDict):
    status: str
    labels: dict[str, str]
    annotations: dict[str, str]
    startsAt: str
    endsAt: str
    generatorURL: str
    fingerprint: str


class WebhookPayload(TypedDict):
    receiver: str
    status: str
    alerts: list[WebhookAlert]
    groupLabels: dict[str, str]
    commonLabels: dict[str, str]
    commonAnnotations: dict[str, str]
    externalURL: str
    version: str
    groupKey: str
    truncatedAlerts: int


def rfc3339(seconds: float | None) -> str:
    """``2024-05-01T12:00:00.123Z``; the zero time for None, as Alertmanager sends."""
    if seconds is None:
        return ZERO_TIME
    moment = dt.datetime.fromtimestamp(seconds, tz=dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _common(maps: Sequence[Mapping[str, str]]) -> dict[str, str]:
    if not maps:
        return {}
    first = maps[0]
    return {k: v for k, v in first.items() if all(m.get(k) == v for m in maps[1:])}


def payload(
    alerts: Sequence[Alert],
    *,
    receiver: str,
    external_url: str,
    max_alerts: int = 0,
    group_labels: Mapping[str, str] | None = None,
    group_key: str = "",
) -> WebhookPayload:
    """The v4 body for ``alerts`` of one group (by default: of one rule, grouped by
    ``alertname``); ``max_alerts`` > 0 truncates like Alertmanager."""
    shown = list(alerts[:max_alerts]) if max_alerts > 0 else list(alerts)
    name = alerts[0].name if alerts else ""
    items: list[WebhookAlert] = [
        {
            "status": a.state,
            "labels": dict(a.labels),
            "annotations": dict(a.annotations),
            "startsAt": rfc3339(a.fired_at or a.active_at),
            "endsAt": rfc3339(a.resolved_at) if a.state == "resolved" else ZERO_TIME,
            "generatorURL": generator_url(external_url, a.expr),
            "fingerprint": a.fingerprint,
        }
        for a in shown
    ]
    if group_labels is None:
        group_labels = {"alertname": name}
    inner = ", ".join(f'{k}="{v}"' for k, v in group_labels.items())
    return {
        "receiver": receiver,
        "status": "firing" if any(a.state == "firing" for a in alerts) else "resolved",
        "alerts": items,
        "groupLabels": dict(group_labels),
        "commonLabels": _common([a.labels for a in alerts]),
        "commonAnnotations": _common([a.annotations for a in alerts]),
        "externalURL": external_url,
        "version": "4",
        "groupKey": group_key or "{}:{" + inner + "}",
        "truncatedAlerts": len(alerts) - len(shown),
    }


def generator_url(external_url: str, expr: str) -> str:
    """Where the alert came from: the web UI's alerts page for a rule's expression; an alert
    posted to the API keeps the ``generatorURL`` it came with ("" when it had none), as
    Alertmanager passes it on."""
    if not expr or expr.startswith(("http://", "https://")):
        return expr
    base = external_url.rstrip("/")
    return f"{base}/alerts?expr={urllib.parse.quote(expr, safe='')}" if base else ""


class WebhookNotifier:
    """POSTs the Alertmanager v4 payload to ``url``; any 2xx answer is a delivery."""

    integration = "webhook"

    def __init__(
        self,
        url: str,
        *,
        name: str = "",
        external_url: str = "",
        timeout_s: float = 10.0,
        send_resolved: bool = True,
        max_alerts: int = 0,
    ) -> None:
        self.url = url
        self.name = name or f"webhook:{url}"
        self.external_url = external_url
        self.timeout_s = timeout_s
        self.send_resolved = send_resolved
        self.max_alerts = max_alerts

    def notify_group(self, n: GroupNotification) -> GroupDelivery:
        """One POST for the whole aggregation group (Alertmanager's behaviour)."""
        body = payload(
            n.alerts,
            receiver=n.receiver,
            external_url=n.external_url or self.external_url,
            max_alerts=self.max_alerts,
            group_labels=n.group_labels,
            group_key=n.group_key,
        )
        try:
            self._post(body)
        except Exception as exc:  # a dead receiver must never stop the engine
            log.warning("webhook %s failed: %s", self.url, exc)
            return GroupDelivery(False, error=str(exc))
        return GroupDelivery(True)

    def notify(self, alerts: Sequence[Alert]) -> list[Delivery]:
        if not alerts:
            return []
        body = payload(alerts, receiver=self.name, external_url=self.external_url)
        try:
            self._post(body)
        except Exception as exc:  # a dead receiver must never stop the engine
            log.warning("webhook %s failed: %s", self.url, exc)
            return [Delivery(a.fingerprint, False, error=str(exc)) for a in alerts]
        return [Delivery(a.fingerprint, True) for a in alerts]

    def _post(self, body: Mapping[str, Any]) -> None:
        request = urllib.request.Request(
            self.url,
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "User-Agent": "vigil-alert"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            response.read()
