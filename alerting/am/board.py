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
left something unread, so the page can say so.

History is told per incident (``timelines``: each time a group starts firing
anew, ``alerting.am.acks`` begins one), newest first, and the incidents of
groups that resolved and went are read back from ``am_incidents``
(``recently_resolved``). Example::

    board = read_board("data/alerts.db", load_config("config/alertmanager.yaml"), time.time())
    [(g.receiver, len(g.alerts)) for g in board.groups]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from alerting.am.acks import (
    HISTORY_RETENTION_S,
    Ack,
    AckStore,
    HistoryEntry,
    Incident,
    group_id,
)
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
    resolved: int = 200
    """Recently resolved incidents (the last resolved first), before the filter."""


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


@dataclass(frozen=True)
class IncidentHistory:
    """One incident's part of a group's history: ``entries`` newest first (at most the
    limit asked), ``total`` how many it has. ``incident`` is None for entries noted
    before incidents were recorded, and for a group only pending alerts form."""

    id: int
    incident: Incident | None
    entries: list[HistoryEntry]
    total: int


def timelines(
    db_path: str | Path, groups: Sequence[GroupStatus], limit: int, incidents: int
) -> list[tuple[list[IncidentHistory], int]]:
    """Each group's history by incident, the current one first, at most ``incidents`` of
    them and ``limit`` entries each, with how many incidents there are: its alerts' state
    changes (from their own timestamps, in the incident they belong to) and every
    notification, acknowledgement, escalation, playbook and silence noted in
    ``am_history`` (of which only the shown incidents' newest ``limit`` are read, and the
    counts per incident from the index)."""
    acks = AckStore(db_path)
    try:
        return [_by_incident(acks, g, limit, incidents) for g in groups]
    finally:
        acks.close()


def _by_incident(
    acks: AckStore, g: GroupStatus, limit: int, most: int
) -> tuple[list[IncidentHistory], int]:
    if not g.stored:
        entries, total = _timeline(g.key, g.labels, [s.alert for s in g.alerts], [], limit)
        return [IncidentHistory(0, None, entries, total)], 1
    known, _ = acks.incidents(g.key, most)
    sizes = acks.incident_sizes(g.key)
    ids = sorted(set(sizes) | set(acks.incident_ids(g.key)), reverse=True) or [0]
    by_id = {i.id: i for i in known}
    current = ids[0]
    own: dict[int, list[Alert]] = {}
    for s in g.alerts:  # an alert that resolved before the current incident began: earlier
        a = s.alert
        home = current
        start = by_id[current].started_at if current in by_id else None
        if a.state == "resolved" and start is not None and (a.resolved_at or start) < start:
            earlier = [i for i in known if i.id != current and i.started_at <= (a.resolved_at or 0)]
            home = earlier[0].id if earlier else current
        own.setdefault(home, []).append(a)
    for inc in known:  # an ended incident's alerts as it kept them
        if inc.id != current:
            held = {a.fingerprint for a in own.get(inc.id, [])}
            own.setdefault(inc.id, []).extend(a for a in inc.alerts if a.fingerprint not in held)
    rv = []
    for iid in ids[:most]:
        entries = acks.incident_history(g.key, iid, limit) if sizes.get(iid) else []
        shown, total = _timeline(g.key, g.labels, own.get(iid, []), entries, limit)
        more = sizes.get(iid, 0) - len(entries)
        rv.append(IncidentHistory(iid, by_id.get(iid), shown, total + more))
    return rv, len(ids)


def recently_resolved(
    db_path: str | Path,
    matchers: Sequence[Matcher],
    now: float,
    shown: int,
    limit: int,
    caps: Caps = Caps(),
) -> tuple[list[tuple[Incident, IncidentHistory]], int, dict[str, int]]:
    """Incidents resolved within ``HISTORY_RETENTION_S`` whose group has gone (or fired
    again), the last resolved first: those with an alert matching every matcher (holding
    only such alerts), at most ``shown`` with their history (``limit`` entries), how
    many matched, and ``{"resolved": cap}`` when the read cap left some unread."""
    acks = AckStore(db_path)
    try:
        read, _ = acks.resolved(now - HISTORY_RETENTION_S, caps.resolved + 1)
        cut = {"resolved": caps.resolved} if len(read) > caps.resolved else {}
        found = []
        for inc in read[: caps.resolved]:
            alerts = [a for a in inc.alerts if all(m.matches(a.labels) for m in matchers)]
            if matchers and not alerts:
                continue
            found.append(dataclasses.replace(inc, alerts=alerts))
        rv = []
        for inc in found[:shown]:
            noted = acks.incident_history(inc.key, inc.id, limit)
            more = acks.incident_sizes(inc.key).get(inc.id, 0) - len(noted)
            entries, total = _timeline(inc.key, inc.labels, inc.alerts, noted, limit)
            history = IncidentHistory(inc.id, inc, entries, total + more)
            rv.append((inc, history))
        return rv, len(found), cut
    finally:
        acks.close()


def _timeline(
    key: str,
    group_labels: dict[str, str],
    alerts: Sequence[Alert],
    noted: list[HistoryEntry],
    limit: int,
) -> tuple[list[HistoryEntry], int]:
    entries = noted[::-1]  # newest first, so notes made in the same second stay in order
    for a in alerts:
        name = a.labels.get("alertname", a.fingerprint)
        extra = {k: v for k, v in a.labels.items() if k != "alertname" and k not in group_labels}
        who = name + ("{" + ", ".join(f"{k}={v}" for k, v in sorted(extra.items())) + "}")
        fired = a.fired_at is not None and a.fired_at > a.active_at
        if a.state == "pending" or fired:
            entries.append(HistoryEntry(key, a.active_at, "pending", f"{who} pending"))
        if a.fired_at is not None or a.state == "firing":
            at = a.fired_at if a.fired_at is not None else a.active_at
            entries.append(HistoryEntry(key, at, "firing", f"{who} firing"))
        if a.state == "resolved" and a.resolved_at is not None:
            entries.append(HistoryEntry(key, a.resolved_at, "resolved", f"{who} resolved"))
    entries.sort(key=lambda e: e.at, reverse=True)
    return entries[:limit], len(entries)
