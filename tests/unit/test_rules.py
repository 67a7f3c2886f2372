"""Rule files: loading, every error class with file:line, templates, ``vigil rules check``."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest

from alerting.cli import add_commands
from alerting.rules import RuleError, check_files, load_rules, parse_duration
from alerting.templates import check_template, humanize_duration, render

GOOD = """\
groups:
  - name: demo
    interval: 10s
    rules:
      - alert: HighErrors
        expr: sum(rate(http_requests_total{status=~"5.."}[1m])) > 1
        for: 1m30s
        labels: {severity: critical}
        annotations:
          summary: "{{ $value | humanize }} errors/s"
          runbook_url: runbooks/x.md
      - alert: ManyFailures
        event:
          dataset: shop.auth
          query: "event.outcome:failure"
          group_by: source.ip
          window: 5m
          threshold: 3
        labels: {severity: warning}
        annotations: {summary: "{{ $labels.source_ip }}", runbook_url: "https://rb/x"}
"""


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_rules_load_prometheus_and_event_rules(tmp_path: Path) -> None:
    (group,) = load_rules([write(tmp_path, GOOD)], default_interval=5.0)
    assert (group.name, group.interval_s, group.line) == ("demo", 10.0, 2)
    expr_rule, event_rule = group.rules
    assert expr_rule.name == "HighErrors"
    assert expr_rule.for_s == 90.0
    assert expr_rule.labels == {"severity": "critical"}
    assert expr_rule.line == 5
    assert event_rule.expr is None
    assert event_rule.event is not None
    assert event_rule.event.window == 300.0
    assert event_rule.event.threshold == 3.0
    assert event_rule.event.dataset == "shop.auth"
    assert event_rule.event.label == "source_ip"


def test_rules_shipped_file_has_no_errors() -> None:
    shipped = Path(__file__).parents[2] / "config" / "rules" / "shop.yaml"
    groups = load_rules([shipped])
    names = {r.name for g in groups for r in g.rules}
    assert {"ShopHighErrorRate", "ShopSlowCheckout", "BruteForceLogin", "ShopInstanceDown"} <= names
    high = next(r for g in groups for r in g.rules if r.name == "ShopHighErrorRate")
    assert high.for_s == 5.0
    assert high.labels["severity"] == "critical"
    assert high.annotations["runbook_url"] == "runbooks/shop-high-error-rate.md"
    assert all(g.interval_s == 5.0 for g in groups)
    # No group pins its interval: `alert.interval_s` decides for all of them.
    assert all(g.interval_s == 1.0 for g in load_rules([shipped], default_interval=1.0))


@pytest.mark.parametrize(
    ("name", "text", "line", "message"),
    [
        (
            "unknown_key",
            """\
            groups:
              - name: demo
                rules:
                  - alert: A
                    expr: up == 0
                    severity: critical
            """,
            6,
            "unknown key 'severity'",
        ),
        (
            "bad_duration",
            """\
            groups:
              - name: demo
                rules:
                  - alert: A
                    expr: up == 0
                    for: 5 minutes
            """,
            6,
            "bad duration '5 minutes'",
        ),
        (
            "bad_expr",
            """\
            groups:
              - name: demo
                rules:
                  - alert: A
                    expr: sum(rate(up[1m]) by
            """,
            5,
            "expr does not parse",
        ),
        (
            "bad_template",
            """\
            groups:
              - name: demo
                rules:
                  - alert: A
                    expr: up == 0
                    annotations:
                      summary: "{{ if $value }}down{{ else }}up"
            """,
            7,
            "without {{end}}",
        ),
        (
            "bad_yaml",
            """\
            groups:
              - name: demo
                rules: [
                  - alert: A
            """,
            4,
            "not valid YAML",
        ),
        (
            "bad_kql",
            """\
            groups:
              - name: demo
                rules:
                  - alert: A
                    event:
                      query: "event.outcome:failure and ("
                      group_by: source.ip
                      window: 5m
                      threshold: 3
            """,
            6,
            "not valid KQL",
        ),
        (
            "bad_threshold",
            """\
            groups:
              - name: demo
                rules:
                  - alert: A
                    event: {query: "a:b", group_by: source.ip, window: 5m, threshold: ten}
            """,
            5,
            "event.threshold must be a number",
        ),
        (
            "expr_and_event",
            """\
            groups:
              - name: demo
                rules:
                  - alert: A
                    expr: up == 0
                    event: {query: "a:b", group_by: x, window: 5m, threshold: 1}
            """,
            4,
            "exactly one of 'expr'",
        ),
        (
            "no_groups",
            """\
            rules: []
            """,
            1,
            "unknown key 'rules'",
        ),
    ],
)
def test_rules_errors_name_file_and_line(
    tmp_path: Path, name: str, text: str, line: int, message: str
) -> None:
    path = write(tmp_path, text, f"{name}.yaml")
    with pytest.raises(RuleError, match=message) as info:
        load_rules([path])
    first = info.value.issues[0]
    assert (first.file, first.line, first.severity) == (str(path), line, "error")
    assert re.match(rf"{re.escape(str(path))}:{line}(:\d+)?: error: ", str(first))


def test_rules_check_reports_warnings_without_refusing(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        groups:
          - name: demo
            rules:
              - alert: Bare
                expr: up == 0
        """,
    )
    issues = check_files([path])
    assert {i.severity for i in issues} == {"warning"}
    assert any("'severity' label" in i.message for i in issues)
    assert load_rules([path])[0].rules[0].name == "Bare"


def test_rules_check_command_prints_issues_and_fails_on_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import argparse

    good = write(tmp_path, GOOD, "good.yaml")
    bad = write(tmp_path, "groups:\n  - name: x\n    rules:\n      - alert: A\n        for: 1m\n")
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers())
    args = parser.parse_args(["rules", "check", str(good), str(bad)])
    args.config = None
    assert args.func(args) == 1
    out = capsys.readouterr().out
    assert f"{bad}:4: error: alert A: give exactly one of 'expr' (PromQL) or 'event'" in out
    assert "2 file(s) checked: 1 error(s)" in out
    args = parser.parse_args(["rules", "check", str(good)])
    args.config = None
    assert args.func(args) == 0


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("1m", 60.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        ("250ms", 0.25),
    ],
)
def test_rules_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 m", "1m1h", "-1s"])
def test_rules_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="bad duration"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("template", "value", "expected"),
    [
        ("{{ $labels.instance }} down", 0.0, "a:1 down"),
        ("{{ $value }}", 0.25, "0.25"),
        ("{{ $value }}", 3.0, "3"),
        ("{{ $value | humanize }}", 1234567.0, "1.235M"),
        ("{{ $value | humanize }}", 0.0125, "12.5m"),
        ("{{ $value | humanizePercentage }}", 0.0712, "7.12%"),
        ("{{ humanizePercentage $value }}", 0.5, "50%"),
        ("{{ $value | humanizeDuration }}", 0.8, "800ms"),
        ("{{ $value | humanize1024 }}", 2048.0, "2ki"),
        ('{{ printf "%.1f" $value }}', 2.345, "2.3"),
        ("{{ .Labels.instance | toUpper }}", 0.0, "A:1"),
        ("{{ $labels.missing }}|", 0.0, "|"),
        ("a {{- $value }} b", 1.0, "a1 b"),
        ("no template", 1.0, "no template"),
    ],
)
def test_template_render(template: str, value: float, expected: str) -> None:
    assert render(template, {"instance": "a:1"}, value) == expected


def test_template_render_reports_errors_inline() -> None:
    assert render("{{ $value | humanize }}", {}, float("nan")) == "NaN"
    rv = render("{{ $labels.job | humanize }}", {"job": "shop"}, 1.0)
    assert rv.startswith("<error expanding template: error calling humanize: expected a number")


@pytest.mark.parametrize(
    "bad", ["{{ if $value }}", "{{ $value | nope }}", "{{ $value", "{{ }}", "{{ $x }}", "{{ end }}"]
)
def test_template_check_rejects(bad: str) -> None:
    from alerting.templates import TemplateError

    with pytest.raises(TemplateError):
        check_template(bad)


def test_template_humanize_duration_long() -> None:
    assert humanize_duration(93784) == "1d 2h 3m 4s"
    assert humanize_duration(125) == "2m 5s"
