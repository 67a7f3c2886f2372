"""The alert manager's state as another process reads it from ``alerts.db``: the board.

The web UI runs apart from ``vigil alert``; both open ``<data_dir>/alerts.db``
(SQLite, WAL). Reading the file, as ``vigil alert ack --list`` and the web's
acknowledge route already do, keeps the Alerts page right while ``vigil
alert`` is down or restarting: groups, silences and acknowledgements are what
the manager last saved, and silenced / inhibited are worked out at read time
from the active silences and the configuration's inhibit rules, as
Alertmanager's own API does. Pending alerts (the rule engine's ``alerts``
table: the manager only sees an alert once it fires) are placed in the group
the route tree would file them into.

What one read costs is bounded (``Caps``): at most so many groups (firing ones
first, through ``am_groups.firing``), pending alerts (through the ``alerts``
table's state index) and unexpired silences; ``Board.cut`` names each cap that
left something unread, so the page can say so. Example::

    board = read_board("data/alerts.db", load_config("config/alertmanager.yaml"), time.time())
    [(g.receiver, len(g.alerts)) for g in board.groups]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alerting.am.acks import Ack, AckStore, HistoryEntry, group_id
from alerting.am.config import AMConfig
from alerting.am.dispatch import Suppressor, group_key, stored_groups
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

    @property
    def id(self) -> str:
        return group_id(self.key)

    @property
    def firing(self) -> set[str]:
        return {s.alert.fingerprint for s in self.alerts if s.alert.state == "firing"}


@dataclass(frozen=True)
class Caps:
    """The most one read of ``alerts.db`` takes of each kind of row."""

    groups: int = 500
    """Saved groups (firing ones first, then by key)."""
    pending: int = 1000
    """Pending alerts of the rule engine."""
    silences: int = 1000
    """Unexpired silences (ending first), applied to the alerts read."""


@dataclass(frozen=True)
class Board:
    groups: list[GroupStatus]
    inhibition: bool
    """False when no configuration was given: inhibit rules were not applied."""
    cut: dict[str, int] = field(default_factory=dict)
    """The caps that left rows unread (``groups``, ``pending``, ``silences``) and their
    value: the page shows the first ones only, and inhibition and silences were judged
    from what was read."""


def read_board(
    db_path: str | Path, config: AMConfig | None, now: float, caps: Caps = Caps()
) -> Board:
    """The saved groups with their alerts' states, plus pending alerts where they would
    go; one more row than each cap is asked for, to know whether it cut."""
    groups = stored_groups(db_path, caps.groups + 1)
    silences = SilenceStore(db_path)
    acks = AckStore(db_path)
    states = AlertDB(db_path)
    try:
        unexpired = silences.unexpired(now, caps.silences + 1)
        pending = states.in_state("pending", caps.pending + 1)
        cut = {
            name: cap
            for name, cap, rows in (
                ("groups", caps.groups, groups),
                ("pending", caps.pending, pending),
                ("silences", caps.silences, unexpired),
            )
            if len(rows) > cap
        }
        groups, pending = groups[: caps.groups], pending[: caps.pending]
        active = [s for s in unexpired[: caps.silences] if s.state(now) == "active"]
        acked = {g.key: ack for g in groups if (ack := acks.get(g.key)) is not None}
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
        )
    for a in sorted(pending, key=lambda a: sorted(a.labels.items())):
        for key, receiver, labels in _routes_of(config, a):
            found = by_key.get(key)
            if found is None:
                found = GroupStatus(key, receiver, labels, [], None, False, a.active_at)
                by_key[key] = found
            found.alerts.append(_status(a, sup, None))
    return Board(list(by_key.values()), config is not None, cut)


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
                GroupStatus(g.key, g.receiver, g.labels, alerts, g.ack, g.stored, g.created_at)
            )
    return rv


def timelines(
    db_path: str | Path, groups: Sequence[GroupStatus], limit: int
) -> list[tuple[list[HistoryEntry], int]]:
    """Each group's history, newest first, at most ``limit`` entries, and how many there are:
    its alerts' state changes (from their own timestamps), and every notification,
    acknowledgement, escalation, playbook and silence noted in ``am_history`` (of which
    only the newest ``limit`` are read)."""
    acks = AckStore(db_path)
    try:
        rv = []
        for g in groups:
            noted = acks.history(g.key, limit) if g.stored else []
            more = acks.history_size(g.key) - len(noted) if g.stored else 0
            entries, total = _timeline(g, noted, limit)
            rv.append((entries, total + more))
        return rv
    finally:
        acks.close()


def _timeline(
    g: GroupStatus, noted: list[HistoryEntry], limit: int
) -> tuple[list[HistoryEntry], int]:
    entries = noted[::-1]  # newest first, so notes made in the same second stay in order
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
