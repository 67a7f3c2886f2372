"""The ``Notifier`` protocol and what a delivery attempt reports back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from alerting.state import Alert
from vigil.errors import VigilError


class NotifyError(VigilError):
    """A notifier could not deliver; its outbox worker counts it and retries with backoff."""


@dataclass(frozen=True)
class Delivery:
    """The outcome of telling one receiver about one alert.

    ``receipt`` is kept even when ``ok`` is False, so a half-done delivery (Slack
    message updated but thread reply failed) resumes instead of repeating itself.
    """

    fingerprint: str
    ok: bool
    receipt: Mapping[str, str] = field(default_factory=dict)
    error: str = ""
    deferred: bool = False
    """Held back on purpose (a receiver's rate limit), not failed: the outbox retries it
    and counts it as ``deferred``, not as a failure."""


class Notifier(Protocol):
    """A receiver of firing and resolved alerts. ``notify`` never raises."""

    name: str

    def notify(self, alerts: Sequence[Alert]) -> list[Delivery]:
        """Tell the receiver about ``alerts`` (all of one rule); one ``Delivery`` each."""
        ...


@dataclass(frozen=True)
class GroupNotification:
    """What one integration is told about one aggregation group (Alertmanager's unit).

    ``alerts`` holds the group's firing alerts and, when the integration sends
    resolved notifications, its resolved ones; ``receipt`` is what the last
    delivery of this group to this integration returned (Slack: ``channel`` and
    ``ts`` of the group's message), empty for a group it has not heard of yet.
    """

    receiver: str
    group_key: str
    group_labels: Mapping[str, str]
    alerts: Sequence[Alert]
    receipt: Mapping[str, str] = field(default_factory=dict)
    external_url: str = ""
    acknowledged_by: str = ""
    """Who acknowledged the group (``ana``, ``slack:U123``); empty when nobody has."""
    acknowledged_at: float | None = None

    @property
    def firing(self) -> list[Alert]:
        return [a for a in self.alerts if a.state == "firing"]

    @property
    def status(self) -> str:
        return "firing" if self.firing else "resolved"


@dataclass(frozen=True)
class GroupDelivery:
    """The outcome of one group notification; ``receipt`` is kept even when it failed."""

    ok: bool
    receipt: Mapping[str, str] = field(default_factory=dict)
    error: str = ""
    deferred: bool = False
    """Held back on purpose (an e-mail receiver's rate limit), not sent: not ok, so the
    worker retries it with backoff."""
    edited: bool = False
    """An earlier message was edited in place (Slack's ``chat.update`` of the group's
    message) rather than a new one sent; the group's history says which."""


class GroupNotifier(Protocol):
    """An integration of an Alertmanager receiver (a ``slack_configs``, ``webhook_configs``
    or ``email_configs`` entry). ``integration`` names its kind for metrics (``slack``, ``webhook``,
    ``email``); ``notify_group`` never raises."""

    name: str
    integration: str
    send_resolved: bool

    def notify_group(self, notification: GroupNotification) -> GroupDelivery: ...
