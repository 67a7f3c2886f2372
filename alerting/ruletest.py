"""``vigil rules test FILE...``: Prometheus' rule unit tests, run by Vigil's rule engine.

The test files are promtool's, unchanged::

    rule_files: [alerts.yaml]
    evaluation_interval: 1m
    tests:
      - interval: 1m
        input_series:
          - series: 'up{job="shop", instance="a:1"}'
            values: '1 1 0x10'          # 1 1 0 0 0 ... (0 eleven times)
        alert_rule_test:
          - eval_time: 5m
            alertname: ShopInstanceDown
            exp_alerts:
              - exp_labels: {severity: critical, job: shop, instance: a:1}
                exp_annotations: {summary: "a:1 is down"}
        promql_expr_test:
          - expr: up == 0
            eval_time: 3m
            exp_samples:
              - labels: 'up{job="shop", instance="a:1"}'
                value: 0

Each test group loads its ``input_series`` (the expanding notation ``a+bxN``,
``a-bxN``, ``axN``, ``_``, ``_xN``, ``stale``) one sample per ``interval`` into
an in-memory store, then, as promtool does, evaluates every rule group in
``group_eval_order`` at each ``evaluation_interval`` step from 0 to the latest
``eval_time`` through ``AlertEngine`` (so recording rules, ``for``,
``keep_firing_for``, ``limit``, ``query_offset`` and templates behave as in
production), compares the firing alerts and the PromQL results, and prints
promtool's report (``Unit Testing:  FILE`` / ``  SUCCESS`` / ``  FAILED:``).
A rule that fails to evaluate fails the test, as in promtool.

Vigil's extension for event rules (files promtool cannot load): a test group
may list ``input_events``, each ``{dataset, time, count, fields}``: ``count``
events (default 1) of ``dataset`` at ``time`` with the dotted ``fields``::

    input_events:
      - {dataset: shop.auth, time: 1m, count: 11,
         fields: {event.outcome: failure, source.ip: 10.0.0.9}}
"""

from __future__ import annotations

import datetime as dt
import math
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import promql_parser as pp
import yaml
from prometheus_client import CollectorRegistry

from alerting.engine import AlertEngine
from alerting.promql import Engine, InstantSample
from alerting.rules import RuleError, RuleGroup, expand, load_rules, parse_duration
from alerting.state import AlertBook, AlertDB
from alerting.templates import shortest_digits
from siem.memory import MemoryStore
from siem.model import METRIC_NAME, STALE_NAN, Event, Labels, Sample, event_id, labels_from
from vigil import safeyaml
from vigil.errors import VigilError

MAX_STEPS = 100_000
"""Most evaluation steps (latest ``eval_time`` / ``evaluation_interval``) one test group
may take."""
MAX_SAMPLES = 5_000_000
"""Most input samples one test group may expand to."""

FILE_KEYS = ("rule_files", "evaluation_interval", "group_eval_order", "tests", "fuzzy_compare")
GROUP_KEYS = (
    "interval",
    "input_series",
    "alert_rule_test",
    "promql_expr_test",
    "external_labels",
    "external_url",
    "name",
    "start_timestamp",
    "input_events",
)
EVENT_KEYS = ("dataset", "time", "count", "fields")
MAX_EVENTS = 100_000
"""Most ``input_events`` one test group may create."""


class RuleTestError(VigilError):
    """A rule test file that cannot be run; names the file, line and reason."""


# --- reading the test file ---------------------------------------------------------------


@dataclass(frozen=True)
class _Series:
    labels: Labels
    values: tuple[float | None, ...]  # None: no sample at that step


@dataclass(frozen=True)
class _AlertCase:
    eval_time: float
    alertname: str
    expected: tuple[tuple[Labels, Labels], ...]


@dataclass(frozen=True)
class _ExprCase:
    expr: str
    eval_time: float
    expected: tuple[tuple[Labels, float], ...]


@dataclass
class _Group:
    interval: float
    series: list[_Series] = field(default_factory=list)
    alerts: list[_AlertCase] = field(default_factory=list)
    exprs: list[_ExprCase] = field(default_factory=list)
    external_labels: dict[str, str] = field(default_factory=dict)
    external_url: str = ""
    name: str = ""
    start: float = 0.0
    events: list[Event] = field(default_factory=list)


@dataclass
class _TestFile:
    rule_files: list[Path]
    evaluation_interval: float
    group_eval_order: list[str]
    groups: list[_Group]
    fuzzy: bool = False


class _Reader:
    """Turns the composed YAML into test definitions; every error is located."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, node: yaml.Node | None, message: str) -> RuleTestError:
        line = node.start_mark.line + 1 if node is not None else 1
        return RuleTestError(f"{self.file}:{line}: {message}")

    def mapping(self, node: yaml.Node, what: str, keys: Sequence[str]) -> dict[str, yaml.Node]:
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return {}
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        rv: dict[str, yaml.Node] = {}
        for key_node, value in node.value:
            key = str(key_node.value)
            if key not in keys:
                raise self.fail(
                    key_node, f"{what}: field {key} not found; known: {', '.join(keys)}"
                )
            if key in rv:
                raise self.fail(key_node, f"{what}: {key!r} given twice")
            rv[key] = value
        return rv

    def sequence(self, node: yaml.Node | None, what: str) -> list[yaml.Node]:
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list")
        return list(node.value)

    def scalar(self, node: yaml.Node | None, what: str, default: Any = "") -> Any:
        if node is None:
            return default
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{what} must be a single value")
        if node.tag.endswith(":null"):
            return default
        try:
            return safeyaml.construct(node, self.file)
        except safeyaml.YamlInputError as exc:
            raise self.fail(node, f"{what}: {exc.reason}") from None

    def text(self, node: yaml.Node | None, what: str) -> str:
        """A scalar's text as written (``0x10`` stays ``0x10``, as Go reads it into a string)."""
        if node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null")):
            return ""
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{what} must be text, not a list or mapping")
        return str(node.value)

    def duration(self, node: yaml.Node | None, what: str) -> float:
        text = self.text(node, what).strip()
        if not text:
            return 0.0
        try:
            return parse_duration(text)
        except ValueError as exc:
            raise self.fail(node, f"{what}: {exc}") from None

    def string_map(self, node: yaml.Node | None, what: str) -> dict[str, str]:
        if node is None:
            return {}
        if isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"):
            return {}
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping of names to strings")
        return {
            str(k.value): self.text(v, f"{what}.{k.value}") for k, v in node.value if k is not None
        }

    def read(self, path: Path) -> _TestFile:
        try:
            root = safeyaml.compose(safeyaml.read_text(path), self.file)
        except safeyaml.YamlInputError as exc:
            raise RuleTestError(str(exc)) from None
        if root is None:
            raise self.fail(None, "the file is empty")
        keys = self.mapping(root, "test file", FILE_KEYS)
        patterns = [
            self.text(n, "rule_files") for n in self.sequence(keys.get("rule_files"), "rule_files")
        ]
        rule_files: list[Path] = []
        for pattern in patterns:
            found = expand([pattern], base_dir=path.parent) if pattern else []
            if not found:
                print(f"  WARNING: no file match pattern {pattern}", file=sys.stderr)
            rule_files.extend(found)
        interval = self.duration(keys.get("evaluation_interval"), "evaluation_interval") or 60.0
        order = [
            self.text(n, "group_eval_order")
            for n in self.sequence(keys.get("group_eval_order"), "group_eval_order")
        ]
        if len(set(order)) != len(order):
            repeated = next(n for n in order if order.count(n) > 1)
            raise self.fail(
                keys["group_eval_order"], f"group name repeated in evaluation order: {repeated}"
            )
        fuzzy = bool(self.scalar(keys.get("fuzzy_compare"), "fuzzy_compare", False))
        groups = [self.group(n, interval) for n in self.sequence(keys.get("tests"), "tests")]
        return _TestFile(rule_files, interval, order, groups, fuzzy)

    def group(self, node: yaml.Node, evaluation_interval: float) -> _Group:
        keys = self.mapping(node, "test", GROUP_KEYS)
        group = _Group(self.duration(keys.get("interval"), "interval") or evaluation_interval)
        group.name = self.text(keys.get("name"), "name")
        group.external_labels = self.string_map(keys.get("external_labels"), "external_labels")
        group.external_url = self.text(keys.get("external_url"), "external_url")
        if "start_timestamp" in keys:
            group.start = self.timestamp(keys["start_timestamp"])
        for item in self.sequence(keys.get("input_series"), "input_series"):
            fields = self.mapping(item, "input_series", ("series", "values"))
            labels = self.metric(fields.get("series"), "series")
            values = self.values(fields.get("values"), "values")
            group.series.append(_Series(labels, values))
        for item in self.sequence(keys.get("input_events"), "input_events"):
            group.events.extend(self.events(item, group.start, len(group.events)))
            if len(group.events) > MAX_EVENTS:
                raise self.fail(item, f"input_events make more than {MAX_EVENTS:,} events")
        if sum(len(s.values) for s in group.series) > MAX_SAMPLES:
            raise self.fail(node, f"input_series expand to more than {MAX_SAMPLES:,} samples")
        for item in self.sequence(keys.get("alert_rule_test"), "alert_rule_test"):
            fields = self.mapping(item, "alert_rule_test", ("eval_time", "alertname", "exp_alerts"))
            name = self.text(fields.get("alertname"), "alertname")
            if not name:
                where = f" (in TestGroup {group.name})" if group.name else ""
                raise self.fail(
                    item,
                    f"an item under alert_rule_test misses required attribute alertname{where}",
                )
            expected = []
            for alert in self.sequence(fields.get("exp_alerts"), "exp_alerts"):
                parts = self.mapping(alert, "exp_alerts", ("exp_labels", "exp_annotations"))
                exp_labels = self.string_map(parts.get("exp_labels"), "exp_labels")
                exp_labels["alertname"] = name
                notes = self.string_map(parts.get("exp_annotations"), "exp_annotations")
                expected.append((labels_from(exp_labels), labels_from(notes)))
            time = self.duration(fields.get("eval_time"), "eval_time")
            group.alerts.append(_AlertCase(time, name, tuple(expected)))
        for item in self.sequence(keys.get("promql_expr_test"), "promql_expr_test"):
            fields = self.mapping(item, "promql_expr_test", ("expr", "eval_time", "exp_samples"))
            samples = []
            for sample in self.sequence(fields.get("exp_samples"), "exp_samples"):
                parts = self.mapping(sample, "exp_samples", ("labels", "value", "histogram"))
                if self.text(parts.get("histogram"), "histogram"):
                    raise self.fail(parts["histogram"], "native histograms are not supported")
                value = self.scalar(parts.get("value"), "value", 0.0)
                if isinstance(value, bool) or not isinstance(value, (int, float, str)):
                    raise self.fail(parts.get("value"), "value must be a number")
                try:
                    number = float(value)
                except ValueError:
                    raise self.fail(parts.get("value"), "value must be a number") from None
                samples.append((self.metric(parts.get("labels"), "labels", empty_ok=True), number))
            expr = self.text(fields.get("expr"), "expr")
            time = self.duration(fields.get("eval_time"), "eval_time")
            group.exprs.append(_ExprCase(expr, time, tuple(samples)))
        return group

    def events(self, node: yaml.Node, start: float, first: int) -> list[Event]:
        fields = self.mapping(node, "input_events", EVENT_KEYS)
        dataset = self.text(fields.get("dataset"), "dataset")
        if not dataset:
            raise self.fail(node, "input_events: 'dataset' is required")
        at = start + self.duration(fields.get("time"), "time")
        count_text = self.text(fields.get("count"), "count") or "1"
        if not count_text.isdigit() or not 0 < int(count_text) <= MAX_EVENTS:
            raise self.fail(fields.get("count"), f"count must be 1 to {MAX_EVENTS:,}")
        doc: dict[str, Any] = {"event": {"dataset": dataset}}
        node_fields = fields.get("fields")
        if node_fields is not None and not isinstance(node_fields, yaml.MappingNode):
            raise self.fail(node_fields, "fields must be a mapping of dotted names to values")
        for key_node, value_node in node_fields.value if node_fields is not None else []:
            *parents, leaf = str(key_node.value).split(".")
            target = doc
            for part in parents:
                child = target.setdefault(part, {})
                if not isinstance(child, dict):
                    raise self.fail(key_node, f"field {key_node.value} is inside a value")
                target = child
            target[leaf] = self.scalar(value_node, f"fields.{key_node.value}")
        return [
            Event(event_id("rules-test", first + i), at, dataset, doc)
            for i in range(int(count_text))
        ]

    def timestamp(self, node: yaml.Node) -> float:
        value = self.scalar(node, "start_timestamp")
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, dt.datetime):
            moment = value if value.tzinfo else value.replace(tzinfo=dt.UTC)
            return moment.timestamp()
        try:
            return float(str(value))
        except ValueError:
            pass
        try:
            return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
        except ValueError:
            raise self.fail(node, "start_timestamp must be a Unix time or RFC 3339") from None

    def metric(self, node: yaml.Node | None, what: str, *, empty_ok: bool = False) -> Labels:
        text = self.text(node, what).strip()
        if empty_ok and text in ("", "{}"):
            return ()
        try:
            parsed = pp.parse(text)
        except (ValueError, RuntimeError, TypeError) as exc:
            raise self.fail(node, f"{what}: {text!r} is not a series: {exc}") from None
        if not isinstance(parsed, pp.VectorSelector) or parsed.offset or parsed.at:
            raise self.fail(node, f'{what}: {text!r} is not a series like name{{label="v"}}')
        labels = {} if parsed.name is None else {METRIC_NAME: parsed.name}
        for matcher in parsed.matchers.matchers:
            if not str(matcher.op).endswith("Equal") or str(matcher.op).endswith("NotEqual"):
                raise self.fail(node, f"{what}: {text!r} may only use '=' between labels")
            labels[matcher.name] = matcher.value
        return labels_from(labels)

    def values(self, node: yaml.Node | None, what: str) -> tuple[float | None, ...]:
        text = self.text(node, what)
        try:
            return tuple(expand_values(text))
        except ValueError as exc:
            raise self.fail(node, f"{what}: {exc}") from None


_NUMBER = r"[-+]?(?:Inf|inf|NaN|nan|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)"
_ITEM = re.compile(
    rf"(?P<blank>_)(?:x(?P<bn>\d+))?|(?P<stale>stale)"
    rf"|(?P<start>{_NUMBER})(?:(?P<op>[-+])(?P<step>{_NUMBER}))?(?:x(?P<n>\d+))?"
)


def _parse_number(text: str) -> float:
    return float(text)  # Python reads Inf, inf, NaN and nan as Go does


def expand_values(text: str) -> list[float | None]:
    """promtool's expanding notation: ``1+2x3`` is ``1 3 5 7``, ``1x2`` is ``1 1 1``, ``_`` a
    missing sample, ``_x3`` three, ``stale`` a staleness marker.

    >>> expand_values("1+2x3 _ 5-1x1 stale")[:6]
    [1.0, 3.0, 5.0, 7.0, None, 5.0]
    """
    rv: list[float | None] = []
    for word in text.split():
        match = _ITEM.fullmatch(word)
        if match is None:
            if word.startswith("{{"):
                raise ValueError("native histograms are not supported")
            raise ValueError(f"cannot read {word!r}; write values like 1 2 3, 1+2x10, _ or stale")
        if match.group("blank"):
            count = int(match.group("bn") or 1)
            rv.extend([None] * count)
        elif match.group("stale"):
            rv.append(STALE_NAN)
        else:
            start = _parse_number(match.group("start"))
            times = int(match.group("n")) if match.group("n") is not None else 0
            step = _parse_number(match.group("step")) if match.group("step") else 0.0
            if match.group("op") == "-":
                step = -step
            if match.group("step") and match.group("n") is None:
                raise ValueError(f"{word!r}: a step needs a count, like {word}x10")
            rv.extend(start + step * i for i in range(times + 1))
        if len(rv) > MAX_SAMPLES:
            raise ValueError(f"more than {MAX_SAMPLES:,} values")
    return rv


# --- printing as promtool prints ---------------------------------------------------------


def prom_duration(seconds: float) -> str:
    """``model.Duration.String``: ``5m``, ``1d``, ``2m59s999ms``, ``0s``."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    out = ""
    for name, mult, exact in (
        ("y", 365 * 86400_000, True),
        ("w", 7 * 86400_000, True),
        ("d", 86400_000, False),
        ("h", 3600_000, False),
        ("m", 60_000, False),
        ("s", 1000, False),
        ("ms", 1, False),
    ):
        if exact and ms % mult:
            continue
        if ms // mult > 0:
            out += f"{ms // mult}{name}"
            ms -= ms // mult * mult
    return out


def go_duration(seconds: float) -> str:
    """``time.Duration.String``: ``0s``, ``5m0s``, ``1h0m0s``, ``1.5s``."""
    if seconds == 0:
        return "0s"
    sign = "-" if seconds < 0 else ""
    ms = abs(round(seconds * 1000))
    if ms < 1000:
        return f"{sign}{ms}ms"
    hours, rest = divmod(ms, 3600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{sign}{minutes}m{secs}s"
    return f"{sign}{secs}s"


def go_float_e(value: float) -> str:
    """``strconv.FormatFloat(v, 'E', -1, 64)``: ``1E+00``, ``1.5E+01``, ``NaN``, ``+Inf``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return ("-" if math.copysign(1, value) < 0 else "") + "0E+00"
    sign, digits, exp10 = shortest_digits(value)
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    return f"{sign}{mantissa}E{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"


def _go_quote(text: str) -> str:
    out = []
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif ord(char) < 0x20 or char == "\x7f":
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def labels_text(labels: Labels) -> str:
    """``labels.Labels.String``: ``{a="1", b="2"}``."""
    return "{" + ", ".join(f"{k}={_go_quote(v)}" for k, v in sorted(labels)) + "}"


def _alerts_text(alerts: Sequence[tuple[Labels, Labels]], indent: str) -> str:
    if not alerts:
        return "[]"
    parts = []
    for i, (labels, notes) in enumerate(alerts):
        parts.append(f"{i}:\n  Labels:{labels_text(labels)}\n  Annotations:{labels_text(notes)}")
    body = "[\n" + ",\n".join(parts) + "\n]"
    return body.replace("\n", "\n" + indent)


def _samples_text(samples: Sequence[tuple[Labels, float]]) -> str:
    if not samples:
        return "nil"
    return ", ".join(f"{labels_text(labels)} {go_float_e(value)}" for labels, value in samples)


# --- running -----------------------------------------------------------------------------


def _same_float(a: float, b: float, fuzzy: bool) -> bool:
    if a == b:
        return True
    if math.isnan(a) and math.isnan(b):
        return False  # as promtool: NaN never equals NaN
    return fuzzy and (math.nextafter(a, -math.inf) == b or math.nextafter(a, math.inf) == b)


def _ordered(groups: list[RuleGroup], order: list[str]) -> list[RuleGroup]:
    rank = {name: i for i, name in enumerate(order)}
    return sorted(groups, key=lambda g: rank.get(g.name, 0))


def run_group(
    group: _Group, rule_groups: list[RuleGroup], evaluation_interval: float, fuzzy: bool
) -> list[str]:
    """The failures of one test group, in promtool's words (empty when it passes)."""
    store = MemoryStore()
    evaluator = Engine(store)
    db = AlertDB(":memory:")
    engine = AlertEngine(
        store,
        rule_groups,
        AlertBook(db),
        [],
        evaluator=evaluator,
        registry=CollectorRegistry(),
        external_labels=group.external_labels,
        external_url=group.external_url,
    )
    try:
        return _run(group, engine, evaluator, store, evaluation_interval, fuzzy)
    finally:
        db.close()


def _run(
    group: _Group,
    engine: AlertEngine,
    evaluator: Engine,
    store: MemoryStore,
    evaluation_interval: float,
    fuzzy: bool,
) -> list[str]:
    pending = sorted(
        (
            Sample(series.labels, group.start + i * group.interval, value)
            for series in group.series
            for i, value in enumerate(series.values)
            if value is not None
        ),
        key=lambda s: s.timestamp,
    )
    max_eval = max([c.eval_time for c in group.alerts] + [c.eval_time for c in group.exprs] + [0])
    if max_eval / evaluation_interval > MAX_STEPS:
        return [f"    the latest eval_time needs more than {MAX_STEPS:,} evaluation steps"]
    alert_times = sorted({c.eval_time for c in group.alerts})
    errors: list[str] = []
    header = f"    name: {group.name},\n" if group.name else ""
    if group.events:
        store.write(events=group.events)
    loaded = 0
    step = 0
    current = 0
    while step * evaluation_interval <= max_eval:
        offset = step * evaluation_interval
        ts = group.start + offset
        upto = loaded
        while upto < len(pending) and pending[upto].timestamp <= ts:
            upto += 1
        if upto > loaded:
            store.write(samples=pending[loaded:upto])
            loaded = upto
        eval_errors: list[str] = []
        for rule_group in engine.groups:
            engine.evaluate_group(rule_group, ts)
            for rule in rule_group.rules:
                reason = engine.last_errors.get((rule.file, rule.name, rule.line))
                if reason is not None:
                    eval_errors.append(
                        f"    rule: {rule.name}, time: {go_duration(offset)}, err: {reason}"
                    )
        if eval_errors:
            return errors + eval_errors
        while current < len(alert_times) and offset <= alert_times[current] < (
            offset + evaluation_interval
        ):
            at = alert_times[current]
            for case in (c for c in group.alerts if c.eval_time == at):
                got = sorted(
                    (labels_from(a.labels), labels_from(a.annotations))
                    for a in engine.book.alerts(case.alertname)
                    if a.state == "firing"
                )
                expected = sorted(case.expected)
                if got != expected:
                    errors.append(
                        f"{header}    alertname: {case.alertname}, time: {prom_duration(at)}, \n"
                        f"        exp:{_alerts_text(expected, '            ')}, \n"
                        f"        got:{_alerts_text(got, '            ')}"
                    )
            current += 1
        step += 1
    for expr_case in group.exprs:
        errors.extend(_check_expr(expr_case, evaluator, group.start, fuzzy))
    return errors


def _check_expr(case: _ExprCase, evaluator: Engine, start: float, fuzzy: bool) -> list[str]:
    where = f"    expr: {_go_quote(case.expr)}, time: {prom_duration(case.eval_time)}"
    try:
        result: Any = evaluator.instant(case.expr, start + case.eval_time)
    except Exception as exc:  # any evaluation error is this test's failure, as in promtool
        return [f"{where}, err: {exc}"]
    if isinstance(result, float):
        got = [((), result)]
    elif isinstance(result, list) and all(isinstance(s, InstantSample) for s in result):
        got = sorted((s.labels, s.value) for s in result)
    else:
        return [f"{where}, err: rule result is not a vector or scalar"]
    expected = sorted(case.expected, key=lambda s: s[0])
    same = len(got) == len(expected) and all(
        g[0] == e[0] and _same_float(g[1], e[1], fuzzy) for g, e in zip(got, expected, strict=True)
    )
    if same:
        return []
    return [f"{where},\n        exp: {_samples_text(expected)}\n        got: {_samples_text(got)}"]


def test_file(path: Path) -> list[str]:
    """Run one test file; its failures (empty when every test group passes)."""
    try:
        spec = _Reader(str(path)).read(path)
    except RuleTestError as exc:
        return [str(exc)]
    try:
        rule_groups = load_rules(spec.rule_files)
    except RuleError as exc:
        return [str(exc)]
    rule_groups = _ordered(rule_groups, spec.group_eval_order)
    errors: list[str] = []
    for group in spec.groups:
        errors.extend(run_group(group, rule_groups, spec.evaluation_interval, spec.fuzzy))
    return errors


def run_files(paths: Sequence[str | Path], out: TextIO, err: TextIO) -> int:
    """``vigil rules test``: promtool's report for each file; 1 when any failed."""
    failed = False
    for path in paths:
        print(f"Unit Testing:  {path}", file=out)
        errors = test_file(Path(path))
        if errors:
            failed = True
            print("  FAILED:", file=err)
            for error in errors:
                print(error, file=err)
                print(file=out)
        else:
            print("  SUCCESS", file=out)
        print(file=out)
        out.flush()
        err.flush()
    return 1 if failed else 0
