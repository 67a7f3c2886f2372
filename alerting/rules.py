"""Rule files: the Prometheus rule-file format, extended with event rules.

A file holds ``groups`` of recording and alerting rules, as Prometheus loads
them (``record``, ``alert``, ``for``, ``keep_firing_for``, group ``interval``,
``limit``, ``query_offset`` and ``labels``)::

    groups:
      - name: shop
        interval: 5s
        rules:
          - alert: ShopInstanceDown
            expr: up{job="shop"} == 0
            for: 30s
            labels: {severity: critical}
            annotations: {summary: "{{ $labels.instance }} is down"}
          - record: job:http_requests:rate5m
            expr: sum by (job) (rate(http_requests_total[5m]))
          - alert: BruteForceLogin
            event: {dataset: shop.auth, query: "event.outcome:failure",
                    group_by: source.ip, window: 5m, threshold: 10}

Loading reports every problem as an ``Issue`` with ``file:line`` (pySigma's
validator model); ``load_rules`` refuses files with errors, ``check_files``
lists them for ``vigil rules check``.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from alerting.templates import TemplateError, check_template
from siem import kql
from vigil import safeyaml
from vigil.errors import VigilError
from vigil.units import parse_duration

ExprCheck = Callable[[str], None]
"""Raises when a PromQL expression does not parse (``alerting.promql.Engine.check``)."""

_SURROGATE = re.compile("[\ud800-\udfff]")

GROUP_KEYS = ("name", "interval", "query_offset", "limit", "labels", "rules")
RULE_KEYS = (
    "alert",
    "record",
    "expr",
    "event",
    "for",
    "keep_firing_for",
    "labels",
    "annotations",
)
EVENT_KEYS = ("query", "dataset", "group_by", "window", "threshold")


class RuleError(VigilError):
    """Rule files with errors; ``issues`` lists each with its file and line."""

    def __init__(self, issues: Sequence[Issue]) -> None:
        self.issues = list(issues)
        super().__init__("\n".join(str(i) for i in self.issues))


@dataclass(frozen=True)
class Issue:
    """One problem found in a rule file."""

    severity: Literal["error", "warning"]
    file: str
    line: int
    message: str
    column: int | None = None

    def __str__(self) -> str:
        where = f"{self.line}:{self.column}" if self.column is not None else str(self.line)
        return f"{self.file}:{where}: {self.severity}: {self.message}"


@dataclass(frozen=True)
class EventCondition:
    """Count events matching ``query`` per ``group_by`` value over ``window``; fire above
    ``threshold``."""

    query: str
    group_by: str
    window: float
    threshold: float
    dataset: str | None = None

    @property
    def label(self) -> str:
        """The label carrying the group value: the field name with dots as underscores."""
        return re.sub(r"\W", "_", self.group_by)


@dataclass(frozen=True)
class Rule:
    """One rule: an alerting rule (a PromQL ``expr`` or an ``event`` condition) or, with
    ``kind="record"``, a recording rule storing ``expr``'s result as series ``name``.

    ``labels`` include the group's ``labels`` (the rule's own win)."""

    name: str
    expr: str | None = None
    event: EventCondition | None = None
    for_s: float = 0.0
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    file: str = "<memory>"
    line: int = 0
    kind: Literal["alert", "record"] = "alert"
    keep_firing_for_s: float = 0.0


@dataclass(frozen=True)
class RuleGroup:
    """Rules evaluated together, in order, every ``interval_s`` seconds.

    ``limit`` (0: none) is the most alerts or series one rule may produce in an
    evaluation; ``query_offset_s`` moves every query of the group back in time."""

    name: str
    interval_s: float
    rules: tuple[Rule, ...]
    file: str = "<memory>"
    line: int = 0
    limit: int = 0
    query_offset_s: float = 0.0


def _default_check(expr: str) -> None:
    from alerting.promql import Engine
    from siem.memory import MemoryStore

    Engine(MemoryStore()).check(expr)


class _FileParser:
    """Walks the composed YAML tree of one file, collecting issues with line numbers."""

    def __init__(self, file: str, default_interval: float, check_expr: ExprCheck) -> None:
        self.file = file
        self.default_interval = default_interval
        self.check_expr = check_expr
        self.issues: list[Issue] = []

    def error(self, node: yaml.Node | None, message: str) -> None:
        self.issues.append(Issue("error", self.file, _line(node), message))

    def warn(self, node: yaml.Node | None, message: str) -> None:
        self.issues.append(Issue("warning", self.file, _line(node), message))

    def mapping(
        self, node: yaml.Node, what: str, allowed: Sequence[str]
    ) -> dict[str, yaml.Node] | None:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping of keys")
            return None
        rv: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key not in allowed:
                self.error(key_node, f"{what}: unknown key {key!r}; allowed: {', '.join(allowed)}")
            elif key in rv:
                self.error(key_node, f"{what}: {key!r} given twice")
            else:
                rv[key] = value_node
        return rv

    def scalar(self, node: yaml.Node, what: str, kind: type = str) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            self.error(node, f"{what} must be a single value, not a list or mapping")
            return None
        try:
            value = safeyaml.construct(node, self.file)
        except safeyaml.YamlInputError as exc:
            self.error(node, f"{what}: {exc.reason}")
            return None
        if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if kind is str and isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        self.error(node, f"{what} must be {'a number' if kind is float else 'a string'}")
        return None

    def duration(self, node: yaml.Node, what: str) -> float | None:
        text = self.scalar(node, what)
        if text is None:
            return None
        try:
            return parse_duration(text)
        except ValueError as exc:
            self.error(node, f"{what}: {exc}")
            return None

    def string_map(self, node: yaml.Node, what: str, templated: bool) -> dict[str, str]:
        rv: dict[str, str] = {}
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return rv
        if not isinstance(node, yaml.MappingNode):
            self.error(node, f"{what} must be a mapping of names to strings")
            return rv
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if not valid_name(key):
                self.error(key_node, f"{what}: {key!r} is not a valid name (empty or not UTF-8)")
                continue
            if key == "__name__" and not what.endswith("annotations"):
                self.error(key_node, f"{what}: '__name__' cannot be set here")
                continue
            value = self.scalar(value_node, f"{what}.{key}")
            if value is None:
                continue
            if templated:
                try:
                    check_template(value)
                except TemplateError as exc:
                    self.error(value_node, f"{what}.{key}: {exc}")
                    continue
            rv[key] = value
        return rv

    def parse(self, root: yaml.Node | None) -> list[RuleGroup]:
        if root is None:
            self.error(None, "the file is empty; it needs 'groups:'")
            return []
        top = self.mapping(root, "rule file", ("groups",))
        if top is None:
            return []
        groups_node = top.get("groups")
        if not isinstance(groups_node, yaml.SequenceNode):
            self.error(groups_node or root, "'groups' must be a list of rule groups")
            return []
        groups: list[RuleGroup] = []
        seen: set[str] = set()
        for group_node in groups_node.value:
            group = self.group(group_node)
            if group is None:
                continue
            if group.name in seen:
                self.error(group_node, f"group {group.name!r} is defined twice in this file")
            seen.add(group.name)
            groups.append(group)
        return groups

    def group(self, node: yaml.Node) -> RuleGroup | None:
        keys = self.mapping(node, "group", GROUP_KEYS)
        if keys is None:
            return None
        name = self.scalar(keys["name"], "group name") if "name" in keys else None
        if "name" not in keys or name == "":
            self.error(node, "group: 'name' is required")
            name = None
        interval = self.default_interval
        if "interval" in keys:
            interval = self.duration(keys["interval"], "group interval") or interval
        offset = 0.0
        if "query_offset" in keys:
            offset = self.duration(keys["query_offset"], "group query_offset") or 0.0
        limit = 0
        if "limit" in keys:
            value = self.scalar(keys["limit"], "group limit", float)
            if value is not None and (value < 0 or value != int(value)):
                self.error(keys["limit"], "group limit must be a whole number of 0 or more")
            elif value is not None:
                limit = int(value)
        group_labels = (
            self.string_map(keys["labels"], "group labels", False) if "labels" in keys else {}
        )
        rules_node = keys.get("rules")
        if isinstance(rules_node, yaml.ScalarNode) and rules_node.tag.endswith(":null"):
            rules_node = yaml.SequenceNode("tag:yaml.org,2002:seq", [])  # "rules:" with nothing
        if not isinstance(rules_node, yaml.SequenceNode):
            self.error(rules_node or node, "group: 'rules' must be a list of rules")
            return None
        rules = [r for r in (self.rule(n, group_labels) for n in rules_node.value) if r is not None]
        self.duplicates(rules)
        if name is None:
            return None
        return RuleGroup(name, interval, tuple(rules), self.file, _line(node), limit, offset)

    def duplicates(self, rules: Sequence[Rule]) -> None:
        """Warn about rules of a group with the same name and labels, as promtool does."""
        seen: dict[tuple[str, str, tuple[tuple[str, str], ...]], Rule] = {}
        for rule in rules:
            key = (rule.kind, rule.name, tuple(sorted(rule.labels.items())))
            if key in seen:
                self.issues.append(
                    Issue(
                        "warning",
                        self.file,
                        rule.line,
                        f"duplicate rule: {rule.kind} {rule.name} with the same labels as "
                        f"line {seen[key].line}",
                    )
                )
            seen.setdefault(key, rule)

    def rule(self, node: yaml.Node, group_labels: Mapping[str, str]) -> Rule | None:
        keys = self.mapping(node, "rule", RULE_KEYS)
        if keys is None:
            return None
        if ("alert" in keys) == ("record" in keys):
            self.error(node, "rule: give exactly one of 'alert' (a name) or 'record' (a name)")
            return None
        kind: Literal["alert", "record"] = "alert" if "alert" in keys else "record"
        name = self.scalar(keys[kind], kind)
        if name is not None and not valid_name(name):
            self.error(keys[kind], f"{kind} name {name!r} must be non-empty UTF-8 text")
            name = None
        elif name is not None and kind == "record" and ("{" in name or "}" in name):
            self.error(
                keys[kind], f"braces in the recording rule name {name!r}; should it be in expr?"
            )
            name = None
        what = f"{kind} {name}"
        if kind == "record":
            for key in ("for", "keep_firing_for", "annotations", "event"):
                if key in keys:
                    self.error(keys[key], f"{what}: a recording rule has no '{key}'")
        expr: str | None = None
        event: EventCondition | None = None
        if kind == "record" and "expr" not in keys:
            self.error(node, f"{what}: 'expr' is required")
        elif kind == "alert" and ("expr" in keys) == ("event" in keys):
            self.error(node, f"{what}: give exactly one of 'expr' (PromQL) or 'event'")
        elif "expr" in keys:
            expr = self.expr(keys["expr"], what)
        else:
            event = self.event(keys["event"], what)
        for_s = self.duration(keys["for"], f"{what}: for") if "for" in keys else 0.0
        keep_s = (
            self.duration(keys["keep_firing_for"], f"{what}: keep_firing_for")
            if "keep_firing_for" in keys
            else 0.0
        )
        own = (
            self.string_map(keys["labels"], f"{what}: labels", kind == "alert")
            if "labels" in keys
            else {}
        )
        labels = {**group_labels, **own}
        annotations = (
            self.string_map(keys["annotations"], f"{what}: annotations", True)
            if "annotations" in keys and kind == "alert"
            else {}
        )
        if kind == "alert":
            self.advise(node, what, labels, annotations)
        if name is None or (expr is None and event is None) or for_s is None or keep_s is None:
            return None
        return Rule(
            name,
            expr,
            event,
            for_s,
            labels,
            annotations,
            self.file,
            _line(node),
            kind,
            keep_s,
        )

    def advise(
        self, node: yaml.Node, what: str, labels: Mapping[str, str], annotations: Mapping[str, str]
    ) -> None:
        if "severity" not in labels:
            self.warn(node, f"{what}: no 'severity' label; notifications show it as unknown")
        if "summary" not in annotations:
            self.warn(node, f"{what}: no 'summary' annotation; on-call sees only the name")
        if "runbook_url" not in annotations:
            self.warn(node, f"{what}: no 'runbook_url' annotation; link a runbook")

    def expr(self, node: yaml.Node, what: str) -> str | None:
        expr = self.scalar(node, f"{what}: expr")
        if expr is None:
            return None
        try:
            self.check_expr(expr)
        except Exception as exc:  # any parser failure is a rule problem, not a crash
            self.error(node, f"{what}: expr does not parse: {exc}")
            return None
        return expr

    def event(self, node: yaml.Node, what: str) -> EventCondition | None:
        keys = self.mapping(node, f"{what}: event", EVENT_KEYS)
        if keys is None:
            return None
        missing = [k for k in ("query", "group_by", "window", "threshold") if k not in keys]
        if missing:
            self.error(node, f"{what}: event needs {', '.join(missing)}")
            return None
        query = self.scalar(keys["query"], f"{what}: event.query")
        group_by = self.scalar(keys["group_by"], f"{what}: event.group_by")
        window = self.duration(keys["window"], f"{what}: event.window")
        threshold = self.scalar(keys["threshold"], f"{what}: event.threshold", float)
        dataset = (
            self.scalar(keys["dataset"], f"{what}: event.dataset") if "dataset" in keys else None
        )
        if query is not None:
            try:
                kql.parse(query)
            except VigilError as exc:
                self.error(keys["query"], f"{what}: event.query is not valid KQL: {exc}")
                return None
        if query is None or group_by is None or window is None or threshold is None:
            return None
        return EventCondition(query, group_by, window, threshold, dataset)


def valid_name(name: str) -> bool:
    """A metric, alert or label name as Prometheus 3 accepts it: any non-empty UTF-8."""
    return bool(name) and _SURROGATE.search(name) is None


def _line(node: yaml.Node | None) -> int:
    return node.start_mark.line + 1 if node is not None else 1


def parse_file(
    path: str | Path,
    *,
    default_interval: float = 5.0,
    check_expr: ExprCheck | None = None,
) -> tuple[list[RuleGroup], list[Issue]]:
    """The groups of one rule file and every issue found in it."""
    file = str(path)
    try:
        text = safeyaml.read_text(path)
    except safeyaml.YamlInputError as exc:
        return [], [Issue("error", file, exc.line or 1, exc.reason, exc.column)]
    return parse_text(text, file, default_interval=default_interval, check_expr=check_expr)


def parse_text(
    text: str,
    file: str,
    *,
    default_interval: float = 5.0,
    check_expr: ExprCheck | None = None,
) -> tuple[list[RuleGroup], list[Issue]]:
    """The groups of rule-file text (``file`` names it in issues) and every issue in it."""
    parser = _FileParser(file, default_interval, check_expr or _default_check)
    try:
        root = safeyaml.compose(text, file)
    except safeyaml.YamlInputError as exc:
        return [], [Issue("error", file, exc.line or 1, exc.reason, exc.column)]
    groups = parser.parse(root)
    return groups, parser.issues


def expand(patterns: Iterable[str], base_dir: str | Path | None = None) -> list[Path]:
    """Rule files matched by glob ``patterns`` (relative ones from ``base_dir``), sorted."""
    files: set[Path] = set()
    for pattern in patterns:
        full = (
            pattern
            if base_dir is None or Path(pattern).is_absolute()
            else str(Path(base_dir) / pattern)
        )
        files.update(Path(p) for p in glob.glob(full))
    return sorted(files)


def check_files(
    paths: Iterable[str | Path],
    *,
    default_interval: float = 5.0,
    check_expr: ExprCheck | None = None,
) -> list[Issue]:
    """Every issue in the given rule files, for ``vigil rules check``."""
    issues: list[Issue] = []
    for path in paths:
        issues.extend(parse_file(path, default_interval=default_interval, check_expr=check_expr)[1])
    return issues


def load_rules(
    paths: Iterable[str | Path],
    *,
    default_interval: float = 5.0,
    check_expr: ExprCheck | None = None,
) -> list[RuleGroup]:
    """All groups of the given files; raises ``RuleError`` listing every error (not warnings)."""
    groups: list[RuleGroup] = []
    errors: list[Issue] = []
    for path in paths:
        found, issues = parse_file(path, default_interval=default_interval, check_expr=check_expr)
        groups.extend(found)
        errors.extend(i for i in issues if i.severity == "error")
    if errors:
        raise RuleError(errors)
    return groups
