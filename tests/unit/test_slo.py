"""SLO files: loading with located errors, the generated rules, the burn-rate alerts'
behaviour on generated data (``vigil rules test``), ``vigil slo`` and ``vigil alert``'s
loading of SLOs beside the rule files."""

from __future__ import annotations

import io
import logging
import os
import shutil
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from alerting.engine import AlertEngine
from alerting.rules import parse_text
from alerting.ruletest import run_files
from alerting.slo import (
    BURN_RATES,
    SloError,
    SloRuleSource,
    check_slo_files,
    generate,
    load_slos,
    parse_slo_file,
    rule_groups,
    to_yaml,
)
from alerting.state import AlertBook, AlertDB
from siem.memory import MemoryStore
from vigil.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "slos.yaml"
RULE_TEST = ROOT / "tests" / "files" / "slo" / "checkout_availability_test.yml"

GOOD = """\
slos:
  - name: api
    objective: 99.9
    sli:
      error_query: sum(rate(errors_total[{{.window}}]))
      total_query: sum(rate(requests_total[{{ .window }}]))
    alerting:
      annotations: {runbook_url: runbooks/api.md}
"""


def _with(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


def _write(tmp_path: Path, text: str, name: str = "slos.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_shipped_slos_load_without_issues() -> None:
    slos, issues = check_slo_files([SHIPPED])
    assert issues == []
    assert [(s.name, s.objective, s.window) for s in slos] == [
        ("checkout-availability", Decimal("99.5"), "30d"),
        ("checkout-latency", Decimal("99.0"), "30d"),
    ]
    for slo in slos:
        runbook = ROOT / slo.alert_annotations["runbook_url"]
        text = runbook.read_text(encoding="utf-8")
        for section in ("## Symptoms", "## Impact", "## Diagnosis", "## Remedy"):
            assert section in text, f"{runbook.name} lacks {section}"
        for name in slo.alert_names.values():
            assert name in text, f"{runbook.name} does not name {name}"


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("slos: {}\n", 1, "'slos' must be a list"),
        ("slos:\n  - objective: 99\n", 2, "'name' is required"),
        (GOOD.replace("name: api", "name: 'a b'"), 2, "use letters, digits"),
        (GOOD.replace("objective: 99.9", "objective: 100"), 3, "above 0 and below 100"),
        (GOOD.replace("objective: 99.9", "objective: high"), 3, "objective must be a number"),
        (GOOD.replace("    objective: 99.9\n", ""), 2, "'objective' is required"),
        (GOOD.replace("objective: 99.9", "objective: 99.9\n    window: 2h"), 4, "between 1d"),
        (GOOD.replace("[{{.window}}]", "[5m]"), 5, "error_query has no {{.window}}"),
        (GOOD.replace("sum(rate(errors_total", "sum(rate(errors_total{"), 5, "does not parse"),
        (_with("error_query", "good_query: x[{{.window}}]\n      error_query"), 5, "exactly one"),
        (_with("    objective", "    labels: {slo: x}\n    objective"), 3, "'slo' is set by"),
        (_with("objective: 99.9", "objective: 99.9\n    colour: red"), 4, "unknown key 'colour'"),
        (GOOD + GOOD.replace("slos:\n", ""), 9, "the name is used on line 2"),
        (_with("annotations:", "page_alert: {disable: x}\n      annotations:"), 8, "true or false"),
        ("slos:\n  - name: a\n    objective: [\n", 4, "not valid YAML"),
        (
            _with("sum(rate(requests_total[{{ .window }}]))", "scalar(rate(r[{{.window}}]))"),
            5,
            "the SLI's error ratio does not parse",
        ),
    ],
)
def test_bad_slo_files_name_file_line_and_reason(
    tmp_path: Path, text: str, line: int, reason: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(SloError) as err:
        load_slos([path])
    assert any(
        i.line == line and reason in i.message and str(i).startswith(f"{path}:{line}")
        for i in err.value.issues
    ), str(err.value)


def test_generated_rules_follow_the_workbook_table(tmp_path: Path) -> None:
    (slo,) = load_slos([_write(tmp_path, GOOD)])
    groups = generate([slo])["groups"]
    assert [g["name"] for g in groups] == ["slo-api", "slo-api-long"]
    records = [r["record"] for g in groups for r in g["rules"] if "record" in r]
    windows = ["5m", "30m", "1h", "2h", "6h", "1d", "3d", "30d"]
    assert [f"slo:sli_error:ratio_rate{w}" for w in windows] == [
        r for r in records if r.startswith("slo:sli_error:")
    ]
    alerts = {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}
    page, ticket = alerts["ApiFastBurn"], alerts["ApiSlowBurn"]
    assert "for" not in page and "for" not in ticket  # as the workbook: no `for`
    assert page["labels"] == {"severity": "critical", "slo": "api", "slo_severity": "page"}
    assert ticket["labels"]["severity"] == "warning"
    pairs = {"page": [("1h", "5m"), ("6h", "30m")], "ticket": [("1d", "2h"), ("3d", "6h")]}
    for rule, severity in ((page, "page"), (ticket, "ticket")):
        rows = [r for r in BURN_RATES if r.severity == severity]
        for row, (long_w, short_w) in zip(rows, pairs[severity], strict=True):
            threshold = f"({row.factor:g} * 0.001)"
            assert f'slo:sli_error:ratio_rate{long_w}{{slo="api"}} > {threshold}' in rule["expr"]
            assert f'slo:sli_error:ratio_rate{short_w}{{slo="api"}} > {threshold}' in rule["expr"]
    # The compliance window is the average of the 5m ratio (Sloth's method).
    period = next(r for r in groups[1]["rules"] if r.get("record") == "slo:sli_error:ratio_rate30d")
    assert period["expr"] == 'avg_over_time(slo:sli_error:ratio_rate5m{slo="api"}[30d])'
    # The generated file is a rule file Vigil's own parser accepts without a warning.
    parsed, issues = parse_text(to_yaml([slo]), "gen.yaml")
    assert issues == []
    assert sum(len(g.rules) for g in parsed) == len(records) + 2


def test_a_28_day_window_scales_the_alert_windows(tmp_path: Path) -> None:
    text = _with("objective: 99.9", "objective: 99.9\n    window: 28d")
    (slo,) = load_slos([_write(tmp_path, text)])
    assert slo.windows() == ["4m40s", "28m", "56m", "1h52m", "5h36m", "22h24m", "2d19h12m"]
    assert len(rule_groups([slo], "x")) == 2


def test_a_good_query_sli_is_one_minus_good_over_total(tmp_path: Path) -> None:
    text = GOOD.replace("error_query: sum(rate(errors_total", "good_query: sum(rate(fast_total")
    (slo,) = load_slos([_write(tmp_path, text)])
    assert slo.error_ratio_expr("1h") == (
        "1 - (\n  (sum(rate(fast_total[1h])))\n  /\n  (sum(rate(requests_total[1h])) > 0)\n)"
    )


def _rule_test_dir(tmp_path: Path, slo_text: str) -> Path:
    slo_file = _write(tmp_path, slo_text)
    (tmp_path / "slo_rules.yaml").write_text(to_yaml(load_slos([slo_file])), encoding="utf-8")
    test = tmp_path / RULE_TEST.name
    shutil.copy(RULE_TEST, test)
    return test


def test_burn_rate_alerts_fire_and_resolve_as_the_workbook_says(tmp_path: Path) -> None:
    """The rule tests: healthy stays silent, a total outage pages in ~5 minutes (14.4x),
    8x pages through 6h/30m after ~4.5 hours, 1.5x makes a ticket only, a spike's page
    resolves minutes after it ends."""
    test = _rule_test_dir(tmp_path, SHIPPED.read_text(encoding="utf-8"))
    out, err = io.StringIO(), io.StringIO()
    assert run_files([test], out, err) == 0, err.getvalue()
    assert "SUCCESS" in out.getvalue()


def test_the_rule_tests_fail_for_another_objective(tmp_path: Path) -> None:
    """The rule tests can fail: at 99.9% the "healthy" 0.1% error rate spends the whole
    budget, so the budget-remaining check of the healthy group fails."""
    text = SHIPPED.read_text(encoding="utf-8").replace("objective: 99.5", "objective: 99.9")
    test = _rule_test_dir(tmp_path, text)
    spec = yaml.safe_load(test.read_text(encoding="utf-8"))
    spec["tests"] = spec["tests"][:1]  # the healthy group alone: a fifth of the time
    test.write_text(yaml.safe_dump(spec), encoding="utf-8")
    out, err = io.StringIO(), io.StringIO()
    assert run_files([test], out, err) == 1
    assert "slo:period_error_budget_remaining:ratio > 0.799" in err.getvalue()


def test_vigil_alert_loads_slos_beside_rules_and_keeps_the_last_good(tmp_path: Path) -> None:
    rules = _write(tmp_path, "groups:\n  - name: g\n    rules: []\n", "rules.yaml")
    slos = _write(tmp_path, GOOD)
    source = SloRuleSource([str(rules)], [str(tmp_path / "slo*.yaml")])
    groups = source.load()
    assert [g.name for g in groups] == ["g", "slo-api", "slo-api-long"]
    assert [g.interval_s for g in groups] == [5.0, 5.0, 60.0]
    assert not source.changed()
    slos.write_text(GOOD.replace("99.9", "101"), encoding="utf-8")
    os.utime(slos, (1, 1))  # a different mtime even on a coarse clock
    assert source.changed()
    with pytest.raises(SloError, match=r"slos.yaml:3: error: slo api: objective"):
        source.load()


def test_vigil_alert_bad_slo_edit_keeps_the_last_good_rules_and_says_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Through the engine's reload (what the loop and SIGHUP use): logged with file:line,
    counted, the generated rules of the last good file still evaluated."""
    slos = _write(tmp_path, GOOD)
    source = SloRuleSource([], [str(slos)])
    registry = CollectorRegistry()
    engine = AlertEngine(
        MemoryStore(),
        source.load(),
        AlertBook(AlertDB(tmp_path / "alerts.db")),
        [],
        registry=registry,
        source=source,
    )
    slos.write_text(GOOD.replace("99.9", "101"), encoding="utf-8")
    os.utime(slos, (1, 1))
    with caplog.at_level(logging.ERROR, logger="alerting.engine"):
        assert engine.reload_if_changed() is False
    assert f"{slos}:3: error: slo api: objective" in caplog.text
    assert "keeping the last good rules" in caplog.text
    assert registry.get_sample_value("vigil_alert_rule_reload_failures_total") == 1
    assert [g.name for g in engine.groups] == ["slo-api", "slo-api-long"]
    engine.run_once(1_700_000_000.0)
    evaluated = registry.get_sample_value(
        "vigil_alert_group_evaluations_total", {"group": "slo-api"}
    )
    assert evaluated == 1
    source.mark_stale()  # SIGHUP: read again though nothing changed; still refused
    assert engine.reload_if_changed() is False
    assert registry.get_sample_value("vigil_alert_rule_reload_failures_total") == 2
    slos.write_text(GOOD.replace("99.9", "99.5"), encoding="utf-8")
    os.utime(slos, (2, 2))
    assert engine.reload_if_changed() is True
    exprs = [r.expr for g in engine.groups for r in g.rules]
    assert any("0.005" in str(e) for e in exprs) and not any("0.001" in str(e) for e in exprs)


def test_vigil_slo_check_and_generate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["slo", "check", str(SHIPPED)]) == 0
    assert "2 SLO(s): checkout-availability, checkout-latency" in capsys.readouterr().out
    bad = _write(tmp_path, GOOD.replace("99.9", "0"), "bad.yaml")
    assert main(["slo", "check", str(bad)]) == 1
    assert f"{bad}:3: error: slo api: objective" in capsys.readouterr().out
    out = tmp_path / "rules.yaml"
    assert main(["slo", "generate", str(SHIPPED), "-o", str(out)]) == 0
    assert yaml.safe_load(out.read_text(encoding="utf-8")) == generate(load_slos([SHIPPED]))
    assert main(["slo", "generate", str(bad)]) == 1
    assert "objective must be a percentage" in capsys.readouterr().err


def test_slo_file_problems_have_no_crash_on_missing_file(tmp_path: Path) -> None:
    slos, issues = parse_slo_file(tmp_path / "missing.yaml")
    assert slos == []
    assert issues[0].line == 1 and "cannot read the file" in issues[0].message


def test_vigil_alert_refuses_to_start_on_a_bad_slo_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = _write(tmp_path, GOOD.replace("99.9", "100"))
    config = tmp_path / "vigil.yaml"
    config.write_text(
        f"data_dir: {tmp_path / 'data'}\nstore: {{backend: memory}}\n"
        f"alert: {{rules: [], slos: ['{bad}']}}\n",
        encoding="utf-8",
    )
    assert main(["--config", str(config), "alert", "--once"]) == 2
    assert f"{bad}:3: error: slo api: objective must be a percentage" in capsys.readouterr().err
