"""The evaluation loop: rules → results → alert states → events and notifications.

Every group runs at its own interval, its rules in file order, as Prometheus
runs them: a recording rule stores its result as samples (its ``record`` name,
the result's labels and the rule's), so later rules, later groups and the
dashboards read it; an alerting rule moves its alerts along and writes the
``ALERTS`` series Prometheus writes. Series a rule wrote last time and not
this time get Prometheus' staleness marker. A group's ``query_offset`` moves
its queries back in time; its ``limit`` fails a rule that returns more series
or alerts than that. A rule that fails to evaluate keeps its
alerts as they are and is counted; a store that refuses the ``vigil.alert``
events gets them again next pass. Notifications leave the loop: each pass only
offers undelivered alerts to per-receiver outboxes (``alerting.notify.outbox``),
whose worker threads deliver and retry with their own backoff, so a receiver
that is down never delays evaluation. With an Alertmanager configuration the
alerts go to an ``alerting.am.dispatch.AlertManager`` instead, which routes,
groups, silences and inhibits them and has its own per-integration outboxes.
A pass reads samples from the in-memory head of ``alerting.sample_cache``
(brought up to date with what the store stored since the last pass) through
the pass' shared reads (``alerting.shared_select``).
Nothing here stops the loop. Example::

    engine = AlertEngine(store, load_rules(files), AlertBook(AlertDB(path)), [slack])
    engine.run(stop_event)
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, cast

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram

from alerting import promql_plan, sample_cache
from alerting.am.dispatch import AlertManager
from alerting.notify.base import Notifier
from alerting.notify.outbox import DEFAULT_MAX_BACKOFF_S, DEFAULT_QUEUE_SIZE, Outboxes
from alerting.promql import Engine, InstantSample
from alerting.rules import EventCondition, Rule, RuleError, RuleGroup, expand, load_rules
from alerting.sample_cache import SampleCache, reach
from alerting.shared_select import SharedSelects
from alerting.state import AlertBook, Hit, Transition, alert_labels
from alerting.templates import QuerySample, TemplateContext, TemplateError
from siem.model import (
    METRIC_NAME,
    STALE_NAN,
    Event,
    EventQuery,
    Labels,
    Sample,
    Store,
    event_id,
    labels_from,
)

log = logging.getLogger(__name__)

MAX_UNWRITTEN_EVENTS = 10_000
MAX_RELOAD_REQUESTS = 16
"""``POST /-/reload`` calls waiting for the evaluation loop at once; more are refused."""
RELOAD_TIMEOUT_S = 30.0
"""How long ``POST /-/reload`` waits for the loop (a long evaluation pass) to reload."""


class RuleEvaluationError(Exception):
    """A rule's result broke a rule of its group (``limit``, duplicate series)."""


STALE: tuple[tuple[str, float], ...] = (("", -1.0),)
"""A file signature no listing has: the next ``changed()`` is True."""


class RuleSource:
    """Rule files from globs, reloaded when any file changes; a bad edit keeps the last good
    rules."""

    def __init__(self, patterns: Sequence[str], *, default_interval: float = 5.0) -> None:
        self.patterns = list(patterns)
        self.default_interval = default_interval
        self._signature: tuple[tuple[str, float], ...] = ()

    def _current(self) -> tuple[tuple[str, float], ...]:
        rv = []
        for path in expand(self.patterns):
            try:
                rv.append((str(path), path.stat().st_mtime))
            except OSError:
                continue
        return tuple(rv)

    def load(self) -> list[RuleGroup]:
        """Load every file now; raises ``RuleError`` naming each bad file and line.

        A refused version counts as seen: it is reported once, not on every pass,
        and the next edit of any file is tried again."""
        signature = self._current()
        self._signature = signature
        return load_rules([Path(p) for p, _ in signature], default_interval=self.default_interval)

    def changed(self) -> bool:
        return self._current() != self._signature

    def mark_stale(self) -> None:
        """Read every file again on the next check, changed or not (``SIGHUP``)."""
        self._signature = STALE


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.evaluations = Counter(
            "vigil_alert_group_evaluations", "Rule group evaluations", ["group"], registry=registry
        )
        self.failures = Counter(
            "vigil_alert_rule_evaluation_failures",
            "Rule evaluations that failed (the rule's alerts are kept as they were)",
            ["group", "alertname"],
            registry=registry,
        )
        self.duration = Histogram(
            "vigil_alert_group_duration_seconds",
            "Time to evaluate a rule group",
            ["group"],
            registry=registry,
        )
        self.last = Gauge(
            "vigil_alert_group_last_evaluation_timestamp_seconds",
            "When each group was last evaluated",
            ["group"],
            registry=registry,
        )
        self.alerts = Gauge("vigil_alerts", "Alerts by state", ["state"], registry=registry)
        self.transitions = Counter(
            "vigil_alert_transitions",
            "Alert state changes",
            ["alertname", "state"],
            registry=registry,
        )
        self.event_failures = Counter(
            "vigil_alert_event_write_failures",
            "Writes of vigil.alert events the store refused (retried next pass)",
            registry=registry,
        )
        self.reload_failures = Counter(
            "vigil_alert_rule_reload_failures",
            "Rule reloads refused because a file had errors (the last good rules stay)",
            registry=registry,
        )
        # As Prometheus' prometheus_config_last_reload_successful: VigilConfigReloadFailing.
        self.reload_ok = Gauge(
            "vigil_alert_rules_last_reload_successful",
            "1 when the last (re)load of the rule and SLO files worked, 0 when the last good"
            " rules are kept",
            registry=registry,
        )
        self.reload_at = Gauge(
            "vigil_alert_rules_last_reload_success_timestamp_seconds",
            "When the rule and SLO files were last loaded successfully",
            registry=registry,
        )


class AlertEngine:
    """Evaluates rule groups over a ``Store``, keeps alert states, notifies receivers."""

    def __init__(
        self,
        store: Store,
        groups: Sequence[RuleGroup],
        book: AlertBook,
        notifiers: Sequence[Notifier],
        *,
        evaluator: Engine | None = None,
        runbook_base_url: str = "",
        registry: CollectorRegistry = REGISTRY,
        clock: Callable[[], float] = time.time,
        source: RuleSource | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        max_backoff_s: float = DEFAULT_MAX_BACKOFF_S,
        external_labels: dict[str, str] | None = None,
        external_url: str = "",
        manager: AlertManager | None = None,
        share_fetches: bool = True,
        cache_max_samples: int = sample_cache.DEFAULT_MAX_SAMPLES,
        cache_max_window_s: float = sample_cache.DEFAULT_MAX_WINDOW_S,
    ) -> None:
        self.store = store
        self.manager = manager
        """With an Alertmanager configuration: routes, groups, silences and notifies;
        ``notifiers`` are then usually empty."""
        self.book = book
        self.notifiers = list(notifiers)
        self.evaluator = evaluator or Engine(store)
        self.outboxes = Outboxes(
            book,
            self.notifiers,
            registry=registry,
            runbook_base_url=runbook_base_url,
            max_items=queue_size,
            max_backoff_s=max_backoff_s,
            metrics=manager.outbox_metrics if manager is not None else None,
        )
        self.clock = clock
        self.source = source
        self.metrics = _Metrics(registry)
        self._unwritten: list[Event] = []
        self.external_labels = dict(external_labels or {})
        self.external_url = external_url or runbook_base_url
        self.last_errors: dict[tuple[str, str, int], str] = {}
        """Per (file, rule name, line), why its last evaluation failed; gone once it works."""
        self._written: dict[tuple[str, str, int], set[Labels]] = {}
        self.share_fetches = share_fetches
        self._pass: SharedSelects | None = None
        self._base_evaluator = self.evaluator
        self.cache: SampleCache | None = None
        """Recent samples of the rules' metrics in memory (``alerting.sample_cache``),
        with shared reads, a store that logs its writes and the plain evaluator."""
        if (
            share_fetches
            and cache_max_samples > 0
            and SampleCache.supports(store)
            and type(self.evaluator) is Engine
        ):
            self.cache = SampleCache(
                store,
                lookback=self.evaluator.lookback,
                max_samples=cache_max_samples,
                max_window_s=cache_max_window_s,
                registry=registry,
            )
        self.groups: list[RuleGroup] = []
        self.set_groups(groups)
        self.metrics.reload_ok.set(1)  # the caller loaded ``groups``: a bad file refuses the start
        self.metrics.reload_at.set(self.clock())
        self.reload_error = ""
        """Why the last rule reload was refused; "" once one works."""
        self._reload_requests: queue.Queue[tuple[threading.Event, list[str]]] = queue.Queue(
            MAX_RELOAD_REQUESTS
        )

    def set_groups(self, groups: Sequence[RuleGroup]) -> None:
        """Use these rules from now on; alerts of rules that disappeared are dropped."""
        self.groups = list(groups)
        if self.cache is not None:
            needs: dict[str, set[float]] = {}
            for group in self.groups:
                for rule in group.rules:
                    if rule.expr is None:
                        continue
                    node = promql_plan.compile_expr(rule.expr)
                    found = reach(node, self.evaluator.lookback, group.query_offset_s)
                    for name, backs in found.items():
                        needs.setdefault(name, set()).update(backs)
            self.cache.want(needs)
        self.book.forget_rules_except(
            [r for g in self.groups for r in g.rules if r.kind == "alert"]
        )

    def hits(self, rule: Rule, at: float) -> list[Hit]:
        """What the rule's condition returns at ``at``: one ``Hit`` per alerting series."""
        if rule.event is not None:
            return self._event_hits(rule.event, at)
        assert rule.expr is not None
        rv = self.evaluator.instant(rule.expr, at)
        if isinstance(rv, float):
            return [Hit((), rv)]  # a scalar result is one alert without labels, as in Prometheus
        return [Hit(s.labels, s.value) for s in rv]

    def _event_hits(self, cond: EventCondition, at: float) -> list[Hit]:
        query = EventQuery(dataset=cond.dataset, start=at - cond.window, end=at, kql=cond.query)
        with self.evaluator.new_budget().active():  # the same time and size limits as PromQL
            counts = self.store.count_by(query, cond.group_by)
        return [
            Hit(((cond.label, value),), float(n))
            for value, n in sorted(counts.items())
            if n > cond.threshold
        ]

    def template_query(self, at: float, expr: str) -> list[QuerySample]:
        """``query`` in templates: an instant query at the evaluation time."""
        rv = self.evaluator.instant(expr, at)
        if isinstance(rv, float):
            return [QuerySample({}, rv)]
        if not all(isinstance(s, InstantSample) for s in rv):
            raise TemplateError("query must return an instant vector or a scalar")
        return [QuerySample(dict(s.labels), s.value) for s in rv]

    def evaluate_group(self, group: RuleGroup, at: float) -> list[Transition]:
        """Evaluate every rule of ``group`` at ``at`` in order; record and return the state
        changes. Queries run at ``at`` minus the group's ``query_offset``."""
        changes: list[Transition] = []
        started = time.perf_counter()
        t = at - group.query_offset_s
        context = TemplateContext(
            self.external_labels,
            self.external_url,
            lambda expr: self.template_query(t, expr),
        )
        for rule in group.rules:
            key = (rule.file, rule.name, rule.line)
            try:
                if rule.kind == "record":
                    self._write_series(key, self._recorded(rule, group.limit, t), t)
                else:
                    hits = self.hits(rule, t)
                    changes.extend(self._alert_rule(rule, group.limit, hits, at, context))
                    self._write_series(key, self._alerts_series(rule), t)
            except Exception as exc:  # one broken rule must not stop the others
                self.metrics.failures.labels(group.name, rule.name).inc()
                self.last_errors[key] = str(exc)
                log.warning("rule %s (%s:%d) failed: %s", rule.name, rule.file, rule.line, exc)
                continue
            self.last_errors.pop(key, None)
        for change in changes:
            self._record(change, at)
        self.metrics.evaluations.labels(group.name).inc()
        self.metrics.duration.labels(group.name).observe(time.perf_counter() - started)
        self.metrics.last.labels(group.name).set(at)
        self._flush_events()
        return changes

    def _recorded(self, rule: Rule, limit: int, t: float) -> list[Sample]:
        """A recording rule's result as samples named ``rule.name`` with the rule's labels."""
        assert rule.expr is not None
        rv = self.evaluator.instant(rule.expr, t)
        results = [((), rv)] if isinstance(rv, float) else [(s.labels, s.value) for s in rv]
        if limit and len(results) > limit:
            raise RuleEvaluationError(f"exceeded limit {limit} with {len(results)} series")
        samples: list[Sample] = []
        seen: set[Labels] = set()
        for labels, value in results:
            merged = {k: v for k, v in labels if k != METRIC_NAME}
            merged.update(rule.labels)
            merged[METRIC_NAME] = rule.name
            final = labels_from(merged)
            if final in seen:
                raise RuleEvaluationError(
                    "vector contains metrics with the same labelset after applying rule labels"
                )
            seen.add(final)
            samples.append(Sample(final, t, value))
        return samples

    def _alert_rule(
        self, rule: Rule, limit: int, hits: list[Hit], at: float, context: TemplateContext
    ) -> list[Transition]:
        if limit and len({tuple(sorted(alert_labels(rule, h).items())) for h in hits}) > limit:
            changes = self.book.update(rule, [], at, context)  # Prometheus drops them all
            for change in changes:
                self._record(change, at)
            count = len(hits)
            raise RuleEvaluationError(f"exceeded limit of {limit} with {count} alerts")
        return self.book.update(rule, hits, at, context)

    def _alerts_series(self, rule: Rule) -> list[Sample]:
        """``ALERTS{alertname, alertstate, ...}`` = 1 for each pending or firing alert."""
        return [
            Sample(
                labels_from({**a.labels, METRIC_NAME: "ALERTS", "alertstate": a.state}), 0.0, 1.0
            )
            for a in self.book.rule_alerts(rule)
            if a.state in ("pending", "firing")
        ]

    def _write_series(self, key: tuple[str, str, int], samples: list[Sample], t: float) -> None:
        """Write ``samples`` at ``t``, and staleness markers for the rule's series that
        are gone since its last evaluation."""
        now = {s.labels for s in samples}
        gone = self._written.get(key, set()) - now
        if (samples or gone) and self._pass is not None:
            self._pass.forget(
                {dict(s.labels)[METRIC_NAME] for s in samples}
                | {dict(labels)[METRIC_NAME] for labels in gone}
            )
        if samples or gone:
            self.store.write(
                samples=[
                    *(Sample(s.labels, t, s.value) for s in samples),
                    *(Sample(labels, t, STALE_NAN) for labels in sorted(gone)),
                ]
            )
        self._written[key] = now

    @contextlib.contextmanager
    def _shared_pass(self, at: float) -> Iterator[None]:
        """Rules evaluated inside share their reads of the store (``alerting.shared_select``):
        one read per metric name and time range, however many rules select from it; with
        the sample cache, brought up to date for a pass at ``at``, from memory."""
        if not self.share_fetches or type(self._base_evaluator) is not Engine:
            yield
            return
        base = self._base_evaluator
        source: Store = base.store
        if self.cache is not None:
            self.cache.refresh(at)
            source = cast(Store, self.cache)  # read through select_columns()/latest_columns()
        self._pass = SharedSelects(source)
        self.evaluator = Engine(
            cast(Store, self._pass),  # the evaluator reads only select_columns()/latest_columns()
            lookback=base.lookback,
            max_samples=base.max_samples,
            timeout_s=base.timeout_s,
        )
        try:
            yield
        finally:
            self._pass = None
            self.evaluator = base

    def _record(self, change: Transition, at: float) -> None:
        alert = change.alert
        after = change.after or "inactive"
        before = change.before or "inactive"
        self.metrics.transitions.labels(alert.name, after).inc()
        log.info("alert %s %s -> %s %s", alert.name, before, after, dict(alert.labels))
        iso = dt.datetime.fromtimestamp(at, tz=dt.UTC).isoformat().replace("+00:00", "Z")
        doc: dict[str, Any] = {
            "@timestamp": iso,
            "event": {
                "dataset": "vigil.alert",
                "kind": "alert" if after == "firing" else "state",
                "action": f"alert-{after}",
                "severity_name": alert.severity,
            },
            "message": f"{alert.name} {after}: {alert.annotations.get('summary', '')}".strip(),
            "rule": {"name": alert.name},
            "labels": dict(alert.labels),
            "vigil": {
                "alert": {
                    "fingerprint": alert.fingerprint,
                    "state": after,
                    "previous_state": before,
                    "value": alert.value,
                    "annotations": dict(alert.annotations),
                    "expr": alert.expr,
                }
            },
        }
        eid = event_id("vigil.alert", f"{alert.fingerprint}/{after}/{at!r}")
        self._unwritten.append(Event(eid, at, "vigil.alert", doc))

    def _flush_events(self) -> None:
        if not self._unwritten:
            return
        try:
            self.store.write(events=self._unwritten)
        except Exception as exc:  # keep them for the next pass
            self.metrics.event_failures.inc()
            log.warning("writing %d vigil.alert events failed: %s", len(self._unwritten), exc)
            del self._unwritten[:-MAX_UNWRITTEN_EVENTS]
            return
        self._unwritten.clear()

    def notify(self) -> None:
        """Offer each receiver what it has not been told yet (never blocks); forget resolved
        alerts every receiver knows about."""
        self.outboxes.offer_pending()
        if self.manager is not None:
            self.manager.process(self.book.alerts(), self.clock())
        self.book.forget_delivered(self.outboxes.receivers)

    def run_once(self, at: float | None = None) -> list[Transition]:
        """Evaluate every group now, then make one delivery attempt per receiver in this
        thread; for ``--once`` and tests."""
        at = self.clock() if at is None else at
        with self._shared_pass(at):
            changes = [c for g in self.groups for c in self.evaluate_group(g, at)]
        self.outboxes.offer_pending()
        self.outboxes.deliver_now()
        if self.manager is not None:
            self.manager.process(self.book.alerts(), at)
            self.manager.deliver_now()
        self.book.forget_delivered(self.outboxes.receivers)
        self._update_gauges()
        return changes

    def _update_gauges(self) -> None:
        counts = {"pending": 0, "firing": 0, "resolved": 0}
        for alert in self.book.alerts():
            counts[alert.state] += 1
        for state, n in counts.items():
            self.metrics.alerts.labels(state).set(n)

    def reload_if_changed(self) -> bool:
        """Reload rule files when they changed; on errors keep the last good rules."""
        if self.source is None or not self.source.changed():
            return False
        try:
            groups = self.source.load()
        except (RuleError, OSError) as exc:  # OSError: a file or directory went away
            self.reload_error = str(exc)
            self.metrics.reload_failures.inc()
            self.metrics.reload_ok.set(0)
            log.error("rule reload refused, keeping the last good rules:\n%s", exc)
            return False
        self.set_groups(groups)
        self.reload_error = ""
        self.metrics.reload_ok.set(1)
        self.metrics.reload_at.set(self.clock())
        log.info("rules reloaded: %d groups", len(groups))
        return True

    def request_reload(self, timeout_s: float = RELOAD_TIMEOUT_S) -> str:
        """Read the rule, SLO and Alertmanager files again now (``POST /-/reload``); the
        evaluation loop does it, as Alertmanager's handler waits on its reload channel.
        Returns "" when all loaded, else why not (the last good files stay in use)."""
        done, errors = threading.Event(), list[str]()
        try:
            self._reload_requests.put_nowait((done, errors))
        except queue.Full:
            return f"{MAX_RELOAD_REQUESTS} reloads are waiting already; try again"
        if not done.wait(timeout_s):
            return f"the evaluation loop did not reload within {timeout_s:g}s; try again"
        return "\n".join(errors)

    def _reload(self, due: dict[str, float]) -> None:
        """Reload what changed, everything when asked to (``request_reload``); answer the
        requests with the errors."""
        asked: list[tuple[threading.Event, list[str]]] = []
        while True:
            try:
                asked.append(self._reload_requests.get_nowait())
            except queue.Empty:
                break
        if asked:
            if self.source is not None:
                self.source.mark_stale()
            if self.manager is not None:
                self.manager.mark_stale()
        errors: list[str] = []
        try:
            if self.reload_if_changed():
                due.clear()
            if asked and self.reload_error:
                errors.append(self.reload_error)
            if self.manager is not None and not self.manager.reload_if_changed() and asked:
                errors.extend(e for e in [self.manager.reload_error] if e)
        except Exception as exc:  # e.g. a rule directory that vanished: keep the last good rules
            self.metrics.reload_ok.set(0)
            log.exception("rule reload failed; keeping the last good rules")
            errors.append(str(exc))
        for done, out in asked:
            out.extend(errors)
            done.set()

    def run(self, stop: threading.Event, *, drain_timeout_s: float = 10.0) -> None:
        """Evaluate each group every ``interval_s`` until ``stop`` is set; the receivers'
        workers run meanwhile and get ``drain_timeout_s`` to finish an in-flight delivery."""
        self.outboxes.start()
        if self.manager is not None:
            self.manager.start()
        try:
            self._loop(stop)
        finally:
            self.outboxes.stop(drain_timeout_s)
            if self.manager is not None:
                self.manager.stop(drain_timeout_s)

    def _loop(self, stop: threading.Event) -> None:
        due: dict[str, float] = {}
        while not stop.is_set():
            now = self.clock()
            try:
                with self._shared_pass(now):
                    for group in self.groups:
                        if due.get(group.name, 0.0) <= now:
                            due[group.name] = now + group.interval_s
                            self.evaluate_group(group, now)
                self.notify()
                self._update_gauges()
            except Exception:  # e.g. alerts.db on a full disk: log, keep running
                log.exception("alert evaluation pass failed; retrying next pass")
            self._reload(due)
            next_due = min((due.get(g.name, now) for g in self.groups), default=now + 1.0)
            stop.wait(min(max(next_due - self.clock(), 0.05), 1.0))
