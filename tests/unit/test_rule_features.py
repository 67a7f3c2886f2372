"""Rule files as Prometheus loads them, the rule engine's Prometheus behaviours, Go
templates and the rule-test runner's pieces."""

from __future__ import annotations

import io
import math
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from alerting.engine import AlertEngine
from alerting.promql import Engine
from alerting.rules import RuleError, load_rules, parse_file
from alerting.ruletest import (
    expand_values,
    go_duration,
    go_float_e,
    labels_text,
    prom_duration,
    run_files,
)
from alerting.state import AlertBook, AlertDB
from alerting.templates import QuerySample, TemplateContext, TemplateError, check_template, render
from siem.memory import MemoryStore
from siem.model import STALE_NAN, Matcher, Sample, is_stale, make_labels
from siem.sqlite import SqliteStore

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str, name: str = "r.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def engine_for(tmp_path: Path, text: str, store: MemoryStore) -> AlertEngine:
    groups = load_rules([write(tmp_path, text)])
    return AlertEngine(
        store,
        groups,
        AlertBook(AlertDB(":memory:")),
        [],
        evaluator=Engine(store),
        registry=CollectorRegistry(),
        external_labels={"cluster": "eu1"},
        external_url="http://vigil.example.com/",
    )


# --- loading -----------------------------------------------------------------------------


def test_rules_prometheus_group_and_rule_fields_load(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        groups:
          - name: empty
            rules: []
          - name: nothing
            rules:
          - name: full
            interval: 30s
            query_offset: 1m
            limit: 10
            labels: {team: sre, tier: db}
            rules:
              - record: "job:up:sum"
                expr: sum by (job) (up)
                labels: {tier: app}
              - alert: "Instance down · déjà vu"
                expr: up == 0
                for: 0
              - alert: Later
                expr: up == 0
                for: 1m
                keep_firing_for: 5m
        """,
    )
    groups = load_rules([path])
    assert [g.name for g in groups] == ["empty", "nothing", "full"]
    full = groups[2]
    assert (full.interval_s, full.query_offset_s, full.limit) == (30.0, 60.0, 10)
    record, now, alert = full.rules
    assert (now.name, now.for_s) == ("Instance down · déjà vu", 0.0)
    assert (record.kind, record.name, dict(record.labels)) == (
        "record",
        "job:up:sum",
        {"team": "sre", "tier": "app"},  # the rule's own label wins over the group's
    )
    assert (alert.kind, alert.name, alert.for_s, alert.keep_firing_for_s) == (
        "alert",
        "Later",
        60.0,
        300.0,
    )


@pytest.mark.parametrize(
    ("rule", "message"),
    [
        ("- record: x\n  expr: up\n  annotations: {a: b}", "a recording rule has no 'annotations'"),
        ("- record: x\n  expr: up\n  for: 1m", "a recording rule has no 'for'"),
        ("- record: x", "'expr' is required"),
        ("- alert: x\n  record: y\n  expr: up", "exactly one of 'alert'"),
        ("- alert: ''\n  expr: up", "must be non-empty"),
        ("- alert: x\n  expr: up\n  keep_firing_for: soon", "keep_firing_for"),
        ("- record: x\n  expr: up\n  labels: {__name__: y}", "'__name__' cannot be set"),
        ("- record: 'x{a=\"1\"}'\n  expr: up", "braces in the recording rule name"),
    ],
)
def test_rules_bad_rules_name_file_line_and_reason(tmp_path: Path, rule: str, message: str) -> None:
    body = textwrap.indent(rule, "      ")
    path = write(tmp_path, f"groups:\n  - name: g\n    rules:\n{body}\n")
    with pytest.raises(RuleError, match=message) as info:
        load_rules([path])
    assert info.value.issues[0].file == str(path)
    assert info.value.issues[0].line >= 4


@pytest.mark.parametrize("limit", ["-1", "1.5", "lots"])
def test_rules_bad_group_limit(tmp_path: Path, limit: str) -> None:
    path = write(tmp_path, f"groups:\n  - name: g\n    limit: {limit}\n    rules: []\n")
    with pytest.raises(RuleError, match=r"r\.yaml:3: error: group limit"):
        load_rules([path])


def test_rules_duplicate_rules_warn_like_promtool(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """\
        groups:
          - name: g
            rules:
              - record: a
                expr: up
              - record: a
                expr: sum(up)
              - record: a
                expr: up
                labels: {x: "1"}
        """,
    )
    groups, issues = parse_file(path)
    assert len(groups[0].rules) == 3
    assert [(i.severity, i.line) for i in issues] == [("warning", 6)]
    assert "duplicate rule: record a with the same labels as line 4" in issues[0].message


# --- evaluation --------------------------------------------------------------------------


def test_engine_recording_rules_store_series_used_by_later_rules(tmp_path: Path) -> None:
    store = MemoryStore()
    store.write(
        samples=[
            Sample(make_labels("up", job="shop", instance=i), 100.0, v)
            for i, v in (("a", 1.0), ("b", 0.0), ("c", 1.0))
        ]
    )
    engine = engine_for(
        tmp_path,
        """\
        groups:
          - name: g
            labels: {env: prod}
            rules:
              - record: job:up:sum
                expr: sum by (job) (up)
              - alert: TooFewUp
                expr: job:up:sum < 3
                labels: {severity: warning}
        """,
        store,
    )
    changes = engine.run_once(100.0)
    (recorded,) = Engine(store).instant("job:up:sum", 100.0)
    assert (recorded.labels, recorded.value) == (
        (("__name__", "job:up:sum"), ("env", "prod"), ("job", "shop")),
        2.0,
    )
    assert [(c.alert.name, c.after, dict(c.alert.labels)) for c in changes] == [
        (
            "TooFewUp",
            "firing",
            {"alertname": "TooFewUp", "env": "prod", "job": "shop", "severity": "warning"},
        )
    ]
    alerts = Engine(store).instant("ALERTS", 100.0)
    assert [dict(s.labels)["alertstate"] for s in alerts] == ["firing"]


def test_engine_writes_staleness_markers_for_series_that_went_away(tmp_path: Path) -> None:
    store = MemoryStore()
    store.write(samples=[Sample(make_labels("up", job="a"), 10.0, 1.0)])
    engine = engine_for(
        tmp_path, "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: up\n", store
    )
    engine.run_once(10.0)
    engine.run_once(400.0)  # 'up' is older than the lookback: the rule returns nothing
    points = store.select([], 0, 1000)
    recorded = next(s for s in points if s.name == "r")
    assert recorded.points[0] == (10.0, 1.0)
    stale_time, stale_value = recorded.points[1]
    assert stale_time == 400.0 and math.isnan(stale_value)
    assert struct.pack("<d", stale_value) == struct.pack("<d", STALE_NAN)


def test_engine_staleness_markers_survive_the_sqlite_store(tmp_path: Path) -> None:
    # Another process (the dashboards) reads the file: the marker is still no plain NaN.
    store = SqliteStore(tmp_path / "siem.db")
    store.write(samples=[Sample(make_labels("up", job="a"), 10.0, math.nan)])
    engine = engine_for(
        tmp_path, "groups:\n  - name: g\n    rules:\n      - record: r\n        expr: up\n", store
    )
    engine.run_once(10.0)
    engine.run_once(400.0)
    store.close()
    reader = SqliteStore(tmp_path / "siem.db")
    try:
        (recorded,) = reader.select([Matcher("__name__", "=", "r")], 0, 1000)
    finally:
        reader.close()
    (t1, nan), (t2, stale) = recorded.points
    assert (t1, t2) == (10.0, 400.0)
    assert math.isnan(nan) and not is_stale(nan)  # a NaN the rule returned is a value
    assert is_stale(stale)


def test_engine_group_limit_fails_the_rule_and_drops_its_alerts(tmp_path: Path) -> None:
    store = MemoryStore()
    store.write(samples=[Sample(make_labels("up", instance=i), 10.0, 0.0) for i in "ab"])
    engine = engine_for(
        tmp_path,
        """\
        groups:
          - name: g
            limit: 1
            rules:
              - alert: Down
                expr: up == 0
              - record: r
                expr: up
        """,
        store,
    )
    engine.run_once(10.0)
    assert engine.book.alerts("Down") == []
    assert sorted(engine.last_errors.values()) == [
        "exceeded limit 1 with 2 series",
        "exceeded limit of 1 with 2 alerts",
    ]


def test_engine_query_offset_evaluates_in_the_past(tmp_path: Path) -> None:
    store = MemoryStore()
    store.write(samples=[Sample(make_labels("m"), 0.0, 1.0), Sample(make_labels("m"), 60.0, 2.0)])
    engine = engine_for(
        tmp_path,
        "groups:\n  - name: g\n    query_offset: 1m\n    rules:\n      - record: r\n"
        "        expr: m\n",
        store,
    )
    engine.run_once(90.0)
    assert Engine(store).instant("r", 30.0)[0].value == 1.0  # m at 90s - 1m, stored at 30s


def test_engine_keep_firing_for(tmp_path: Path) -> None:
    store = MemoryStore()
    store.write(
        samples=[Sample(make_labels("flap"), 0.0, 1.0), Sample(make_labels("flap"), 60.0, 0.0)]
    )
    engine = engine_for(
        tmp_path,
        "groups:\n  - name: g\n    rules:\n      - alert: F\n        expr: flap > 0\n"
        "        keep_firing_for: 2m\n",
        store,
    )
    changes = {
        t: [(c.before, c.after) for c in engine.run_once(float(t))] for t in (0, 60, 179, 180)
    }
    # condition false from 60s; firing kept for 2m from then, resolved at 180s
    assert changes == {0: [(None, "firing")], 60: [], 179: [], 180: [("firing", "resolved")]}


def test_engine_templates_see_query_external_labels_and_url(tmp_path: Path) -> None:
    store = MemoryStore()
    store.write(samples=[Sample(make_labels("up", instance=i), 10.0, 0.0) for i in ("a:1", "b:2")])
    engine = engine_for(
        tmp_path,
        """\
        groups:
          - name: g
            rules:
              - alert: Down
                expr: up{instance="a:1"} == 0
                labels: {host: "{{ $labels.instance | stripPort }}"}
                annotations:
                  summary: >-
                    {{ with query "count(up == 0)" }}{{ . | first | value }}{{ end }} down in
                    {{ $externalLabels.cluster }}, see {{ externalURL }}alerts
                  bad: '{{ query "up{" }}'
        """,
        store,
    )
    engine.run_once(10.0)
    (alert,) = engine.book.alerts("Down")
    assert alert.labels["host"] == "a"
    assert alert.annotations["summary"] == "2 down in eu1, see http://vigil.example.com/alerts"
    assert alert.annotations["bad"].startswith("<error expanding template: error calling query: ")


# --- templates ---------------------------------------------------------------------------


def _query(expr: str) -> list[QuerySample]:
    assert expr == "up"
    return [
        QuerySample({"__name__": "up", "instance": "b"}, 0.5),
        QuerySample({"instance": "a"}, 1),
    ]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ $value }}", "1.234567e+06"),  # Go's %v, as Prometheus prints $value
        ("{{ if gt $value 1e6 }}big{{ else if gt $value 1.0 }}mid{{ else }}small{{ end }}", "big"),
        ("{{ with $labels.job }}{{ . }}{{ else }}none{{ end }}", "none"),
        ('{{ range query "up" }}{{ .Labels.instance }}={{ .Value }} {{ end }}', "b=0.5 a=1 "),
        (
            '{{ range $i, $s := query "up" | sortByLabel "instance" }}'
            '{{ $i }}{{ label "instance" $s }}{{ end }}',
            "0a1b",
        ),
        ('{{ query "up" | first | value | humanizePercentage }}', "50%"),
        (
            '{{ range query "nothing" }}x{{ else }}empty{{ end }}',
            "<error expanding template: error calling query: unexpected nothing>",
        ),
        ('{{ define "t" }}<{{ . }}>{{ end }}{{ template "t" "x" }}', "<x>"),
        ("{{ $x := 1 }}{{ $x = 2 }}{{ $x }}", "2"),
        ('{{ printf "%.1f%%|%5s|%-3d|%q" 12.345 "ab" 7 "q" }}', '12.3%|   ab|7  |"q"'),
        ('{{ reReplaceAll "(\\\\w+):(\\\\d+)" "${2}/$1" "host:80" }}', "80/host"),
        (
            '{{ "don\'t stop" | title }} {{ match "^h.st$" "host" }} {{ "[::1]:9" | stripPort }}',
            "Don'T Stop true ::1",
        ),
        ("{{ 1700000000.5 | humanizeTimestamp }}", "2023-11-14 22:13:20.5 +0000 UTC"),
        ("{{ 90061 | humanizeDuration }} {{ 0.0005 | humanizeDuration }}", "1d 1h 1m 1s 500us"),
        ("{{ $externalURL }} {{ pathPrefix }} {{ $externalLabels.c }}", "http://x/p /p 1"),
        ('{{/* a comment */ -}}  {{ len $labels }} {{ index $labels "job" }}', "0 "),
        (
            '{{ and 1 0 }} {{ or 0 "" 3 }} {{ not 0 }} {{ eq 1 2 1 }} {{ ne "a" "b" }}',
            "0 3 true true true",
        ),
    ],
)
def test_templates_go_features(template: str, expected: str) -> None:
    def query(expr: str) -> list[QuerySample]:
        if expr == "nothing":
            raise TemplateError("unexpected nothing")
        return _query(expr)

    context = TemplateContext({"c": "1"}, "http://x/p", query)
    assert render(template, {}, 1234567.0, context) == expected


@pytest.mark.parametrize(
    ("template", "message"),
    [
        ('{{ tmpl "x" . }}', "function 'tmpl' not defined"),
        ("{{ if 1 }}a{{ else }}b{{ else }}c{{ end }}", "without {{end}}"),
        ("{{ range $a, $b, $c := . }}{{ end }}", "undefined variable|unexpected"),
        ("{{ $labels.x 1 }}", "can't give argument to non-function"),
        ("{{ 1 | 2 }}", "non-function"),
        ("{{ (1 }}", "unclosed left paren"),
        ("{{/* open }}", "unclosed comment"),
        ("{{ $y = 1 }}", "undefined variable"),
        ("{{ define 1 }}{{ end }}", "needs a quoted name"),
    ],
)
def test_templates_parse_errors(template: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        check_template(template)


def test_templates_runaway_recursion_is_bounded() -> None:
    rv = render('{{ define "a" }}{{ template "a" . }}{{ end }}{{ template "a" . }}', {}, 1.0)
    assert rv == "<error expanding template: templates nested more than 100 deep>"
    rv = render("{{ range $i := 200000 }}x{{ end }}", {}, 1.0)
    assert rv.startswith("<error expanding template: more than 100,000 steps")


# --- the rule-test runner's pieces -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1+2x3", [1, 3, 5, 7]),
        ("1-1x3", [1, 0, -1, -2]),
        ("0x10", [0] * 11),
        ("_ 1 _x2 2", [None, 1, None, None, 2]),
        ("-1.5e1 +Inf", [-15, math.inf]),
        ("1x0", [1]),
    ],
)
def test_ruletest_expanding_notation(text: str, expected: list[float | None]) -> None:
    assert expand_values(text) == expected


def test_ruletest_stale_is_the_staleness_marker() -> None:
    (value,) = expand_values("stale")
    assert struct.pack("<d", value) == struct.pack("<d", STALE_NAN)


@pytest.mark.parametrize("text", ["1+", "1+2", "x", "{{schema:1}}", "1..2"])
def test_ruletest_expanding_notation_rejects(text: str) -> None:
    with pytest.raises(ValueError):
        expand_values(text)


def test_ruletest_prints_like_promtool() -> None:
    assert [prom_duration(s) for s in (0, 300, 86400, 179.999, 604800)] == [
        "0s",
        "5m",
        "1d",
        "2m59s999ms",
        "1w",
    ]
    assert [go_duration(s) for s in (0, 300, 3600, 1.5, 0.25)] == [
        "0s",
        "5m0s",
        "1h0m0s",
        "1.5s",
        "250ms",
    ]
    assert [go_float_e(v) for v in (1, 0.1, 60, -2.5e-7, math.nan)] == [
        "1E+00",
        "1E-01",
        "6E+01",
        "-2.5E-07",
        "NaN",
    ]
    assert labels_text((("a", 'x"y'), ("b", "1"))) == '{a="x\\"y", b="1"}'


def test_ruletest_every_shipped_rule_has_a_passing_unit_test() -> None:
    tests = sorted((ROOT / "config" / "rules" / "tests").glob("*_test.yml"))
    out, err = io.StringIO(), io.StringIO()
    assert run_files(tests, out, err) == 0, out.getvalue() + err.getvalue()
    assert out.getvalue().count("  SUCCESS") == len(tests)
    tested = {t.read_text() for t in tests}
    for rule_file in (ROOT / "config" / "rules").glob("*.yaml"):
        assert (ROOT / "config" / "rules" / "tests" / f"{rule_file.stem}_test.yml").exists()
        for group in load_rules([rule_file]):
            for rule in group.rules:
                assert any(f"alertname: {rule.name}" in text for text in tested), rule.name


def test_ruletest_located_errors_and_failures(tmp_path: Path) -> None:
    write(tmp_path, "groups:\n  - name: g\n    rules:\n      - alert: A\n        expr: up == 0\n")
    bad = write(
        tmp_path,
        "rule_files: [r.yaml]\ntests:\n  - input_events:\n      - {dataset: d, count: 0}\n",
        "bad_test.yml",
    )
    out, err = io.StringIO(), io.StringIO()
    assert run_files([bad], out, err) == 1
    assert f"{bad}:4: count must be 1 to 100,000" in err.getvalue()
    assert out.getvalue().startswith(f"Unit Testing:  {bad}\n")


def test_ruletest_cli_exit_codes_and_report() -> None:
    files = ROOT / "tests" / "files" / "rule_tests" / "vigil"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "vigil.cli",
            "rules",
            "test",
            "limit_test.yml",
            "fail_value_test.yml",
        ],
        cwd=files,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert done.stdout.startswith(
        "Unit Testing:  limit_test.yml\n  SUCCESS\n\nUnit Testing:  fail_value_test.yml\n"
    )
    assert done.stderr == (
        "  FAILED:\n"
        '    expr: "job:requests:rate2m", time: 5m,\n'
        '        exp: {__name__="job:requests:rate2m", job="api", recorded="yes"} 2E+00\n'
        '        got: {__name__="job:requests:rate2m", job="api", recorded="yes"} 1E+00\n'
    )
