"""SLOs: ``config/slos.yaml`` → recording rules and multiwindow, multi-burn-rate alerts.

An SLO file declares service level objectives in the spirit of Sloth and Pyrra::

    slos:
      - name: checkout-availability
        description: Checkouts answered without a server error
        objective: 99.5                # percent of events that must be good
        window: 30d                    # compliance window (default 30d)
        labels: {team: shop}
        sli:                           # {{.window}} becomes 5m, 30m, 1h, ...
          error_query: sum(rate(http_requests_total{status=~"5.."}[{{.window}}]))
          total_query: sum(rate(http_requests_total[{{.window}}]))
        alerting:
          name: CheckoutAvailability     # alerts CheckoutAvailabilityFastBurn (page)
                                         # and CheckoutAvailabilitySlowBurn (ticket)
          annotations: {runbook_url: runbooks/slo-checkout-availability.md}
          page_alert: {labels: {severity: critical}}
          ticket_alert: {labels: {severity: warning}}

``generate`` turns each SLO into a standard Prometheus rule file (``vigil slo
generate``, ``promtool check rules`` accepts it): the error ratio recorded as
``slo:sli_error:ratio_rate<window>{slo="<name>"}`` for every window of the
Google SRE workbook's table (``BURN_RATES``), the ratio over the compliance
window as the average of the 5-minute ratio (Sloth's method: cheap, one
recorded series instead of the raw counters over 30 days), the objective and
the budget, and two alerts without ``for``, as in the workbook: ``page`` (14.4x
over 1h and 5m, or 6x over 6h and 30m) and ``ticket`` (3x over 1d and 2h, or 1x
over 3d and 6h). For a window other than 30 days the alert windows scale with
it, as Pyrra scales them.

``SloRuleSource`` makes ``vigil alert`` load the SLO files beside the rule files,
so shipping an SLO needs no generation step; errors are ``SloError`` (a
``RuleError``), so a bad edit keeps the last good rules as a bad rule file does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

import yaml

from alerting.engine import RuleSource
from alerting.rules import (
    ExprCheck,
    Issue,
    RuleError,
    RuleGroup,
    _default_check,
    _FileParser,
    _line,
    expand,
    load_rules,
    parse_text,
)
from vigil import safeyaml
from vigil.units import format_duration, parse_duration

SLO_KEYS = ("name", "description", "objective", "window", "labels", "sli", "alerting")
SLI_KEYS = ("error_query", "good_query", "total_query")
ALERTING_KEYS = ("name", "labels", "annotations", "page_alert", "ticket_alert")
ALERT_KEYS = ("disable", "labels", "annotations")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,99}", re.ASCII)
"""An SLO's name: a label value, a URL segment and part of group names."""
WINDOW_PLACEHOLDER = re.compile(r"\{\{\s*\.window\s*\}\}")
DEFAULT_WINDOW_S = 30 * 86400.0
MIN_WINDOW_S, MAX_WINDOW_S = 86400.0, 90 * 86400.0
LONG_GROUP_INTERVAL = "1m"
"""The group holding the 1d, 3d and compliance-window ratios: each reads days of
samples, and tickets need no seconds of precision."""
RESERVED_LABELS = ("slo", "slo_severity")

ERROR_RATIO = "slo:sli_error:ratio_rate"
"""Prefix of the recorded error ratios (Sloth's names): ``slo:sli_error:ratio_rate5m``."""
OBJECTIVE = "slo:objective:ratio"
ERROR_BUDGET = "slo:error_budget:ratio"
BUDGET_REMAINING = "slo:period_error_budget_remaining:ratio"


class SloError(RuleError):
    """SLO files with errors; ``issues`` lists each with its file and line."""


@dataclass(frozen=True)
class BurnRate:
    """One row of the workbook's table for a 30-day window: alert ``severity`` when the
    error ratio exceeds ``factor`` × the budget over both ``long_s`` and ``short_s``
    (``share`` of the budget is then spent in ``long_s``)."""

    severity: Literal["page", "ticket"]
    factor: float
    long_s: float
    short_s: float
    share: float


BURN_RATES = (
    BurnRate("page", 14.4, 3600.0, 300.0, 0.02),
    BurnRate("page", 6.0, 6 * 3600.0, 1800.0, 0.05),
    BurnRate("ticket", 3.0, 86400.0, 2 * 3600.0, 0.10),
    BurnRate("ticket", 1.0, 3 * 86400.0, 6 * 3600.0, 0.10),
)
"""The Google SRE workbook's multiwindow, multi-burn-rate alerts (chapter "Alerting on
SLOs", table 5-8), with Sloth's extra 3x/1d ticket row."""


@dataclass(frozen=True)
class AlertSpec:
    """The page or ticket alert of an SLO; ``disabled`` generates no rule."""

    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    disabled: bool = False


@dataclass(frozen=True)
class Slo:
    """One SLO. ``objective`` is a percentage; the SLI is ``error`` (or ``good``) over
    ``total`` events, PromQL with ``{{.window}}`` where the range goes."""

    name: str
    objective: Decimal
    total_query: str
    error_query: str | None = None
    good_query: str | None = None
    window_s: float = DEFAULT_WINDOW_S
    description: str = ""
    labels: Mapping[str, str] = field(default_factory=dict)
    alert_name: str = ""
    alert_labels: Mapping[str, str] = field(default_factory=dict)
    alert_annotations: Mapping[str, str] = field(default_factory=dict)
    page: AlertSpec = AlertSpec()
    ticket: AlertSpec = AlertSpec()
    file: str = "<memory>"
    line: int = 0

    @property
    def budget(self) -> Decimal:
        """The error budget as a ratio: 0.005 for 99.5%."""
        return (Decimal(100) - self.objective) / Decimal(100)

    @property
    def alert_names(self) -> dict[str, str]:
        """The page and the ticket alert's names: ``<alerting.name>FastBurn`` and
        ``...SlowBurn`` (distinct names: Vigil keeps an alert's state per rule name)."""
        return {"page": self.alert_name + "FastBurn", "ticket": self.alert_name + "SlowBurn"}

    @property
    def window(self) -> str:
        return format_duration(self.window_s)

    def burn_rates(self) -> list[tuple[BurnRate, str, str]]:
        """The workbook's rows scaled to this window: (row, long window, short window)."""
        scale = self.window_s / DEFAULT_WINDOW_S
        return [
            (
                row,
                format_duration(round(row.long_s * scale)),
                format_duration(round(row.short_s * scale)),
            )
            for row in BURN_RATES
        ]

    def windows(self) -> list[str]:
        """Every alert window, shortest first."""
        seen: dict[str, float] = {}
        scale = self.window_s / DEFAULT_WINDOW_S
        for row in BURN_RATES:
            for seconds in (row.long_s, row.short_s):
                seen[format_duration(round(seconds * scale))] = round(seconds * scale)
        return sorted(seen, key=seen.__getitem__)

    def error_ratio_expr(self, window: str) -> str:
        """The SLI's error ratio over ``window``; absent (not NaN) without traffic, so
        a quiet night does not turn the compliance-window average into NaN."""
        total = WINDOW_PLACEHOLDER.sub(window, self.total_query).strip()
        if self.error_query is not None:
            error = WINDOW_PLACEHOLDER.sub(window, self.error_query).strip()
            return f"({error})\n/\n({total} > 0)"
        good = WINDOW_PLACEHOLDER.sub(window, self.good_query or "").strip()
        return f"1 - (\n  ({good})\n  /\n  ({total} > 0)\n)"


# --- loading ---------------------------------------------------------------------------


class _SloParser(_FileParser):
    """Walks an SLO file's node tree; every problem becomes an ``Issue`` with its line."""

    def parse_slos(self, root: yaml.Node | None) -> list[Slo]:
        if root is None:
            self.error(None, "the file is empty; it needs 'slos:'")
            return []
        top = self.mapping(root, "SLO file", ("slos",))
        if top is None:
            return []
        node = top.get("slos")
        if not isinstance(node, yaml.SequenceNode):
            self.error(node or root, "'slos' must be a list of SLOs")
            return []
        rv: list[Slo] = []
        names: dict[str, int] = {}
        alerts: dict[str, int] = {}
        for item in node.value:
            slo = self.slo(item)
            if slo is None:
                continue
            if slo.name in names:
                self.error(item, f"slo {slo.name!r}: the name is used on line {names[slo.name]}")
                continue
            if slo.alert_name in alerts:
                self.error(
                    item,
                    f"slo {slo.name!r}: alerting.name {slo.alert_name!r} is used on line "
                    f"{alerts[slo.alert_name]}",
                )
                continue
            names[slo.name] = alerts[slo.alert_name] = slo.line
            rv.append(slo)
        return rv

    def slo(self, node: yaml.Node) -> Slo | None:
        keys = self.mapping(node, "slo", SLO_KEYS)
        if keys is None:
            return None
        errors = len(self.issues)
        name = self.scalar(keys["name"], "slo name") if "name" in keys else None
        if "name" not in keys:
            self.error(node, "slo: 'name' is required")
        elif name is not None and not NAME.fullmatch(name):
            self.error(
                keys["name"],
                f"slo name {name!r}: use letters, digits, '-' and '_' (at most 100, "
                "starting with a letter or digit)",
            )
        what = f"slo {name}"
        objective = self.objective(keys.get("objective"), node, what)
        window = DEFAULT_WINDOW_S
        if "window" in keys:
            window = self.duration(keys["window"], f"{what}: window") or window
            if not MIN_WINDOW_S <= window <= MAX_WINDOW_S:
                self.error(keys["window"], f"{what}: window must be between 1d and 90d")
        description = (
            self.scalar(keys["description"], f"{what}: description")
            if "description" in keys
            else ""
        )
        labels = self.labels(keys.get("labels"), f"{what}: labels", templated=False)
        sli = self.sli(keys.get("sli"), node, what)
        alerting = (
            self.mapping(keys["alerting"], f"{what}: alerting", ALERTING_KEYS)
            if "alerting" in keys
            else {}
        )
        alerting = alerting or {}
        alert_name = _camel(name or "slo")
        if "name" in alerting:
            alert_name = self.scalar(alerting["name"], f"{what}: alerting.name") or alert_name
        alert_labels = self.labels(
            alerting.get("labels"), f"{what}: alerting.labels", templated=True
        )
        annotations = (
            self.string_map(alerting["annotations"], f"{what}: alerting.annotations", True)
            if "annotations" in alerting
            else {}
        )
        page = self.alert(alerting.get("page_alert"), f"{what}: alerting.page_alert")
        ticket = self.alert(alerting.get("ticket_alert"), f"{what}: alerting.ticket_alert")
        if "runbook_url" not in annotations and not (
            "runbook_url" in page.annotations and "runbook_url" in ticket.annotations
        ):
            self.warn(node, f"{what}: no 'runbook_url' annotation in alerting; link a runbook")
        if len(self.issues) > errors and any(i.severity == "error" for i in self.issues[errors:]):
            return None
        assert name is not None and objective is not None and sli is not None
        slo = Slo(
            name=name,
            objective=objective,
            total_query=sli["total_query"],
            error_query=sli.get("error_query"),
            good_query=sli.get("good_query"),
            window_s=window,
            description=description or "",
            labels=labels,
            alert_name=alert_name,
            alert_labels=alert_labels,
            alert_annotations=annotations,
            page=page,
            ticket=ticket,
            file=self.file,
            line=_line(node),
        )
        try:  # each query parses; together they must too (a scalar cannot be compared)
            self.check_expr(slo.error_ratio_expr("5m"))
        except Exception as exc:  # any parser failure is the file's problem
            self.error(keys["sli"], f"{what}: the SLI's error ratio does not parse: {exc}")
            return None
        return slo

    def objective(self, node: yaml.Node | None, parent: yaml.Node, what: str) -> Decimal | None:
        if node is None:
            self.error(parent, f"{what}: 'objective' is required, a percentage such as 99.5")
            return None
        raw = self.scalar(node, f"{what}: objective", float)
        if raw is None:
            return None
        try:
            value = Decimal(str(node.value).strip())
        except InvalidOperation:
            value = Decimal(repr(raw))
        if not value.is_finite() or not Decimal(0) < value < Decimal(100):
            self.error(node, f"{what}: objective must be a percentage above 0 and below 100")
            return None
        return value

    def labels(self, node: yaml.Node | None, what: str, *, templated: bool) -> dict[str, str]:
        if node is None:
            return {}
        rv = self.string_map(node, what, templated)
        for key in RESERVED_LABELS:
            if key in rv:
                self.error(node, f"{what}: {key!r} is set by Vigil; use another label name")
        return rv

    def sli(self, node: yaml.Node | None, parent: yaml.Node, what: str) -> dict[str, str] | None:
        if node is None:
            self.error(
                parent, f"{what}: 'sli' is required (error_query or good_query, and total_query)"
            )
            return None
        keys = self.mapping(node, f"{what}: sli", SLI_KEYS)
        if keys is None:
            return None
        if "total_query" not in keys or ("error_query" in keys) == ("good_query" in keys):
            self.error(
                node, f"{what}: sli needs total_query and exactly one of error_query or good_query"
            )
            return None
        rv: dict[str, str] = {}
        for key, value_node in keys.items():
            query = self.scalar(value_node, f"{what}: sli.{key}")
            if query is None:
                continue
            if not WINDOW_PLACEHOLDER.search(query):
                self.error(
                    value_node,
                    f"{what}: sli.{key} has no {{{{.window}}}}; write the range as "
                    "[{{.window}}], e.g. rate(x_total[{{.window}}])",
                )
                continue
            try:
                self.check_expr(WINDOW_PLACEHOLDER.sub("5m", query))
            except Exception as exc:  # any parser failure is the file's problem
                self.error(value_node, f"{what}: sli.{key} does not parse: {exc}")
                continue
            rv[key] = query
        return rv if len(rv) == len(keys) else None

    def alert(self, node: yaml.Node | None, what: str) -> AlertSpec:
        if node is None:
            return AlertSpec()
        keys = self.mapping(node, what, ALERT_KEYS)
        if keys is None:
            return AlertSpec()
        disabled = False
        if "disable" in keys:
            value = self.scalar(keys["disable"], f"{what}.disable", bool)
            disabled = bool(value)
        labels = self.labels(keys.get("labels"), f"{what}.labels", templated=True)
        annotations = (
            self.string_map(keys["annotations"], f"{what}.annotations", True)
            if "annotations" in keys
            else {}
        )
        return AlertSpec(labels, annotations, disabled)

    def scalar(self, node: yaml.Node, what: str, kind: type = str) -> Any:
        if kind is not bool:
            return super().scalar(node, what, kind)
        if isinstance(node, yaml.ScalarNode):
            try:
                value = safeyaml.construct(node, self.file)
            except safeyaml.YamlInputError as exc:
                self.error(node, f"{what}: {exc.reason}")
                return None
            if isinstance(value, bool):
                return value
        self.error(node, f"{what} must be true or false")
        return None


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[-_]+", name) if part)


def parse_slo_file(
    path: str | Path, *, check_expr: ExprCheck | None = None
) -> tuple[list[Slo], list[Issue]]:
    """The SLOs of one file and every issue found in it (``file:line`` each)."""
    file = str(path)
    parser = _SloParser(file, 5.0, check_expr or _default_check)
    try:
        root = safeyaml.compose(safeyaml.read_text(path), file)
    except safeyaml.YamlInputError as exc:
        return [], [Issue("error", file, exc.line or 1, exc.reason, exc.column)]
    return parser.parse_slos(root), parser.issues


def check_slo_files(paths: Iterable[str | Path]) -> tuple[list[Slo], list[Issue]]:
    """Every SLO and every issue of the files; names must be unique across them."""
    slos: list[Slo] = []
    issues: list[Issue] = []
    seen: dict[str, Slo] = {}
    for path in paths:
        found, file_issues = parse_slo_file(path)
        issues.extend(file_issues)
        for slo in found:
            if slo.name in seen:
                first = seen[slo.name]
                issues.append(
                    Issue(
                        "error",
                        slo.file,
                        slo.line,
                        f"slo {slo.name!r} is also defined at {first.file}:{first.line}",
                    )
                )
                continue
            seen[slo.name] = slo
            slos.append(slo)
    return slos, issues


def load_slos(paths: Iterable[str | Path]) -> list[Slo]:
    """All SLOs of the files; raises ``SloError`` listing every error (not warnings)."""
    slos, issues = check_slo_files(paths)
    errors = [i for i in issues if i.severity == "error"]
    if errors:
        raise SloError(errors)
    return slos


# --- generation ------------------------------------------------------------------------


def _number(value: Decimal | float) -> str:
    text = format(Decimal(str(value)).normalize(), "f")
    return text


def _selector(name: str, slo: Slo) -> str:
    return f'{name}{{slo="{slo.name}"}}'


def _condition(slo: Slo, rows: Sequence[tuple[BurnRate, str, str]]) -> str:
    budget = _number(slo.budget)
    parts = []
    for row, long_w, short_w in rows:
        threshold = f"({_number(row.factor)} * {budget})"
        parts.append(
            "(\n"
            f"  {_selector(ERROR_RATIO + long_w, slo)} > {threshold}\n"
            "  and\n"
            f"  {_selector(ERROR_RATIO + short_w, slo)} > {threshold}\n"
            ")"
        )
    return "\nor\n".join(parts)


def _default_annotations(
    slo: Slo, severity: str, rows: Sequence[tuple[BurnRate, str, str]]
) -> dict[str, str]:
    how = ", or ".join(
        f"{_number(r.factor)}x the budget over {lw} and {sw} ({_number(r.share * 100)}% of "
        f"the budget in {lw})"
        for r, lw, sw in rows
    )
    urgency = "fast" if severity == "page" else "steadily"
    return {
        "summary": f"SLO {slo.name}: the error budget burns {urgency}",
        "dashboard": f"slos/{slo.name}",
        "description": (
            f"{slo.description or slo.name}: objective {_number(slo.objective)}% over "
            f"{slo.window}, an error budget of {_number(slo.budget * 100)}%. The error ratio "
            f"is above {how}."
        ),
    }


def _alert_rule(slo: Slo, severity: Literal["page", "ticket"], spec: AlertSpec) -> dict[str, Any]:
    rows = [r for r in slo.burn_rates() if r[0].severity == severity]
    labels = {
        "severity": "critical" if severity == "page" else "warning",
        **slo.labels,
        **slo.alert_labels,
        **spec.labels,
        "slo": slo.name,
        "slo_severity": severity,
    }
    annotations = {
        **_default_annotations(slo, severity, rows),
        **slo.alert_annotations,
        **spec.annotations,
    }
    return {
        "alert": slo.alert_names[severity],
        "expr": _condition(slo, rows),
        "labels": labels,
        "annotations": annotations,
    }


def _ratio_rule(slo: Slo, window: str) -> dict[str, Any]:
    return {
        "record": ERROR_RATIO + window,
        "expr": slo.error_ratio_expr(window),
        "labels": {**slo.labels, "slo": slo.name},
    }


def generate(slos: Sequence[Slo]) -> dict[str, Any]:
    """The Prometheus rule file (as data) for ``slos``: two groups per SLO, ``slo-<name>``
    (the short windows and the page alert, at the global interval) and
    ``slo-<name>-long`` (1d, 3d, the compliance window, the objective and the ticket
    alert, every minute)."""
    groups: list[dict[str, Any]] = []
    for slo in slos:
        labels = {**slo.labels, "slo": slo.name}
        windows = slo.windows()
        day = 86400 * slo.window_s / DEFAULT_WINDOW_S  # 1d, scaled with the window
        short_ws = [w for w in windows if parse_duration(w) < day]
        long_ws = [w for w in windows if w not in short_ws]

        short_rules = [_ratio_rule(slo, w) for w in short_ws]
        if not slo.page.disabled:
            short_rules.append(_alert_rule(slo, "page", slo.page))
        period = {
            "record": ERROR_RATIO + slo.window,
            "expr": f"avg_over_time({_selector(ERROR_RATIO + windows[0], slo)}[{slo.window}])",
            "labels": dict(labels),
        }
        long_rules = [_ratio_rule(slo, w) for w in long_ws]
        long_rules += [
            period,
            {
                "record": OBJECTIVE,
                "expr": f"vector({_number(slo.objective / 100)})",
                "labels": dict(labels),
            },
            {
                "record": ERROR_BUDGET,
                "expr": f"vector({_number(slo.budget)})",
                "labels": dict(labels),
            },
            {
                "record": BUDGET_REMAINING,
                "expr": f"1 - {_selector(ERROR_RATIO + slo.window, slo)} / {_number(slo.budget)}",
                "labels": dict(labels),
            },
        ]
        if not slo.ticket.disabled:
            long_rules.append(_alert_rule(slo, "ticket", slo.ticket))
        groups.append({"name": f"slo-{slo.name}", "rules": short_rules})
        groups.append(
            {"name": f"slo-{slo.name}-long", "interval": LONG_GROUP_INTERVAL, "rules": long_rules}
        )
    return {"groups": groups}


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def to_yaml(slos: Sequence[Slo], source: str = "") -> str:
    """The generated rule file as YAML text, with a header naming its source."""
    header = (
        f"# Generated by `vigil slo generate {source}`; edit the SLO file, not this one.\n"
        "# Recording rules and multiwindow, multi-burn-rate alerts (Google SRE workbook).\n"
    )
    body = yaml.dump(
        generate(slos), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=10_000
    )
    return header + body


def rule_groups(
    slos: Sequence[Slo], file: str, *, default_interval: float = 5.0
) -> list[RuleGroup]:
    """The generated rules as ``RuleGroup``s, parsed by the rule-file parser itself."""
    groups, issues = parse_text(
        to_yaml(slos), f"{file} (generated)", default_interval=default_interval
    )
    errors = [i for i in issues if i.severity == "error"]
    if errors:  # the SLO loader checked every query; this would be a bug in generate()
        raise SloError(errors)
    return groups


class SloRuleSource(RuleSource):
    """Rule files plus SLO files (their generated rules), reloaded when any file changes."""

    def __init__(
        self, patterns: Sequence[str], slo_patterns: Sequence[str], *, default_interval: float = 5.0
    ) -> None:
        super().__init__(patterns, default_interval=default_interval)
        self.slo_patterns = list(slo_patterns)

    def _current(self) -> tuple[tuple[str, float], ...]:
        rv = list(super()._current())
        for path in expand(self.slo_patterns):
            try:
                rv.append(("slo:" + str(path), path.stat().st_mtime))
            except OSError:
                continue
        return tuple(rv)

    def load(self) -> list[RuleGroup]:
        signature = self._current()
        self._signature = signature
        rule_files = [Path(p) for p, _ in signature if not p.startswith("slo:")]
        slo_files = [Path(p.removeprefix("slo:")) for p, _ in signature if p.startswith("slo:")]
        groups = load_rules(rule_files, default_interval=self.default_interval)
        slos = load_slos(slo_files)
        for path in slo_files:
            mine = [s for s in slos if s.file == str(path)]
            groups += rule_groups(mine, str(path), default_interval=self.default_interval)
        return groups
