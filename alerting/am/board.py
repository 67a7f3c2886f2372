"""The alert manager's state as another process reads it from ``alerts.db``: the board.

The web UI runs apart from ``vigil alert``; both open ``<data_dir>/alerts.db``
(SQLite, WAL). Reading the file, as ``vigil alert ack --list`` and the web's
acknowledge route already do, keeps the Alerts page right while ``vigil
alert`` is down or restarting: groups, silences and acknowledgements are what
the manager last saved, and silenced / inhibited are worked out at read time
from the active silences and the configuration's inhibit rules, as
Alertmanager's own API does. Pending alerts (the rule engine's ``alerts``
table: the manager only sees an alert once it fires) are placed in the group
the route tree would file them into. Example::

    board = read_board("data/alerts.db", load_config("config/alertmanager.yaml"), time.time())
    [(g.receiver, len(g.alerts)) for g in board.groups]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alerting.am.acks import Ack, AckStore, HistoryEntry, group_id
from alerting.am.config import AMConfig
from alerting.am.dispatch import Suppressor, group_key, stored_groups, stored_notifications
from alerting.am.silences import SilenceStore
from alerting.state import Alert, AlertDB
from siem.model import Matcher


@dataclass(frozen=True)
class AlertStatus:
    """One alert of a group, and what holds it back."""

    alert: Alert
    silenced_by: tuple[str, ...] = ()
    inhibited_by: tuple[str, ...] = ()
    acknowledged: Ack | None = None


@dataclass(frozen=True)
class GroupStatus:
    """One aggregation group: ``stored`` is False for a group only pending alerts would
    form (the manager has not made it yet, so it cannot be acknowledged)."""

    key: str
    receiver: str
    labels: dict[str, str]
    alerts: list[AlertStatus]
    ack: Ack | None
    stored: bool
    created_at: float
    notified: list[HistoryEntry] = field(default_factory=list)
    """The notification log: when each integration was last told, and what."""

    @property
    def id(self) -> str:
        return group_id(self.key)

    @property
    def firing(self) -> set[str]:
        return {s.alert.fingerprint for s in self.alerts if s.alert.state == "firing"}


@dataclass(frozen=True)
class Board:
    groups: list[GroupStatus]
    inhibition: bool
    """False when no configuration was given: inhibit rules were not applied."""


def _notified(db_path: str | Path) -> dict[str, list[HistoryEntry]]:
    """The notification log by group key, as history entries."""
    rv: dict[str, list[HistoryEntry]] = {}
    for iid, key, entry in stored_notifications(db_path):
        if not entry.at:
            continue  # a receipt kept from a failed first delivery: nobody was told yet
        text = f"notified {iid}: {len(entry.firing)} firing, {len(entry.resolved)} resolved"
        rv.setdefault(key, []).append(HistoryEntry(key, entry.at, "notification", text))
    return rv


def read_board(db_path: str | Path, config: AMConfig | None, now: float) -> Board:
    """Every group with its alerts' states, plus pending alerts where they would go."""
    groups = stored_groups(db_path)
    notified = _notified(db_path)
    silences = SilenceStore(db_path)
    acks = AckStore(db_path)
    states = AlertDB(db_path)
    try:
        active = silences.active(now)
        acked = {a.group_key: a for a in acks.all()}
        pending = [a for a in states.load().values() if a.state == "pending"]
    finally:
        for closing in (silences, acks, states):
            closing.close()
    firing = {fp: a for g in groups for fp, a in g.alerts.items() if a.state == "firing"}
    rules = config.inhibit_rules if config is not None else ()
    sup = Suppressor(active, rules, list(firing.values()))
    by_key: dict[str, GroupStatus] = {}
    for g in groups:
        ack = acked.get(g.key)
        fps = {fp for fp, a in g.alerts.items() if a.state == "firing"}
        holds = ack if ack is not None and fps and ack.covers(fps, now) else None
        by_key[g.key] = GroupStatus(
            g.key,
            g.receiver,
            dict(g.labels),
            [_status(a, sup, holds) for _, a in sorted(g.alerts.items())],
            ack if ack is not None and fps else None,
            True,
            g.created_at,
            sorted(notified.get(g.key, []), key=lambda e: e.at),
        )
    for a in sorted(pending, key=lambda a: sorted(a.labels.items())):
        for key, receiver, labels in _routes_of(config, a):
            found = by_key.get(key)
            if found is None:
                found = GroupStatus(key, receiver, labels, [], None, False, a.active_at)
                by_key[key] = found
            found.alerts.append(_status(a, sup, None))
    return Board(list(by_key.values()), config is not None)


def _routes_of(config: AMConfig | None, a: Alert) -> list[tuple[str, str, dict[str, str]]]:
    """(group key, receiver, group labels) of each route ``a`` goes to; without a
    configuration, one group of all pending alerts."""
    if config is None:
        return [("pending", "", {})]
    rv = []
    for route in config.route.match(a.labels):
        labels = route.group_labels(a.labels)
        rv.append((group_key(route, labels), route.receiver, labels))
    return rv


def _status(a: Alert, sup: Suppressor, ack: Ack | None) -> AlertStatus:
    """``a`` with the silences and inhibitors that hold it and, when firing, the group's
    acknowledgement that covers it."""
    if a.state == "resolved":
        return AlertStatus(a)
    silenced, inhibited = sup.check(a)
    covered = a.state == "firing" and ack is not None and a.fingerprint in ack.fingerprints
    held = ack if covered else None
    return AlertStatus(a, tuple(silenced), tuple(inhibited), held)


def matching(board: Board, matchers: Sequence[Matcher]) -> list[GroupStatus]:
    """The groups with at least one alert whose labels match every matcher, holding only
    those alerts (Alertmanager's ``filter``)."""
    if not matchers:
        return list(board.groups)
    rv = []
    for g in board.groups:
        alerts = [s for s in g.alerts if all(m.matches(s.alert.labels) for m in matchers)]
        if alerts:
            rv.append(
                GroupStatus(
                    g.key, g.receiver, g.labels, alerts, g.ack, g.stored, g.created_at, g.notified
                )
            )
    return rv


def timelines(
    db_path: str | Path, groups: Sequence[GroupStatus], limit: int
) -> list[tuple[list[HistoryEntry], int]]:
    """Each group's history, newest first, at most ``limit`` entries, and how many there are:
    its alerts' state changes (from their own timestamps), the notifications logged, and the
    acknowledgements, escalations, playbooks and silences noted in ``am_history``."""
    acks = AckStore(db_path)
    try:
        return [_timeline(g, acks.history(g.key) if g.stored else [], limit) for g in groups]
    finally:
        acks.close()


def _timeline(
    g: GroupStatus, noted: list[HistoryEntry], limit: int
) -> tuple[list[HistoryEntry], int]:
    entries = [*g.notified, *noted]
    for s in g.alerts:
        a = s.alert
        name = a.labels.get("alertname", a.fingerprint)
        extra = {k: v for k, v in a.labels.items() if k != "alertname" and k not in g.labels}
        who = name + ("{" + ", ".join(f"{k}={v}" for k, v in sorted(extra.items())) + "}")
        fired = a.fired_at is not None and a.fired_at > a.active_at
        if a.state == "pending" or fired:
            entries.append(HistoryEntry(g.key, a.active_at, "pending", f"{who} pending"))
        if a.fired_at is not None or a.state == "firing":
            at = a.fired_at if a.fired_at is not None else a.active_at
            entries.append(HistoryEntry(g.key, at, "firing", f"{who} firing"))
        if a.state == "resolved" and a.resolved_at is not None:
            entries.append(HistoryEntry(g.key, a.resolved_at, "resolved", f"{who} resolved"))
    entries.sort(key=lambda e: e.at, reverse=True)
    return entries[:limit], len(entries)
