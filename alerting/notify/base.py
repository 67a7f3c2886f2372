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
