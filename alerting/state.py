"""Alert states: inactive → pending (``for``) → firing → resolved, per fingerprint.

A firing alert whose condition stops holding stays firing for its rule's
``keep_firing_for`` before it resolves, as in Prometheus.

``AlertBook.update`` takes one rule's evaluation result and moves each alert
along; states, and what each receiver has been told (Slack's message ``ts``),
live in SQLite (``<data_dir>/alerts.db``) so a restart continues where it
stopped instead of re-posting or forgetting a firing alert.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from alerting.rules import Rule
from alerting.templates import TemplateContext, render
from siem.model import METRIC_NAME, Labels

State = Literal["pending", "firing", "resolved"]


@dataclass(frozen=True)
class Hit:
    """One element of a rule's result: the series labels and its value."""

    labels: Labels
    value: float


@dataclass(frozen=True)
class Alert:
    """One alert instance of a rule, identified by its label set's fingerprint."""

    fingerprint: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    state: State
    value: float
    active_at: float
    fired_at: float | None = None
    resolved_at: float | None = None
    expr: str = ""
    delivered: Mapping[str, str] = field(default_factory=dict)
    """Per receiver, the last state it was told about."""
    receipts: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """Per receiver, what it needs later (Slack: channel and ts of the message)."""
    keep_firing_since: float | None = None
    """When the condition stopped holding while the rule's ``keep_firing_for`` keeps it
    firing."""
    rule: str = ""
    """The ``rule_key`` of the rule that owns the alert ("" in rows written before alerts
    were keyed by rule: adopted by the first matching rule, see ``AlertBook``)."""

    @property
    def name(self) -> str:
        return self.labels.get("alertname", "")

    @property
    def severity(self) -> str:
        return self.labels.get("severity", "unknown")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Alert:
        return cls(**json.loads(text))


@dataclass(frozen=True)
class Transition:
    """An alert changed state. ``before``/``after`` None mean inactive; ``alert`` is the
    alert as it is after the change (as it was, when it went inactive)."""

    alert: Alert
    before: State | None
    after: State | None


def fingerprint(labels: Mapping[str, str]) -> str:
    """A stable id of a label set (alertname included), as Alertmanager shows it."""
    canonical = "\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items()))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def rule_key(rule: Rule) -> str:
    """A rule's identity for its alerts: its name, condition and own labels (templates
    unexpanded). Two rules with the same name (a warning/critical pair, Sloth's page and
    ticket alerts) each resolve only their own alerts, as in Prometheus, where alert state
    belongs to the rule."""
    condition = rule.expr if rule.expr is not None else _event_expr(rule)
    labels = (f"{k}\x01{v}" for k, v in sorted(rule.labels.items()))
    canonical = "\x00".join([rule.name, condition, *labels])
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _could_own(rule: Rule, alert: Alert) -> bool:
    """Whether ``rule`` could have made ``alert``: its name and the rule's untemplated
    labels (how an alert whose rule is gone — edited, or a row from before alerts were
    keyed by rule — finds its heir, as Prometheus carries state over by name and labels)."""
    return alert.name == rule.name and all(
        alert.labels.get(k) == v for k, v in rule.labels.items() if "{{" not in v
    )


def _owns(key: str, rule: Rule, alert: Alert) -> bool:
    """Whether ``alert`` is ``rule``'s (``key`` is ``rule_key(rule)``)."""
    return alert.rule == key if alert.rule else _could_own(rule, alert)


def alert_labels(rule: Rule, hit: Hit, context: TemplateContext | None = None) -> dict[str, str]:
    """Result labels without the metric name, plus the rule's (templated) labels."""
    labels = {k: v for k, v in hit.labels if k != METRIC_NAME}
    result = dict(hit.labels)  # templates see the result's labels, __name__ included
    for key, template in rule.labels.items():
        labels[key] = render(template, result, hit.value, context)
    labels["alertname"] = rule.name
    return labels


def open_db(path: str | Path) -> sqlite3.Connection:
    """A connection to ``alerts.db`` (created with its directory) in WAL mode, shared by
    threads (callers lock) and waiting up to 5 s for another process's write."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA busy_timeout=5000")
    return db


class AlertDB:
    """Alert states in SQLite (WAL), one JSON row per fingerprint; ``rule`` is the owning
    rule's ``rule_key`` (its name in rows from before alerts were keyed by rule: their JSON
    has no ``rule`` and they are adopted by the first rule that matches them)."""

    def __init__(self, path: str | Path) -> None:
        self._lock = threading.Lock()
        self._db = open_db(path)
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS alerts (fingerprint TEXT PRIMARY KEY, rule TEXT NOT NULL,"
            " data TEXT NOT NULL)"
        )
        # Readers in other processes (the web UI) pick alerts by state without loading all.
        self._db.execute(
            "CREATE INDEX IF NOT EXISTS alerts_state ON alerts (json_extract(data, '$.state'))"
        )

    def load(self) -> dict[str, Alert]:
        with self._lock:
            rows = self._db.execute("SELECT data FROM alerts").fetchall()
        return {a.fingerprint: a for a in (Alert.from_json(r[0]) for r in rows)}

    def in_state(self, state: str, limit: int) -> list[Alert]:
        """At most ``limit`` alerts in ``state`` (``pending``…), read through an index."""
        with self._lock:
            rows = self._db.execute(
                "SELECT data FROM alerts WHERE json_extract(data, '$.state') = ? LIMIT ?",
                (state, limit),
            ).fetchall()
        return [Alert.from_json(r[0]) for r in rows]

    def save(self, alert: Alert) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO alerts (fingerprint, rule, data) VALUES (?, ?, ?)",
                (alert.fingerprint, alert.rule or alert.name, alert.to_json()),
            )

    def delete(self, fp: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM alerts WHERE fingerprint = ?", (fp,))

    def close(self) -> None:
        with self._lock:
            self._db.close()


class AlertBook:
    """The alerts of all rules, kept in step with an ``AlertDB``.

    The evaluation loop and the notifier workers share one book; every
    read-modify-write holds its lock, so a receipt a worker records is never
    overwritten by an evaluation that read the alert just before.
    """

    def __init__(self, db: AlertDB) -> None:
        self.db = db
        self._lock = threading.RLock()
        self._alerts = db.load()

    def alerts(self, rule_name: str | None = None) -> list[Alert]:
        """Current alerts (pending, firing, resolved-not-yet-forgotten), by name then labels."""
        with self._lock:
            rv = [a for a in self._alerts.values() if rule_name is None or a.name == rule_name]
        return sorted(rv, key=lambda a: (a.name, sorted(a.labels.items())))

    def rule_alerts(self, rule: Rule) -> list[Alert]:
        """The current alerts of ``rule`` (not of another rule with the same name)."""
        key = rule_key(rule)
        return [a for a in self.alerts(rule.name) if _owns(key, rule, a)]

    def get(self, fp: str) -> Alert | None:
        """The alert with fingerprint ``fp`` as it is now, if any."""
        with self._lock:
            return self._alerts.get(fp)

    def update(
        self,
        rule: Rule,
        hits: Sequence[Hit],
        now: float,
        context: TemplateContext | None = None,
    ) -> list[Transition]:
        """Apply one evaluation of ``rule`` at ``now``; return the state changes.

        ``context`` gives the templates external labels, the external URL and
        ``query``."""
        with self._lock:
            return self._update(rule, hits, now, context)

    def _update(
        self, rule: Rule, hits: Sequence[Hit], now: float, context: TemplateContext | None
    ) -> list[Transition]:
        changes: list[Transition] = []
        seen: set[str] = set()
        key = rule_key(rule)
        for hit in hits:
            labels = alert_labels(rule, hit, context)
            fp = fingerprint(labels)
            if fp in seen:
                continue  # duplicate label sets after dropping __name__: first wins
            seen.add(fp)
            result = dict(hit.labels)
            annotations = {
                k: render(t, result, hit.value, context) for k, t in rule.annotations.items()
            }
            old = self._alerts.get(fp)
            if old is None or old.state == "resolved":
                expr = rule.expr if rule.expr is not None else _event_expr(rule)
                alert = Alert(
                    fp, labels, annotations, "pending", hit.value, now, expr=expr, rule=key
                )
                before = None
            else:
                alert = dataclasses.replace(
                    old, annotations=annotations, value=hit.value, keep_firing_since=None, rule=key
                )
                before = old.state
            if alert.state == "pending" and now - alert.active_at >= rule.for_s:
                alert = dataclasses.replace(alert, state="firing", fired_at=now)
            self._put(alert)
            if alert.state != before:
                changes.append(Transition(alert, before, alert.state))
        for alert in self.rule_alerts(rule):
            if alert.fingerprint in seen or alert.state == "resolved":
                continue
            if alert.state == "pending":
                self._drop(alert.fingerprint)
                changes.append(Transition(alert, "pending", None))
            elif rule.keep_firing_for_s > 0 and (
                now - (alert.keep_firing_since or now) < rule.keep_firing_for_s
            ):
                if alert.keep_firing_since is None:
                    self._put(dataclasses.replace(alert, keep_firing_since=now))
            else:
                resolved = dataclasses.replace(alert, state="resolved", resolved_at=now)
                self._put(resolved)
                changes.append(Transition(resolved, "firing", "resolved"))
        return changes

    def needing(self, receiver: str) -> list[Alert]:
        """Firing or resolved alerts whose latest state ``receiver`` has not been told."""
        return [
            a
            for a in self.alerts()
            if a.state != "pending" and a.delivered.get(receiver) != a.state
        ]

    def delivered(
        self, told: Alert, receiver: str, state: State | None, receipt: Mapping[str, str]
    ) -> None:
        """Record what ``receiver`` now knows about ``told``: merge ``receipt``; mark ``state``
        delivered. Ignored when the alert has since gone and come back (a new episode with
        the same fingerprint must get its own message)."""
        with self._lock:
            alert = self._alerts.get(told.fingerprint)
            if alert is None or alert.active_at != told.active_at:
                return
            receipts = dict(alert.receipts)
            receipts[receiver] = {**alert.receipts.get(receiver, {}), **receipt}
            delivered = dict(alert.delivered)
            if state is not None:
                delivered[receiver] = state
            self._put(dataclasses.replace(alert, receipts=receipts, delivered=delivered))

    def forget_delivered(self, receivers: Sequence[str]) -> list[str]:
        """Drop resolved alerts every receiver has been told about; return their fingerprints."""
        with self._lock:
            gone = [
                a.fingerprint
                for a in self.alerts()
                if a.state == "resolved"
                and all(a.delivered.get(r) == "resolved" for r in receivers)
            ]
            for fp in gone:
                self._drop(fp)
        return gone

    def forget_rules_except(self, rules: Sequence[Rule]) -> None:
        """After a (re)load: an alert whose rule is gone passes to the first rule of the same
        name and labels (its expression was edited; a row from before alerts were keyed by
        rule), else is dropped."""
        keys = {rule_key(rule): rule for rule in rules}
        with self._lock:
            for alert in self.alerts():
                if alert.rule in keys:
                    continue
                heir = next((r for r in rules if _could_own(r, alert)), None)
                if heir is None:
                    self._drop(alert.fingerprint)
                else:
                    self._put(dataclasses.replace(alert, rule=rule_key(heir)))

    def _put(self, alert: Alert) -> None:
        self._alerts[alert.fingerprint] = alert
        self.db.save(alert)

    def _drop(self, fp: str) -> None:
        self._alerts.pop(fp, None)
        self.db.delete(fp)


def _event_expr(rule: Rule) -> str:
    """An event rule's condition in words, where a PromQL rule shows its ``expr``."""
    cond = rule.event
    if cond is None:
        return ""
    dataset = f"event.dataset:{cond.dataset} and " if cond.dataset else ""
    window, threshold = f"{cond.window:g}s", f"{cond.threshold:g}"
    return f"count by {cond.group_by} ({dataset}{cond.query}) over {window} > {threshold}"
