"""Compare a run with the last passing run of the same profile, route by route.

A change is a *regression* when the 95th percentile rose by more than 20 % or
the error ratio by more than one percentage point, on a route with at least 50
requests in both runs (the p95 of a handful of requests is one request's
latency: noise, not a finding). The comparison is informational (the gates
decide the exit code). Example::

    comparison = compare_runs(baseline.result, result)
    print(comparison_table(comparison, baseline.path.name))
    [r.describe() for r in comparison.regressions]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from loadtests.results import RouteStats, RunResult, format_table

# p95 now > p95 then × (1 + this) is a regression.
P95_REGRESSION_RATIO = 0.20
# error ratio now − error ratio then > this (one percentage point) is a regression.
ERROR_REGRESSION_POINTS = 0.01
# Fewer requests than this in either run: the route's figures are shown, not judged.
MIN_REQUESTS = 50
# Float noise allowance, so exactly 20 % or exactly 1 pp is not "more than".
_EPSILON = 1e-9

ALL_ROUTES = "all routes"


@dataclass(frozen=True)
class Regression:
    """One figure of one route that got worse beyond its threshold."""

    route: str
    metric: str  # "p95_ms" or "error_ratio"
    then: float
    now: float

    def describe(self) -> str:
        if self.metric == "p95_ms":
            change = (self.now - self.then) / self.then
            return f"{self.route}: p95 {self.then:.0f} → {self.now:.0f} ms ({change:+.1%})"
        points = (self.now - self.then) * 100
        return f"{self.route}: error ratio {self.then:.1%} → {self.now:.1%} ({points:+.1f} pp)"

    def to_json(self) -> dict[str, Any]:
        return {"route": self.route, "metric": self.metric, "then": self.then, "now": self.now}


@dataclass(frozen=True)
class RouteChange:
    """A route's figures in the baseline (``then``) and in this run (``now``).

    Either side is None when the route did not appear in that run.
    """

    label: str
    then: RouteStats | None
    now: RouteStats | None

    @property
    def p95_change(self) -> float | None:
        """Relative change of p95 (0.25 is +25 %); None when there is nothing to compare."""
        if self.then is None or self.now is None or self.then.p95_ms <= 0:
            return None
        return (self.now.p95_ms - self.then.p95_ms) / self.then.p95_ms

    @property
    def judged(self) -> bool:
        """Both runs made enough requests of this route to compare its figures."""
        return (
            self.then is not None
            and self.now is not None
            and min(self.then.requests, self.now.requests) >= MIN_REQUESTS
        )

    @property
    def regressions(self) -> tuple[Regression, ...]:
        if self.then is None or self.now is None or not self.judged:
            return ()
        found = []
        change = self.p95_change
        if change is not None and change > P95_REGRESSION_RATIO + _EPSILON:
            found.append(Regression(self.label, "p95_ms", self.then.p95_ms, self.now.p95_ms))
        then_err, now_err = self.then.error_ratio, self.now.error_ratio
        if now_err - then_err > ERROR_REGRESSION_POINTS + _EPSILON:
            found.append(Regression(self.label, "error_ratio", then_err, now_err))
        return tuple(found)


@dataclass(frozen=True)
class Comparison:
    """This run against its baseline: one row per route, then ``all routes``."""

    baseline: RunResult
    current: RunResult
    rows: tuple[RouteChange, ...]

    @property
    def regressions(self) -> tuple[Regression, ...]:
        return tuple(r for row in self.rows for r in row.regressions)


def _label(route: RouteStats) -> str:
    return f"{route.method} {route.name}".strip()


def compare_runs(baseline: RunResult, current: RunResult) -> Comparison:
    """Route by route: this run's routes in order, then routes only the baseline had."""
    then_by_label = {_label(r): r for r in baseline.routes}
    now_labels = {_label(r) for r in current.routes}
    rows = [RouteChange(_label(r), then_by_label.get(_label(r)), r) for r in current.routes]
    rows += [
        RouteChange(label, route, None)
        for label, route in then_by_label.items()
        if label not in now_labels
    ]
    rows.append(RouteChange(ALL_ROUTES, baseline.total, current.total))
    return Comparison(baseline, current, tuple(rows))


def _pair(then: str | None, now: str | None) -> str:
    return f"{then if then is not None else '-'} → {now if now is not None else '-'}"


def _row(change: RouteChange) -> list[str]:
    then, now = change.then, change.now
    delta = change.p95_change
    if then is None:
        flag = "new route"
    elif now is None:
        flag = "not requested now"
    elif not change.judged:
        flag = f"< {MIN_REQUESTS} requests, not judged"
    else:
        metrics = [{"p95_ms": "p95", "error_ratio": "errors"}[r.metric] for r in change.regressions]
        flag = f"REGRESSED ({', '.join(metrics)})" if metrics else ""
    return [
        change.label,
        _pair(
            f"{then.p95_ms:.0f}" if then is not None else None,
            f"{now.p95_ms:.0f}" if now is not None else None,
        ),
        f"{delta:+.1%}" if delta is not None else "n/a",
        _pair(
            f"{then.error_ratio:.1%}" if then is not None else None,
            f"{now.error_ratio:.1%}" if now is not None else None,
        ),
        _pair(
            f"{then.rps:.1f}" if then is not None else None,
            f"{now.rps:.1f}" if now is not None else None,
        ),
        flag,
    ]


def _ratio(value: float | None) -> str:
    return f"{value:.3f}" if value is not None else "n/a"


def comparison_table(comparison: Comparison, baseline_name: str) -> str:
    """The comparison as text: a heading naming the baseline, the table, checkouts, verdict."""
    then, now = comparison.baseline, comparison.current
    lines = [
        f"compared with the last passing run of {now.profile}: {baseline_name} "
        f"(release {then.release or 'unknown'}, {then.duration_s:.0f} s, "
        f"up to {then.peak_users} users); then → now"
    ]
    if then.peak_users != now.peak_users:
        lines.append(
            f"note: that run had up to {then.peak_users} users, this one {now.peak_users}; "
            "the figures are not like for like"
        )
    header = ("route", "p95 ms", "change", "error ratio", "req/s", "")
    lines.append(format_table(header, [_row(row) for row in comparison.rows], left=(0, 5)))
    then_ratio, now_ratio = then.checkout_success_ratio, now.checkout_success_ratio
    checkout = f"checkout success ratio: {_ratio(then_ratio)} → {_ratio(now_ratio)}"
    if then_ratio is not None and now_ratio is not None:
        checkout += f" ({(now_ratio - then_ratio) * 100:+.1f} pp)"
    lines.append(checkout)
    regressions = comparison.regressions
    if regressions:
        count = f"{len(regressions)} figure{'s' if len(regressions) > 1 else ''}"
        lines.append(
            f"REGRESSED: {count} (p95 up > {P95_REGRESSION_RATIO:.0%}, error ratio up > "
            f"{ERROR_REGRESSION_POINTS * 100:.0f} pp); informational, the gates decide:"
        )
        lines += [f"  {r.describe()}" for r in regressions]
    else:
        lines.append(f"no regressions against {baseline_name}")
    return "\n".join(lines)
