"""The rules `vigil slo generate` writes are plain Prometheus: the real promtool
accepts them (`promtool check rules`) and its `promtool test rules` gives the same
verdict as `vigil rules test` on the SLO rule tests (tests/files/slo). Without
promtool this skips locally and fails under CI=true."""

from __future__ import annotations

import io
import shutil
import subprocess
from pathlib import Path

import yaml
from conftest import promtool_path

from alerting.ruletest import run_files
from vigil.cli import main

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "config" / "slos.yaml"
RULE_TEST = ROOT / "tests" / "files" / "slo" / "checkout_availability_test.yml"


def _generate(tmp_path: Path, slo_text: str) -> Path:
    slos = tmp_path / "slos.yaml"
    slos.write_text(slo_text, encoding="utf-8")
    rules = tmp_path / "slo_rules.yaml"
    assert main(["slo", "generate", str(slos), "-o", str(rules)]) == 0
    return rules


def test_promtool_checks_the_generated_rules(tmp_path: Path) -> None:
    rules = _generate(tmp_path, SHIPPED.read_text(encoding="utf-8"))
    done = subprocess.run(
        [promtool_path(), "check", "rules", str(rules)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 26 rules found" in done.stdout


def _promtool_test(test: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool_path(), "test", "rules", str(test)], capture_output=True, text=True, timeout=300
    )


def test_promtool_passes_the_burn_rate_tests(tmp_path: Path) -> None:
    """promtool passes the SLO rule tests on the generated rules, as `vigil rules test`
    does (tests/unit/test_slo.py runs Vigil on the same pair)."""
    _generate(tmp_path, SHIPPED.read_text(encoding="utf-8"))
    test = tmp_path / RULE_TEST.name
    shutil.copy(RULE_TEST, test)
    done = _promtool_test(test)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_promtool_and_vigil_fail_the_same_test_for_another_objective(tmp_path: Path) -> None:
    """At 99.9% the "healthy" group's budget check fails in both, with the same report."""
    text = SHIPPED.read_text(encoding="utf-8").replace("objective: 99.5", "objective: 99.9")
    _generate(tmp_path, text)
    spec = yaml.safe_load(RULE_TEST.read_text(encoding="utf-8"))
    spec["tests"] = spec["tests"][:1]
    test = tmp_path / RULE_TEST.name
    test.write_text(yaml.safe_dump(spec), encoding="utf-8")
    done = _promtool_test(test)
    out, err = io.StringIO(), io.StringIO()
    assert run_files([test], out, err) == 1
    assert done.returncode == 1, done.stdout + done.stderr
    assert err.getvalue().strip() in done.stdout + done.stderr
