"""What the dashboards read from stored events: firing alerts and deploy markers.

Firing alerts come from ``vigil.alert`` events, which the alert engine writes
on every state change. Fields read:

* ``vigil.alert.state`` — the new state: ``pending``, ``firing``, ``resolved``
  or ``inactive``; without it, ``event.action`` (``alert-firing`` as the
  engine writes it, or plain ``firing``);
* ``labels`` — the alert's labels, ``labels.alertname`` among them. The labels
  are what the alert's fingerprint is computed from, so the latest event per
  label set is the alert's current state;
* ``@timestamp`` — when the state changed (shown as "since");
* ``message`` — a one-line summary, when present;
* ``vigil.alert.annotations`` and ``vigil.alert.value``, when present.

Fields may be nested (``{"labels": {"alertname": ...}}``) or dotted
(``{"labels.alertname": ...}``); both are read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from siem.model import Event, EventQuery, Store

ALERT_DATASET = "vigil.alert"
DEPLOY_DATASET = "vigil.deploy"
ALERT_HISTORY = 5000
"""How many of the newest alert events are read to find each alert's latest state."""


ACTIVE_STATES = ("pending", "firing")


@dataclass(frozen=True)
class FiringAlert:
    """An alert whose latest state is firing (or, from ``active_alerts``, pending)."""

    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    since: float
    value: str
    summary: str
    state: str = "firing"
    active_at: float | None = None
    """When it went pending (Prometheus' ``activeAt``); ``since`` when not known."""

    def to_json(self) -> dict[str, Any]:
        """The shape of Prometheus' ``/api/v1/alerts`` entries, plus ``summary``."""
        return {
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "state": self.state,
            "activeAt": self.since,
            "value": self.value,
            "summary": self.summary,
        }


def nested(doc: Mapping[str, Any], prefix: str) -> dict[str, str]:
    """The string fields under ``prefix``, from a nested object and from dotted keys."""
    rv: dict[str, str] = {}
    node: Any = doc
    for part in prefix.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    if isinstance(node, Mapping):
        rv.update({str(k): str(v) for k, v in node.items() if not isinstance(v, Mapping)})
    dotted = prefix + "."
    for key, value in doc.items():
        if isinstance(key, str) and key.startswith(dotted) and not isinstance(value, Mapping):
            rv[key[len(dotted) :]] = str(value)
    return rv


def firing_alerts(store: Store) -> list[FiringAlert]:
    """Alerts whose newest ``vigil.alert`` event says firing, most severe and newest first."""
    return [a for a in active_alerts(store) if a.state == "firing"]


def alert_state(event: Event) -> str:
    """The state a ``vigil.alert`` event moved its alert to."""
    state = event.get("vigil.alert.state")
    if isinstance(state, str) and state:
        return state
    action = str(event.get("event.action") or "")
    return action.removeprefix("alert-")


def active_alerts(store: Store) -> list[FiringAlert]:
    """Alerts whose newest ``vigil.alert`` event says pending or firing, most severe and
    newest first; ``active_at`` is when a firing alert went pending, when that is known."""
    history: dict[tuple[tuple[str, str], ...], list[Event]] = {}
    for event in store.search(EventQuery(dataset=ALERT_DATASET, limit=ALERT_HISTORY)):
        key = tuple(sorted(nested(event.doc, "labels").items()))
        history.setdefault(key, []).append(event)  # newest first: [0] is the current state
    rv = []
    for events in history.values():
        event, state = events[0], alert_state(events[0])
        if state not in ACTIVE_STATES:
            continue
        active_at = event.timestamp
        if state == "firing" and len(events) > 1 and alert_state(events[1]) == "pending":
            active_at = events[1].timestamp
        value = event.get("vigil.alert.value")
        rv.append(
            FiringAlert(
                labels=nested(event.doc, "labels"),
                annotations=nested(event.doc, "vigil.alert.annotations"),
                since=event.timestamp,
                value="" if value is None else str(value),
                summary=str(event.get("message") or ""),
                state=state,
                active_at=active_at,
            )
        )
    rv.sort(key=lambda a: (_SEVERITY.get(a.labels.get("severity", ""), 9), -a.since))
    return rv


_SEVERITY = {"critical": 0, "error": 1, "warning": 2, "info": 3}


def event_json(event: Event) -> dict[str, Any]:
    """An event as the API returns it."""
    return {
        "id": event.id,
        "timestamp": event.timestamp,
        "dataset": event.dataset,
        "doc": dict(event.doc),
    }
