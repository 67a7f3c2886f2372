"""The alert manager: routing, grouping, deduplication, inhibition, silences, time muting.

``AlertManager`` takes the alerts of the rule engine (and, through
``post_alerts``, of the HTTP API) and works as Alertmanager's dispatcher does:

* each alert goes down the route tree (``AMConfig.route.match``) to one or more
  routes; per route its ``group_by`` labels pick its *aggregation group*;
* a new group waits ``group_wait`` before its first notification, then is
  looked at every ``group_interval``; an unchanged group is re-sent after
  ``repeat_interval``;
* per group and integration a *notification log* entry remembers which alerts
  were last sent as firing and resolved, and Alertmanager's rule
  (``DedupStage.needsUpdate``) decides whether anything is worth sending —
  one notification per change of the group, resolved ones per ``send_resolved``;
* an alert matched by an active silence or inhibited by a firing alert (inhibit
  rules) is left out of the notification and shown as *suppressed*; a route
  inside a ``mute_time_intervals`` window or outside its
  ``active_time_intervals`` sends nothing.

Deliveries leave the evaluation loop: each integration (a ``slack_configs`` or
``webhook_configs`` entry) has a ``GroupOutbox`` worker with its own bounded
queue and back-off. Groups and the notification log live in SQLite
(``alerts.db``): a restart during ``group_wait`` sends at the planned time, a
restart while a group fires sends nothing twice. Example::

    manager = AlertManager(load_config(path), "data/alerts.db", integrations)
    manager.process(book.alerts(), now)  # after every evaluation pass
    manager.start(); ...; manager.stop()

What the HTTP API (``/api/v2``) and the UI need is here: ``alerts()``,
``groups()``, ``post_alerts()``, ``silences`` (a ``SilenceStore``),
``receivers()``, ``status()``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from alerting.am.acks import Ack, AckError, AckStore, group_id, new_ack
from alerting.am.config import (
    AMConfig,
    AMConfigError,
    EscalationStep,
    InhibitRule,
    Route,
    load_config,
    template_globs,
)
from alerting.am.silences import Silence, SilenceStore
from alerting.am.templates import files_signature
from alerting.notify.base import GroupDelivery, GroupNotification, GroupNotifier, NotifyError
from alerting.notify.outbox import (
    DEFAULT_BACKOFF_S,
    DEFAULT_MAX_BACKOFF_S,
    DEFAULT_QUEUE_SIZE,
    OutboxMetrics,
    QueueWorker,
)
from alerting.state import Alert, fingerprint, open_db

log = logging.getLogger("vigil.alertmanager")

MAX_POSTED_ALERTS = 10_000
"""Alerts the API may hold at once (``post_alerts`` refuses and counts more)."""

AlertState = Literal["active", "suppressed"]


def group_key(route: Route, labels: Mapping[str, str]) -> str:
    """Alertmanager's group key: the route's id, then the group labels."""
    inner = ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{route.id}:{{{inner}}}"


@dataclass
class Group:
    """One aggregation group and the alerts it holds (as last seen)."""

    key: str
    route_id: str
    receiver: str
    labels: dict[str, str]
    alerts: dict[str, Alert]
    created_at: float
    next_flush: float
    pending: list[str] = field(default_factory=list)
    """Integrations that owe a notification (queued, not yet delivered)."""
    flushed_resolved: list[str] = field(default_factory=list)
    """Resolved alerts as of the last flush: forgotten once every integration is done with
    that flush (one that resolved since waits for the next)."""
    escalations: int = 0
    """Escalation steps taken so far (the route's policy, cycled until acknowledged)."""

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data["alerts"] = {fp: dataclasses.asdict(a) for fp, a in self.alerts.items()}
        return json.dumps(data, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Group:
        data = json.loads(text)
        data["alerts"] = {fp: Alert(**a) for fp, a in data["alerts"].items()}
        return cls(**data)


@dataclass(frozen=True)
class LogEntry:
    """The notification log: what an integration was last told about a group."""

    firing: frozenset[str]
    resolved: frozenset[str]
    at: float
    receipt: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class AlertView:
    """An alert as the API shows it: state, and what suppresses it."""

    alert: Alert
    state: AlertState
    receivers: tuple[str, ...]
    silenced_by: tuple[str, ...] = ()
    inhibited_by: tuple[str, ...] = ()
    updated_at: float = 0.0
    """When the manager last received the alert (Alertmanager's ``UpdatedAt``)."""


@dataclass(frozen=True)
class GroupView:
    key: str
    receiver: str
    labels: Mapping[str, str]
    alerts: tuple[AlertView, ...]


class _Metrics:
    """Alertmanager's own metric names, so its dashboards and alerts work on Vigil."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.notifications = Counter(
            "alertmanager_notifications",
            "Notifications sent, by integration",
            ["integration", "receiver"],
            registry=registry,
        )
        self.failed = Counter(
            "alertmanager_notifications_failed",
            "Notifications that failed (retried with back-off), by integration",
            ["integration", "receiver"],
            registry=registry,
        )
        self.alerts = Gauge(
            "alertmanager_alerts",
            "Alerts by state (active, suppressed)",
            ["state"],
            registry=registry,
        )
        self.silences = Gauge(
            "alertmanager_silences", "Silences by state", ["state"], registry=registry
        )
        self.groups = Gauge(
            "alertmanager_dispatcher_aggregation_groups",
            "Aggregation groups being tracked",
            registry=registry,
        )
        self.muted = Counter(
            "alertmanager_notifications_suppressed",
            "Group flushes that sent nothing because of a time interval",
            ["reason"],
            registry=registry,
        )
        self.reload_ok = Gauge(
            "alertmanager_config_last_reload_successful",
            "1 when the last configuration (re)load worked, 0 when the last good one is kept",
            registry=registry,
        )
        self.reload_at = Gauge(
            "alertmanager_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully",
            registry=registry,
        )
        self.escalations = Counter(
            "vigil_alertmanager_escalations",
            "Escalation steps and attempts by outcome (sent; failed or deferred: retried;"
            " abandoned: replaced, acknowledged or resolved first; dropped: the queue was full"
            " or a step saved in alerts.db was unreadable)",
            ["outcome"],
            registry=registry,
        )
        self.posted_dropped = Counter(
            "vigil_alertmanager_posted_alerts_dropped",
            f"Alerts posted to the API refused because {MAX_POSTED_ALERTS} are held already",
            registry=registry,
        )


def stored_groups(db_path: str | Path, limit: int | None = None) -> list[Group]:
    """The groups a running ``vigil alert`` last saved in ``alerts.db`` (for the CLI and
    the web UI): groups with firing alerts first, then by key; at most ``limit``."""
    store = _AMStore(db_path)
    try:
        return [Group.from_json(v) for v in store.groups(limit)]
    finally:
        store.close()


def acknowledge_stored(db_path: str | Path, key: str, by: str, for_s: float, now: float) -> Ack:
    """Acknowledge group ``key`` (or its ``group_id``) in ``alerts.db`` from another process
    (the CLI, the web UI); the running ``vigil alert`` picks it up on its next pass and
    edits the Slack message. Raises ``AckError`` for an unknown or resolved group."""
    found = [g for g in stored_groups(db_path) if key in (g.key, group_id(g.key))]
    if not found:
        raise AckError(f"no alert group {key!r}; `vigil alert ack --list` shows them")
    g = found[0]
    ack = new_ack(g.key, {fp: a.state for fp, a in g.alerts.items()}, by, for_s, now)
    store = AckStore(db_path)
    try:
        store.ack(ack)
    finally:
        store.close()
    return ack


class _AMStore:
    """Groups, the notification log and API-posted alerts, in SQLite (WAL)."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._db = open_db(path)
        for table in ("am_groups", "am_nflog", "am_posted", "am_escalations"):
            self._db.execute(
                f"CREATE TABLE IF NOT EXISTS {table} (key TEXT PRIMARY KEY, data TEXT NOT NULL)"
            )
        self._add_firing_column()

    def _add_firing_column(self) -> None:
        """``am_groups.firing`` (1 when a group has a firing alert) lets a reader take the
        firing groups first with a LIMIT; a file from before it is filled in once."""
        with self._lock:
            columns = {r[1] for r in self._db.execute("PRAGMA table_info(am_groups)")}
            if "firing" not in columns:
                try:
                    self._db.execute(
                        "ALTER TABLE am_groups ADD COLUMN firing INTEGER NOT NULL DEFAULT 0"
                    )
                except sqlite3.OperationalError as exc:  # another process just added it
                    if "duplicate column" not in str(exc):
                        raise
                else:
                    rows = self._db.execute("SELECT key, data FROM am_groups").fetchall()
                    self._db.executemany(
                        "UPDATE am_groups SET firing = ? WHERE key = ?",
                        [(int(_has_firing(Group.from_json(d))), k) for k, d in rows],
                    )
            self._db.execute(
                "CREATE INDEX IF NOT EXISTS am_groups_firing ON am_groups (firing DESC, key)"
            )

    def groups(self, limit: int | None) -> list[str]:
        """Saved groups (JSON), firing ones first, then by key; at most ``limit``."""
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM am_groups ORDER BY firing DESC, key LIMIT ?",
                (-1 if limit is None else limit,),
            ).fetchall()
        return [r[0] for r in rows]

    def put_group(self, g: Group) -> None:
        with self._lock:
            self._put_group(g)

    def _put_group(self, g: Group) -> None:
        self._db.execute(
            "INSERT OR REPLACE INTO am_groups (key, data, firing) VALUES (?, ?, ?)",
            (g.key, g.to_json(), int(_has_firing(g))),
        )

    def put_group_and(self, g: Group, table: str, key: str, data: str) -> None:
        """Save group ``g`` and a row of ``table`` in one transaction: an escalation step
        taken (the group's count) and the job that sends it are never saved apart."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._put_group(g)
                self._db.execute(
                    f"INSERT OR REPLACE INTO {table} (key, data) VALUES (?, ?)", (key, data)
                )
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def rows(self, table: str) -> list[tuple[str, str]]:
        with self._lock:
            return list(self._db.execute(f"SELECT key, data FROM {table}").fetchall())

    def put(self, table: str, key: str, data: str) -> None:
        with self._lock:
            self._db.execute(
                f"INSERT OR REPLACE INTO {table} (key, data) VALUES (?, ?)",
                (key, data),
            )

    def delete(self, table: str, key: str) -> None:
        with self._lock:
            self._db.execute(f"DELETE FROM {table} WHERE key = ?", (key,))

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _has_firing(g: Group) -> bool:
    return any(a.state == "firing" for a in g.alerts.values())


def _entry_json(e: LogEntry) -> str:
    return json.dumps(
        {
            "firing": sorted(e.firing),
            "resolved": sorted(e.resolved),
            "at": e.at,
            "receipt": dict(e.receipt),
        }
    )


def _entry_from(text: str) -> LogEntry:
    d = json.loads(text)
    return LogEntry(frozenset(d["firing"]), frozenset(d["resolved"]), d["at"], d["receipt"])


def _same(a: Alert, b: Alert) -> bool:
    """Equal for notification purposes (the value changes every pass and does not count)."""
    return (a.state, a.active_at, a.fired_at, a.resolved_at, dict(a.annotations)) == (
        b.state,
        b.active_at,
        b.fired_at,
        b.resolved_at,
        dict(b.annotations),
    )


class AlertManager:
    """Routes, groups and notifies; holds silences; the object the HTTP API calls."""

    def __init__(
        self,
        config: AMConfig,
        db_path: str | Path,
        integrations: Mapping[str, Sequence[GroupNotifier]],
        *,
        registry: CollectorRegistry = REGISTRY,
        outbox_metrics: OutboxMetrics | None = None,
        clock: Callable[[], float] = time.time,
        external_url: str = "",
        queue_size: int = DEFAULT_QUEUE_SIZE,
        backoff_s: float = DEFAULT_BACKOFF_S,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
        config_path: str | Path | None = None,
        build_integrations: Callable[[AMConfig], Mapping[str, Sequence[GroupNotifier]]]
        | None = None,
    ) -> None:
        self.clock = clock
        self.external_url = external_url
        self.metrics = _Metrics(registry)
        self.outbox_metrics = outbox_metrics or OutboxMetrics(registry)
        self.store = _AMStore(db_path)
        self.silences = SilenceStore(db_path)
        self.acks = AckStore(db_path)
        self.current_acks: dict[str, Ack] = {}
        """The acknowledgements as of the last pass, by group key."""
        self._lock = threading.RLock()
        self.queue_size = queue_size
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self._build = build_integrations
        self.config_path = str(config_path) if config_path is not None else None
        self._config_mtime = self._mtime()
        self._template_globs = config.templates
        self._templates_seen = self._templates_signature()
        self.started_at = clock()
        self._last_gc = 0.0
        self.groups: dict[str, Group] = {
            k: Group.from_json(v) for k, v in self.store.rows("am_groups")
        }
        self.nflog: dict[str, LogEntry] = {
            k: _entry_from(v) for k, v in self.store.rows("am_nflog")
        }
        self.posted: dict[str, Alert] = {
            k: Alert.from_json(v) for k, v in self.store.rows("am_posted")
        }
        self.received_at: dict[str, float] = {}
        """By fingerprint, when the alert was last posted or given by the rule engine (in
        memory: after a restart an alert shows its start until it is received again)."""
        # Acknowledgements already shown before a restart are not shown (edited) again.
        self.current_acks = {a.group_key: a for a in self.acks.all() if a.group_key in self.groups}
        self.outboxes: dict[str, GroupOutbox] = {}
        self.escalator = Escalator(self)
        self._escalation_seen: set[str] = set()
        """Groups with a policy this process has looked at: the first look after a start
        tells the steps that became due while it was down."""
        self._running = False
        self.config = config
        self._apply(config, integrations)
        now = clock()
        self.metrics.reload_ok.set(1)
        self.metrics.reload_at.set(now)
        self.reload_error = ""
        """Why the last configuration reload was refused; "" once one works."""

    # -- configuration -------------------------------------------------------------------

    def _apply(self, config: AMConfig, integrations: Mapping[str, Sequence[GroupNotifier]]) -> None:
        old = self.outboxes
        self.config = config
        self.routes = {r.id: r for r in config.route.walk()}
        self.integrations: dict[str, list[GroupNotifier]] = {
            name: list(integrations.get(name, ())) for name in config.receivers
        }
        self.outboxes = {}
        for receiver, notifiers in self.integrations.items():
            for i, notifier in enumerate(notifiers):
                iid = integration_id(receiver, notifier.integration, i)
                self.outboxes[iid] = GroupOutbox(iid, receiver, notifier, self)
        now = self.clock()
        for g in self.groups.values():  # what was owed is offered to the new workers at once
            g.pending = [iid for iid in g.pending if iid in self.outboxes]
            if g.pending:
                g.next_flush = min(g.next_flush, now)
        for box in old.values():
            box.request_stop()  # joined by the caller, outside the lock
        if self._running:
            for box in self.outboxes.values():
                box.start()

    def _mtime(self) -> float:
        if self.config_path is None:
            return 0.0
        try:
            return Path(self.config_path).stat().st_mtime
        except OSError:
            return 0.0

    def mark_stale(self) -> None:
        """Read the configuration file again on the next check, changed or not (``SIGHUP``)."""
        self._config_mtime = -1.0  # no file has it: ``_mtime`` is 0.0 for a missing one

    def reload_if_changed(self) -> bool:
        """Load the configuration file again when it or one of its ``templates`` files
        changed (or a file was added to or removed from the globs); a bad one keeps the last
        good configuration, logs why and sets ``alertmanager_config_last_reload_successful``
        0."""
        if self.config_path is None or self._build is None:
            return False
        mtime, templates = self._mtime(), self._templates_signature()
        if mtime == self._config_mtime and templates == self._templates_seen:
            return False
        self._config_mtime, self._templates_seen = mtime, templates
        try:
            config = load_config(self.config_path)
        except AMConfigError as exc:
            self.reload_error = str(exc)
            self.metrics.reload_ok.set(0)
            log.error("alertmanager config reload refused, keeping the last good one: %s", exc)
            # Watch the template files the new file names, so fixing one of them retries.
            self._watch_templates(template_globs(self.config_path))
            return False
        self._watch_templates(config.templates)
        old = list(self.outboxes.values())
        with self._lock:
            self._apply(config, self._build(config))
            self._escalation_seen |= set(self.groups)  # a new policy's past steps: not "down"
        for box in old:  # an in-flight delivery finishes; what it owed is owed by the new one
            box.stop(5.0)
        self.reload_error = ""
        self.metrics.reload_ok.set(1)
        self.metrics.reload_at.set(self.clock())
        log.info("alertmanager config reloaded from %s", self.config_path)
        return True

    def reload_now(self) -> str:
        """Read the configuration file again now, changed or not; "" or why it was refused."""
        self.mark_stale()
        self.reload_if_changed()
        return self.reload_error

    def receivers(self) -> list[str]:
        return sorted(self.config.receivers)

    def _templates_signature(self) -> tuple[tuple[str, int, int], ...]:
        if self.config_path is None:
            return ()
        return files_signature(self._template_globs, Path(self.config_path).parent)

    def _watch_templates(self, globs: tuple[str, ...]) -> None:
        if globs != self._template_globs:
            self._template_globs = globs
            self._templates_seen = self._templates_signature()

    def status(self) -> dict[str, object]:
        return {
            "config": self.config.text,
            "uptime": self.started_at,
            "receivers": self.receivers(),
        }

    # -- alerts in -------------------------------------------------------------------------

    def post_alerts(self, alerts: Sequence[Alert]) -> int:
        """Take alerts from the API: ``resolved_at`` is the alert's ``endsAt`` (in the future:
        it fires until then; None: until ``resolve_timeout`` from now, renewed by each
        post, as Alertmanager does). Returns how many were refused because the store is
        full (counted)."""
        refused = 0
        now = self.clock()
        with self._lock:
            for a in alerts:
                if a.resolved_at is None:  # no endsAt: firing until resolve_timeout from now
                    a = dataclasses.replace(
                        a, resolved_at=now + self.config.global_.resolve_timeout_s
                    )
                old = self.posted.get(a.fingerprint)
                if old is None and len(self.posted) >= MAX_POSTED_ALERTS:
                    refused += 1
                    continue
                if old is not None and old.state == "firing":
                    a = dataclasses.replace(a, active_at=min(a.active_at, old.active_at))
                self.posted[a.fingerprint] = a
                self.received_at[a.fingerprint] = now
                self.store.put("am_posted", a.fingerprint, a.to_json())
        if refused:
            self.metrics.posted_dropped.inc(refused)
        return refused

    def _posted_now(self, now: float) -> list[Alert]:
        """API alerts as of ``now``: one past its end is resolved; long-resolved ones go."""
        rv: list[Alert] = []
        timeout = self.config.global_.resolve_timeout_s
        for fp, a in list(self.posted.items()):
            end = a.resolved_at if a.resolved_at is not None else now
            if a.state == "firing" and end <= now:
                a = dataclasses.replace(a, state="resolved", resolved_at=end)
            if a.state == "resolved" and (a.resolved_at or now) < now - timeout:
                del self.posted[fp]
                self.store.delete("am_posted", fp)
                continue
            rv.append(a)
        return rv

    def process(self, alerts: Sequence[Alert], now: float | None = None) -> None:
        """Take the current alerts (firing and resolved; pending ones are ignored), file
        them into groups, and queue notifications for the groups that are due."""
        now = self.clock() if now is None else now
        with self._lock:
            self._refresh_acks()
            given = [a for a in alerts if a.state != "pending"]
            for a in given:
                self.received_at[a.fingerprint] = now
            everything = given + self._posted_now(now)
            seen: set[tuple[str, str]] = set()
            changed: set[str] = set()
            # groups not firing (resolved, not yet forgotten) and new ones may begin an incident
            quiet = {
                k: list(g.alerts.values()) for k, g in self.groups.items() if not _has_firing(g)
            }
            for alert in everything:
                for route in self.config.route.match(alert.labels):
                    labels = route.group_labels(alert.labels)
                    key = group_key(route, labels)
                    seen.add((key, alert.fingerprint))
                    g = self.groups.get(key)
                    if g is None:
                        if alert.state != "firing":
                            continue
                        g = Group(
                            key, route.id, route.receiver, labels, {}, now, now + route.group_wait_s
                        )
                        self.groups[key] = g
                        quiet[key] = []
                        changed.add(key)
                    old = g.alerts.get(alert.fingerprint)
                    if old is None or not _same(old, alert):
                        g.alerts[alert.fingerprint] = _bare(alert)
                        changed.add(key)
            for g in self.groups.values():
                for fp, a in list(g.alerts.items()):
                    if (g.key, fp) not in seen and a.state == "firing":
                        # gone from the source while firing (rule removed, alert deleted)
                        g.alerts[fp] = dataclasses.replace(a, state="resolved", resolved_at=now)
                        changed.add(g.key)
            for key in sorted(changed & set(quiet)):
                self._begin_incident(self.groups[key], quiet[key], now)
            due = [g for g in self.groups.values() if g.next_flush <= now]
            sup = self.suppressor(now) if due else None
            for g in due:
                assert sup is not None
                self._flush(g, now, sup)
                changed.add(g.key)
            changed |= self._escalate_due(now, sup)
            for key in changed:
                self._save(key)
            held = {fp for g in self.groups.values() for fp in g.alerts} | set(self.posted)
            self.received_at = {fp: t for fp, t in self.received_at.items() if fp in held}
            self._update_gauges(now)

    def _begin_incident(self, g: Group, before: list[Alert], now: float) -> None:
        """``g`` starts firing anew: a new incident (the one before, when the group still
        held its resolved alerts (``before``), ends with them)."""
        if not _has_firing(g):
            return
        ended = [a for a in before if a.state == "resolved"]
        if ended:
            self.acks.end_incident(g.key, ended, max(a.resolved_at or now for a in ended))
        fired = [a.fired_at or a.active_at for a in g.alerts.values() if a.state == "firing"]
        self.acks.begin_incident(g.key, min(fired, default=now), g.receiver, g.labels)

    def _save(self, key: str) -> None:
        g = self.groups.get(key)
        if g is None:
            self.store.delete("am_groups", key)
        else:
            self.store.put_group(g)

    # -- suppression -----------------------------------------------------------------------

    def _firing_alerts(self, now: float) -> list[Alert]:
        """The grouped firing alerts and the API's as of ``now``: as Alertmanager's
        inhibitor reads its alert store, a just-posted alert inhibits before any pass has
        grouped it, and one whose end has passed stops inhibiting at once."""
        seen: dict[str, Alert] = {}
        for g in self.groups.values():
            for fp, a in g.alerts.items():
                if a.state == "firing":
                    seen[fp] = a
        for fp, a in self.posted.items():
            if a.state == "firing" and (a.resolved_at is None or a.resolved_at > now):
                seen[fp] = a
            else:
                seen.pop(fp, None)
        return list(seen.values())

    def suppressor(self, now: float) -> Suppressor:
        """The active silences and the firing alerts as of ``now``, for many lookups."""
        with self._lock:
            return Suppressor(
                self.silences.active(now), self.config.inhibit_rules, self._firing_alerts(now)
            )

    # -- notifying -------------------------------------------------------------------------

    def _flush(self, g: Group, now: float, sup: Suppressor) -> None:
        route = self.routes.get(g.route_id)
        if route is None:  # the route went away in a reload
            log.info("dropping group %s: its route is no longer in the config", g.key)
            del self.groups[g.key]
            return
        g.next_flush = now + route.group_interval_s
        g.flushed_resolved = sorted(fp for fp, a in g.alerts.items() if a.state == "resolved")
        if self.config.muted(route, now):
            self.metrics.muted.labels("time_interval").inc()
            return
        wanted = False
        for i, notifier in enumerate(self.integrations.get(g.receiver, [])):
            iid = integration_id(g.receiver, notifier.integration, i)
            if iid in g.pending or self._needs(g, iid, notifier, route, now, sup):
                wanted = True
                if iid not in g.pending:
                    g.pending.append(iid)
                box = self.outboxes.get(iid)
                if box is not None:
                    box.offer([g.key])
        if not wanted:
            self._collect(g)

    def _collect(self, g: Group) -> None:
        """Forget resolved alerts every integration has dealt with; an empty group goes."""
        if g.pending:
            return
        gone = []
        for fp in g.flushed_resolved:
            a = g.alerts.get(fp)
            if a is not None and a.state == "resolved":
                gone.append(g.alerts.pop(fp))
        g.flushed_resolved = []
        if not g.alerts:
            self.groups.pop(g.key, None)
            end = max((a.resolved_at or self.clock() for a in gone), default=self.clock())
            self.acks.end_incident(g.key, gone, end)  # the page's recently resolved
        else:
            self.acks.keep_alerts(g.key, gone)

    def _sets(self, g: Group, sup: Suppressor) -> tuple[list[Alert], list[Alert]]:
        firing: list[Alert] = []
        resolved: list[Alert] = []
        for a in sorted(g.alerts.values(), key=lambda a: sorted(a.labels.items())):
            if a.state == "resolved":
                resolved.append(a)
                continue
            silenced, inhibited = sup.check(a)
            if not silenced and not inhibited:
                firing.append(a)
        return firing, resolved

    def _needs(
        self,
        g: Group,
        iid: str,
        notifier: GroupNotifier,
        route: Route,
        now: float,
        sup: Suppressor,
    ) -> bool:
        """Alertmanager's ``DedupStage.needsUpdate``."""
        firing, resolved = self._sets(g, sup)
        if not firing and not resolved:
            return False  # everything silenced or inhibited: nothing to say, the log stays
        f = {a.fingerprint for a in firing}
        r = {a.fingerprint for a in resolved}
        entry = self.nflog.get(_log_key(g.key, iid))
        if entry is None:
            return bool(f)
        if not f <= entry.firing:
            return True
        if not f:
            return bool(entry.firing)
        if notifier.send_resolved and not r <= entry.resolved:
            return True
        ack = self.current_acks.get(g.key)
        if ack is not None and ack.covers(f, now):
            return False  # acknowledged and unchanged: no repeat until it lapses
        return entry.at < now - route.repeat_interval_s

    def notification(self, key: str, iid: str) -> GroupNotification | None:
        """What integration ``iid`` is to be told about group ``key`` now (None: nothing)."""
        with self._lock:
            g = self.groups.get(key)
            if g is None or iid not in g.pending:
                return None
            notifier = self._notifier(g.receiver, iid)
            if notifier is None:
                g.pending.remove(iid)
                return None
            firing, resolved = self._sets(g, self.suppressor(self.clock()))
            entry = self.nflog.get(_log_key(key, iid))
            alerts = firing + (resolved if notifier.send_resolved else [])
            if not firing and not (entry is not None and entry.firing):
                alerts = []  # it never heard these fire: nothing to say (logged, not sent)
            ack = self.current_acks.get(key)
            fps = {a.fingerprint for a in firing}
            if ack is not None and not (fps and ack.covers(fps, self.clock())):
                ack = None
            return GroupNotification(
                receiver=g.receiver,
                group_key=key,
                group_labels=dict(g.labels),
                alerts=alerts,
                receipt=dict(entry.receipt) if entry else {},
                external_url=self.external_url,
                acknowledged_by=ack.by if ack else "",
                acknowledged_at=ack.at if ack else None,
            )

    def _notifier(self, receiver: str, iid: str) -> GroupNotifier | None:
        for i, n in enumerate(self.integrations.get(receiver, [])):
            if integration_id(receiver, n.integration, i) == iid:
                return n
        return None

    def record(self, key: str, iid: str, sent: GroupNotification, delivery: GroupDelivery) -> None:
        """Write what ``iid`` now knows about group ``key`` into the notification log, and
        the attempt into the group's history (the log keeps only the last one)."""
        with self._lock:
            if sent.alerts and not delivery.deferred:
                self.acks.note(key, self.clock(), *delivery_note(iid, sent, delivery))
            entry = self.nflog.get(_log_key(key, iid))
            receipt = {**(entry.receipt if entry else {}), **delivery.receipt}
            if not delivery.ok:
                if delivery.receipt:  # e.g. posted, then the thread reply failed: keep the ts
                    base = entry or LogEntry(frozenset(), frozenset(), 0.0)
                    kept = dataclasses.replace(base, receipt=receipt)
                    self.nflog[_log_key(key, iid)] = kept
                    self.store.put("am_nflog", _log_key(key, iid), _entry_json(kept))
                return
            firing = frozenset(a.fingerprint for a in sent.alerts if a.state == "firing")
            resolved = frozenset(a.fingerprint for a in sent.alerts if a.state == "resolved")
            new = LogEntry(firing, resolved, self.clock(), receipt)
            self.nflog[_log_key(key, iid)] = new
            self.store.put("am_nflog", _log_key(key, iid), _entry_json(new))
            g = self.groups.get(key)
            if g is not None and iid in g.pending:
                g.pending.remove(iid)
                self._collect(g)
                self._save(key)

    # -- acknowledgements --------------------------------------------------------------------

    def acknowledge(self, key: str, by: str, for_s: float, now: float | None = None) -> Ack:
        """``by`` takes group ``key`` (or its ``group_id``) for ``for_s`` seconds: no repeat
        until it resolves, an alert joins, or the time is up; the group's messages are
        updated to say so. Raises ``AckError`` for an unknown or resolved group."""
        now = self.clock() if now is None else now
        with self._lock:
            g = self.find_group(key)
            if g is None:
                raise AckError(f"no alert group {key!r}; `vigil alert ack --list` shows them")
            ack = new_ack(g.key, {fp: a.state for fp, a in g.alerts.items()}, by, for_s, now)
            self.acks.ack(ack)
            self._refresh_acks()
            return ack

    def find_group(self, key: str) -> Group | None:
        """The group with this key or ``group_id`` (the short id Slack buttons carry)."""
        with self._lock:
            if key in self.groups:
                return self.groups[key]
            return next((g for g in self.groups.values() if group_id(g.key) == key), None)

    def _refresh_acks(self) -> None:
        """Read the acknowledgements (the CLI writes them from another process); one for
        a group that is gone is dropped; a new one re-sends the group's message now so it
        says who acknowledged it (Slack edits the message in place)."""
        old = self.current_acks
        self.current_acks = {}
        for ack in self.acks.all():
            g = self.groups.get(ack.group_key)
            if g is None:
                self.acks.clear(ack.group_key)
                continue
            self.current_acks[g.key] = ack
            before = old.get(g.key)
            if before is not None and before.at == ack.at:
                continue
            for i, notifier in enumerate(self.integrations.get(g.receiver, [])):
                iid = integration_id(g.receiver, notifier.integration, i)
                told = _log_key(g.key, iid) in self.nflog  # a message exists to edit
                if notifier.integration == "slack" and told and iid not in g.pending:
                    g.pending.append(iid)
                    g.next_flush = min(g.next_flush, self.clock())
                    box = self.outboxes.get(iid)
                    if box is not None:
                        box.offer([g.key])

    # -- escalation ------------------------------------------------------------------------

    def _escalate_due(self, now: float, sup: Suppressor | None) -> set[str]:
        """Take each due step of the routes' escalation policies for firing, notified,
        unacknowledged groups. Step ``n`` is due at ``created_at + cycle*k + after``
        (``cycle`` = the last step's ``after``), so the policy repeats until acknowledged."""
        changed: set[str] = set()
        seen = self._escalation_seen
        self._escalation_seen = set()
        for g in self.groups.values():
            route = self.routes.get(g.route_id)
            if route is None or not route.escalation:
                continue
            self._escalation_seen.add(g.key)
            after_start = g.key not in seen
            sup = sup or self.suppressor(now)
            firing, _ = self._sets(g, sup)
            fps = {a.fingerprint for a in firing}
            ack = self.current_acks.get(g.key)
            if not fps or (ack is not None and ack.covers(fps, now)):
                continue
            if not any(k.endswith("\x00" + g.key) and e.firing for k, e in self.nflog.items()):
                continue  # not paged yet (group_wait, muted): nothing to escalate
            steps = route.escalation
            cycle = steps[-1].after_s
            due: int | None = None
            taken = 0
            for _ in range(MAX_ESCALATION_CATCHUP):  # steps missed (acknowledged, down)
                k, i = divmod(g.escalations, len(steps))
                if now < g.created_at + k * cycle + steps[i].after_s:
                    break
                g.escalations += 1
                due = i
                taken += 1
            if due is not None:  # only the latest due step is sent: no burst of old ones
                changed.add(g.key)
                text = f"step {due + 1}: {steps[due].describe()}"
                if after_start and taken > 1:  # those it passes over were due while down
                    self.escalator.pass_over(g.key, taken - 1, text)
                self.escalator.offer_step(g, steps[due], text, firing)  # notes the outcome
        return changed

    # -- views for the API and the UI -----------------------------------------------------

    def alerts(self, now: float | None = None) -> list[AlertView]:
        """Every alert the manager holds, with its state and receivers."""
        now = self.clock() if now is None else now
        with self._lock:
            sup = self.suppressor(now)
            by_fp: dict[str, tuple[Alert, set[str]]] = {}
            for g in self.groups.values():
                for fp, a in g.alerts.items():
                    # The API's latest post of it (a renewed end shows before the next pass).
                    latest = self.posted.get(fp, a)
                    by_fp.setdefault(fp, (latest, set()))[1].add(g.receiver)
            rv = []
            for a, receivers in by_fp.values():
                if a.state != "firing" or (a.resolved_at is not None and a.resolved_at <= now):
                    continue  # resolved, or a posted alert whose end has passed
                silenced, inhibited = sup.check(a)
                state: AlertState = "suppressed" if silenced or inhibited else "active"
                rv.append(
                    AlertView(
                        a,
                        state,
                        tuple(sorted(receivers)),
                        tuple(silenced),
                        tuple(inhibited),
                        self._received(a),
                    )
                )
        return sorted(rv, key=lambda v: sorted(v.alert.labels.items()))

    def ungrouped(self, now: float | None = None) -> list[AlertView]:
        """Alerts posted through the API that no evaluation pass has filed into a group yet,
        as Alertmanager's API lists them: with the receivers their routes name, and the
        silences and inhibitions that apply now (it works the state out when asked, so it
        never shows an alert as ``unprocessed``)."""
        now = self.clock() if now is None else now
        with self._lock:
            grouped = {fp for g in self.groups.values() for fp in g.alerts}
            sup = self.suppressor(now)
            rv = []
            for a in self._posted_now(now):
                if a.state != "firing" or a.fingerprint in grouped:
                    continue
                receivers = sorted({r.receiver for r in self.config.route.match(a.labels)})
                silenced, inhibited = sup.check(a)
                state: AlertState = "suppressed" if silenced or inhibited else "active"
                rv.append(
                    AlertView(
                        a,
                        state,
                        tuple(receivers),
                        tuple(silenced),
                        tuple(inhibited),
                        self._received(a),
                    )
                )
            return rv

    def _received(self, a: Alert) -> float:
        start = a.fired_at if a.fired_at is not None else a.active_at
        return self.received_at.get(a.fingerprint, start)

    def groups_view(self, now: float | None = None) -> list[GroupView]:
        views = {v.alert.fingerprint: v for v in self.alerts(now)}
        with self._lock:
            return [
                GroupView(
                    g.key,
                    g.receiver,
                    dict(g.labels),
                    tuple(views[fp] for fp in sorted(g.alerts) if fp in views),
                )
                for g in sorted(self.groups.values(), key=lambda g: g.key)
            ]

    def _update_gauges(self, now: float) -> None:
        if now - self._last_gc >= 60:
            self._last_gc = now
            self.silences.forget_expired(now)
            self.acks.forget(now, set(self.groups))
        views = self.alerts(now)
        self.metrics.alerts.labels("active").set(sum(v.state == "active" for v in views))
        self.metrics.alerts.labels("suppressed").set(sum(v.state == "suppressed" for v in views))
        for state, n in self.silences.counts(now).items():
            self.metrics.silences.labels(state).set(n)
        self.metrics.groups.set(len(self.groups))

    # -- running -----------------------------------------------------------------------------

    def start(self) -> None:
        self._running = True
        self.escalator.start()
        for box in self.outboxes.values():
            box.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._running = False
        deadline = time.monotonic() + timeout
        self.escalator.stop(timeout)
        for box in self.outboxes.values():
            box.request_stop()
        for box in self.outboxes.values():
            box.stop(max(0.0, deadline - time.monotonic()))

    def deliver_now(self) -> None:
        """One delivery attempt of everything queued, in this thread (``--once``, tests)."""
        for box in list(self.outboxes.values()):
            box.deliver_now()
        self.escalator.deliver_now()

    def close(self) -> None:
        self.store.close()
        self.silences.close()
        self.acks.close()


class Suppressor:
    """Silences and inhibition as of one moment: each inhibit rule's firing sources are
    indexed by their ``equal`` labels, so checking an alert is one lookup per rule."""

    def __init__(
        self, silences: Sequence[Silence], rules: Sequence[InhibitRule], firing: Sequence[Alert]
    ) -> None:
        self.silences = list(silences)
        self.rules: list[tuple[InhibitRule, dict[tuple[str, ...], list[str]]]] = []
        for rule in rules:
            index: dict[tuple[str, ...], list[str]] = {}
            for src in firing:
                if all(m.matches(src.labels) for m in rule.source):
                    sources = index.setdefault(_equal(rule, src.labels), [])
                    if len(sources) < 2:  # one besides the target itself is enough
                        sources.append(src.fingerprint)
            self.rules.append((rule, index))

    def check(self, alert: Alert) -> tuple[list[str], list[str]]:
        """(ids of the silences that silence ``alert``, fingerprints that inhibit it)."""
        silenced = [s.id for s in self.silences if s.mutes(alert.labels)]
        inhibited: list[str] = []
        for rule, index in self.rules:
            if not all(m.matches(alert.labels) for m in rule.target):
                continue
            sources = index.get(_equal(rule, alert.labels), [])
            inhibitor = next((fp for fp in sources if fp != alert.fingerprint), None)
            if inhibitor is not None:
                inhibited.append(inhibitor)
        return silenced, inhibited


def _equal(rule: InhibitRule, labels: Mapping[str, str]) -> tuple[str, ...]:
    return tuple(labels.get(k, "") for k in rule.equal)


def integration_id(receiver: str, kind: str, index: int) -> str:
    """``team-pager/slack/0``: the receiver, the integration kind and its position."""
    return f"{receiver}/{kind}/{index}"


MAX_NOTE_ERROR = 300
"""Characters of a delivery's error kept in the group's history."""


def delivery_note(iid: str, sent: GroupNotification, d: GroupDelivery) -> tuple[str, str]:
    """(kind, text) of a delivery for the group's history: firing or resolved, to which
    integration, how many alerts, a new message or an edit of the earlier one, and why
    it failed. Example: ``sent firing to team/slack/0: 2 alerts (2 firing, 0 resolved),
    message updated``."""
    firing = len(sent.firing)
    n = len(sent.alerts)
    what = (
        f"{sent.status} to {iid}: {n} alert{'s' if n != 1 else ''}"
        f" ({firing} firing, {n - firing} resolved),"
        f" {'message updated' if d.edited else 'new message'}"
    )
    if d.ok:
        return "notification", f"sent {what}"
    reason = d.error[:MAX_NOTE_ERROR] or "no reason given"
    return "notification-failed", f"failed to send {what}: {reason}"


def _log_key(key: str, iid: str) -> str:
    return f"{iid}\x00{key}"


def _bare(alert: Alert) -> Alert:
    """The alert without the per-receiver bookkeeping of the legacy notifiers."""
    if not alert.delivered and not alert.receipts:
        return alert
    return dataclasses.replace(alert, delivered={}, receipts={})


def api_alert(
    labels: Mapping[str, str],
    annotations: Mapping[str, str],
    starts_at: float,
    ends_at: float | None,
    now: float,
    generator_url: str = "",
) -> Alert:
    """An alert posted to the API as the manager holds it: firing until ``ends_at``."""
    resolved = ends_at is not None and ends_at <= now
    return Alert(
        fingerprint(labels),
        dict(labels),
        dict(annotations),
        "resolved" if resolved else "firing",
        0.0,
        starts_at,
        fired_at=starts_at,
        resolved_at=ends_at,
        expr=generator_url,
    )


class GroupOutbox(QueueWorker):
    """One integration's bounded queue of group keys and the worker that delivers them;
    a key refused when full stays owed by its group and is offered at its next flush."""

    what = "group(s)"

    def __init__(
        self, iid: str, receiver: str, notifier: GroupNotifier, manager: AlertManager
    ) -> None:
        super().__init__(
            iid,
            manager.outbox_metrics,
            max_items=manager.queue_size,
            backoff_s=manager.backoff_s,
            max_backoff_s=manager.max_backoff_s,
        )
        self.iid = iid
        self.receiver = receiver
        self.notifier = notifier
        self.manager = manager

    def _deliver(self, keys: Sequence[str]) -> bool:
        failed: set[str] = set()
        for key in keys:
            if self._stopping():
                failed.add(key)
                continue
            n = self.manager.notification(key, self.iid)
            if n is None:
                continue
            if not n.alerts:  # e.g. all resolved and send_resolved off: log it, send nothing
                self.manager.record(key, self.iid, n, GroupDelivery(True))
                continue
            try:
                d = self.notifier.notify_group(n)
            except Exception as exc:  # the protocol says never raise; be sure anyway
                d = GroupDelivery(False, error=str(exc))
            self.manager.record(key, self.iid, n, d)
            kind = self.notifier.integration
            outcome = "success" if d.ok else "deferred" if d.deferred else "failure"
            self.metrics.notifications.labels(self.iid, outcome).inc()
            if outcome == "deferred":
                # Held back by the receiver (an e-mail rate limit): retried, not a failure,
                # and not a notification sent yet.
                failed.add(key)
                continue
            self.manager.metrics.notifications.labels(kind, self.receiver).inc()
            if not d.ok:
                failed.add(key)
                self.metrics.failures.labels(self.iid).inc()
                self.manager.metrics.failed.labels(kind, self.receiver).inc()
                log.warning("integration %s: group %s failed: %s", self.iid, key, d.error)
        return self._done(keys, failed)


MAX_ESCALATION_QUEUE = 1000
MAX_ESCALATION_CATCHUP = 10_000
"""Missed steps skipped in one pass (a group firing for weeks with a 1m step)."""


@dataclass
class EscalationJob:
    """A step taken for a group, waiting to be sent (again, after a failure)."""

    notification: GroupNotification
    step: EscalationStep
    text: str
    """``step N: after …: target``, as the group's history names it."""
    attempts: int = 0
    error: str = ""

    def to_json(self) -> str:
        n = self.notification
        return json.dumps(
            {
                "notification": {
                    "receiver": n.receiver,
                    "group_key": n.group_key,
                    "group_labels": dict(n.group_labels),
                    "alerts": [dataclasses.asdict(a) for a in n.alerts],
                    "receipt": dict(n.receipt),
                    "external_url": n.external_url,
                },
                "step": dataclasses.asdict(self.step),
                "text": self.text,
                "attempts": self.attempts,
                "error": self.error,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> EscalationJob:
        """A job as ``to_json`` saved it; ``NotifyError`` saying what is wrong for a row
        that is not one (a damaged or foreign ``alerts.db``)."""
        try:
            d = json.loads(text)
            n = d["notification"]
            notification = GroupNotification(
                _text(n["receiver"]),
                _text(n["group_key"]),
                _texts(n["group_labels"]),
                [_alert(a) for a in n["alerts"]],
                _texts(n["receipt"]),
                _text(n["external_url"]),
            )
            st = d["step"]
            step = EscalationStep(
                float(st["after_s"]),
                _text(st["slack_mention"]),
                _text(st["channel"]),
                _text(st["email"]),
            )
            attempts = d["attempts"]
            if type(attempts) is not int:
                raise TypeError(f"attempts must be an integer, not {attempts!r}")
            return cls(notification, step, _text(d["text"]), attempts, _text(d["error"]))
        except (ValueError, KeyError, TypeError, RecursionError) as exc:
            raise NotifyError(f"not an escalation step: {type(exc).__name__}: {exc}") from exc


def _text(v: object) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, not {v!r:.40}")
    return v


def _texts(v: object) -> dict[str, str]:
    if not isinstance(v, dict):
        raise TypeError(f"expected an object, not {v!r:.40}")
    return {_text(k): _text(x) for k, x in v.items()}


def _alert(v: object) -> Alert:
    if not isinstance(v, dict):
        raise TypeError(f"expected an alert object, not {v!r:.40}")
    a = Alert(**v)
    for name in ("fingerprint", "state", "expr", "rule"):
        _text(getattr(a, name))
    for name in ("value", "active_at", "fired_at", "resolved_at", "keep_firing_since"):
        x = getattr(a, name)
        required = name in ("value", "active_at")
        if (x is not None or required) and type(x) not in (int, float):
            raise TypeError(f"alert {name} must be a number, not {x!r:.40}")
    return dataclasses.replace(
        a,
        labels=_texts(a.labels),
        annotations=_texts(a.annotations),
        delivered={},  # escalation jobs hold bare alerts (``_bare``)
        receipts={},
    )


class Escalator(QueueWorker):
    """Sends escalation steps from its own worker (the receivers' queue mechanism: bounded,
    de-duplicated, exponential back-off), so a slow Slack or SMTP server never delays
    evaluation. One step per group waits: a failed step is retried until it is sent, the
    group's next step replaces it, or the group is acknowledged or resolved; each outcome
    is in the group's history and counted. Waiting steps are rows of ``am_escalations``
    in ``alerts.db`` (saved with the group's step count, deleted once settled), so a
    restart offers them again: retried, never lost, never sent twice."""

    what = "escalation step(s)"

    def __init__(self, manager: AlertManager) -> None:
        super().__init__(
            "escalation",
            manager.outbox_metrics,
            max_items=MAX_ESCALATION_QUEUE,
            backoff_s=manager.backoff_s,
            max_backoff_s=manager.max_backoff_s,
        )
        self.manager = manager
        self.jobs: dict[str, EscalationJob] = {}
        self._jobs_lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        """Queue the steps a previous run left waiting (failing, or not tried yet)."""
        store = self.manager.store
        for key, data in store.rows("am_escalations"):
            try:
                self.jobs[key] = EscalationJob.from_json(data)
            except NotifyError as exc:
                log.warning("alerts.db am_escalations row %r dropped: %s", key, exc)
                store.delete("am_escalations", key)
                self.manager.metrics.escalations.labels("dropped").inc()
        if self.jobs:
            log.info("%d escalation step(s) waiting from before the restart", len(self.jobs))
            self.offer(list(self.jobs))

    def offer_step(
        self, g: Group, step: EscalationStep, text: str, firing: Sequence[Alert]
    ) -> None:
        receipt: dict[str, str] = {}
        for key, entry in self.manager.nflog.items():
            if key.endswith("\x00" + g.key) and entry.receipt.get("ts"):
                receipt = dict(entry.receipt)
        n = GroupNotification(g.receiver, g.key, dict(g.labels), list(firing), receipt)
        job = EscalationJob(n, step, text)
        with self._jobs_lock:
            self.manager.store.put_group_and(g, "am_escalations", g.key, job.to_json())
            old = self.jobs.get(g.key)
            self.jobs[g.key] = job
        if old is not None:  # still failing: the newer step goes instead
            self._give_up(g.key, old, f"replaced by {text.split(':', 1)[0]}")
        if self.offer([g.key]):
            self._forget(g.key, job)
            self.manager.metrics.escalations.labels("dropped").inc()
            self.manager.acks.note(
                g.key, self.manager.clock(), "escalation", f"{text}: not sent (queue full)"
            )

    def pass_over(self, key: str, n: int, instead: str) -> None:
        """``n`` steps became due while the process was down, and so did a later one: only
        the latest goes (no burst); the others are given up, noted and counted."""
        self.manager.metrics.escalations.labels("abandoned").inc(n)
        self.manager.acks.note(
            key,
            self.manager.clock(),
            "escalation",
            f"{n} earlier step(s) due while vigil alert was down not sent:"
            f" {instead.split(':', 1)[0]} goes instead",
        )

    def _give_up(self, key: str, job: EscalationJob, why: str) -> None:
        self.manager.metrics.escalations.labels("abandoned").inc()
        tries = f" after {job.attempts} failed attempt(s)" if job.attempts else ""
        self.manager.acks.note(
            key, self.manager.clock(), "escalation", f"{job.text}: not sent{tries} ({why})"
        )

    def _moot(self, key: str, n: GroupNotification) -> str:
        """Why the step need not be sent any more ("" when it still must)."""
        m = self.manager
        now = m.clock()
        with m._lock:
            g = m.groups.get(key)
            if g is None or all(a.state == "resolved" for a in g.alerts.values()):
                return "the group resolved"
            if not m._sets(g, m.suppressor(now))[0]:
                return "its alerts are silenced or inhibited"
            ack = m.current_acks.get(key)
            if ack is not None and ack.covers({a.fingerprint for a in n.alerts}, now):
                return f"acknowledged by {ack.by}"
        return ""

    def send(self, n: GroupNotification, step: EscalationStep) -> GroupDelivery:
        m = self.manager
        if step.email:
            targets = [x for x in m.integrations.get(step.email, []) if x.integration == "email"]
            if not targets:
                return GroupDelivery(False, error=f"receiver {step.email} has no email_configs")
            results = [x.notify_group(n) for x in targets]
        else:
            slack = [x for x in m.integrations.get(n.receiver, []) if hasattr(x, "escalate")]
            if not slack:
                return GroupDelivery(False, error=f"receiver {n.receiver} has no slack_configs")
            results = [x.escalate(n, step) for x in slack]
        failed = [d for d in results if not d.ok]
        if not failed:
            return GroupDelivery(True)
        deferred = all(d.deferred for d in failed)
        return GroupDelivery(False, error="; ".join(d.error for d in failed), deferred=deferred)

    def _deliver(self, keys: Sequence[str]) -> bool:
        failed: set[str] = set()
        for key in keys:
            with self._jobs_lock:
                job = self.jobs.get(key)
            if job is None:
                continue
            if self._stopping():
                failed.add(key)
                continue
            why = self._moot(key, job.notification)
            if why:
                self._forget(key, job)
                self._give_up(key, job, why)
                continue
            try:
                d = self.send(job.notification, job.step)
            except Exception as exc:  # the protocol says never raise; be sure anyway
                d = GroupDelivery(False, error=str(exc))
            job.attempts += 1
            now = self.manager.clock()
            if d.ok:
                self._forget(key, job)
                self.manager.metrics.escalations.labels("sent").inc()
                after = f" (attempt {job.attempts})" if job.attempts > 1 else ""
                self.manager.acks.note(key, now, "escalation", f"{job.text}: sent{after}")
                continue
            failed.add(key)
            outcome = "deferred" if d.deferred else "failed"
            self.manager.metrics.escalations.labels(outcome).inc()
            if not d.deferred:
                self.metrics.failures.labels(self.name).inc()
            log.warning("escalation of %s (%s) %s: %s", key, job.text, outcome, d.error)
            if job.attempts == 1 or d.error != job.error:  # not every retry: the history stays
                self.manager.acks.note(  # readable through a long outage
                    key, now, "escalation", f"{job.text}: {outcome}: {d.error}; retrying"
                )
            job.error = d.error
            self._keep(key, job)
        rv = self._done(keys, failed)
        with self._jobs_lock:  # a step that replaced one while it was being sent
            newer = [k for k in keys if k not in failed and k in self.jobs]
        if newer:
            self.offer(newer)
        return rv

    def _keep(self, key: str, job: EscalationJob) -> None:
        """Save a failed job's attempts and error (unless a newer step replaced it)."""
        with self._jobs_lock:
            if self.jobs.get(key) is job:
                self.manager.store.put("am_escalations", key, job.to_json())

    def _forget(self, key: str, job: EscalationJob) -> None:
        with self._jobs_lock:
            if self.jobs.get(key) is job:
                del self.jobs[key]
                self.manager.store.delete("am_escalations", key)
