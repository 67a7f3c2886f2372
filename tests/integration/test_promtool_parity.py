"""`vigil rules test` / `vigil rules check` give promtool's verdicts on the same files.

Runs Debian's real ``promtool`` (2.42, from scripts/install-system-deps) and Vigil
on promtool's own test data (tests/files/rule_tests/promtool, Apache-2.0), on
Vigil's passing and deliberately failing cases (tests/files/rule_tests/vigil)
and on the shipped rule files promtool can load. Without promtool this skips
locally and fails under CI=true.

``KNOWN_GAPS`` lists the files whose verdict still differs because the PromQL
evaluator lacks something; a gap that closes fails the test, so the list only
shrinks. ``NEWER_THAN_PROMTOOL`` lists files written for a newer promtool than
Debian's 2.42, with the verdict current Prometheus gives.
"""

from __future__ import annotations

import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import require_server

from alerting.rules import check_files
from alerting.ruletest import run_files

ROOT = Path(__file__).resolve().parents[2]
FILES = ROOT / "tests" / "files" / "rule_tests"
UPSTREAM = FILES / "promtool"
OURS = FILES / "vigil"
SHIPPED_TESTS = ROOT / "config" / "rules" / "tests"

KNOWN_GAPS: dict[str, str] = {}
"""File → what the evaluator lacks for it to get promtool's verdict."""

NEWER_THAN_PROMTOOL = {
    "promtool/no-test-group-interval.yml": True,  # 2.42 loads samples at interval 0
    "promtool/start-time-test.yml": None,  # start_timestamp; rules.yml needs subqueries
    "promtool/unittest.yml": None,  # native histograms, which Vigil does not support
}
"""File → whether current promtool passes it, when Vigil must agree (None: not compared)."""

TEST_FILES = sorted(
    [
        *(p for p in UPSTREAM.glob("*.yml") if "test" in p.name or p.name in ("failing.yml",)),
        UPSTREAM / "bad-promql.yml",
        UPSTREAM / "bad-input-series.yml",
        UPSTREAM / "long-period.yml",
        UPSTREAM / "no-test-group-interval.yml",
        *OURS.glob("*_test.yml"),
        SHIPPED_TESTS / "postgres_test.yml",
        SHIPPED_TESTS / "vigil_test.yml",
    ]
)
RULE_FILES = sorted(
    [
        *(
            p
            for p in UPSTREAM.glob("*.yml")
            if p.name
            in (
                "rules.yml",
                "rules-bad.yml",
                "rules_duplicates.yml",
                "rules_extrafields.yml",
                "at-modifier.yml",
                "negative-offset.yml",
                "bad-rules-error.yml",
                "bad-rules-syntax.yml",
            )
        ),
        *OURS.glob("*.rules.yml"),
        ROOT / "config" / "rules" / "postgres.yaml",
        ROOT / "config" / "rules" / "vigil.yaml",
    ]
)


def _key(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _promtool() -> str:
    found = shutil.which("promtool") or (
        "/usr/bin/promtool" if Path("/usr/bin/promtool").exists() else None
    )
    if found is None:
        require_server("promtool", "not installed (scripts/install-system-deps installs it)")
    assert found is not None
    return found


def _promtool_test(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_promtool(), "test", "rules", path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _vigil_passes(path: Path) -> tuple[bool, str]:
    out, err = io.StringIO(), io.StringIO()
    code = run_files([path], out, err)
    return code == 0, out.getvalue() + err.getvalue()


def test_promtool_test_data_is_all_covered() -> None:
    listed = {_key(p) for p in TEST_FILES + RULE_FILES}
    assert set(KNOWN_GAPS) <= listed
    assert set(NEWER_THAN_PROMTOOL) <= listed
    assert len(TEST_FILES) >= 25 and len(RULE_FILES) >= 12
    failing = [p for p in TEST_FILES if p.name.startswith("fail")]
    assert len(failing) >= 8, "deliberately failing cases are part of the comparison"


@pytest.mark.parametrize("path", TEST_FILES, ids=_key)
def test_rules_test_verdict_matches_promtool(path: Path) -> None:
    key = _key(path)
    vigil_ok, report = _vigil_passes(path)
    if key in NEWER_THAN_PROMTOOL:
        expected = NEWER_THAN_PROMTOOL[key]
        if expected is not None:
            assert vigil_ok is expected, report
        return
    done = _promtool_test(path)
    promtool_ok = done.returncode == 0
    if key in KNOWN_GAPS:
        assert vigil_ok != promtool_ok, (
            f"{key} now gets promtool's verdict: remove it from KNOWN_GAPS"
        )
        return
    assert vigil_ok == promtool_ok, (
        f"promtool {'passes' if promtool_ok else 'fails'} {key}, vigil does not agree\n"
        f"--- promtool\n{done.stdout}{done.stderr}\n--- vigil\n{report}"
    )


@pytest.mark.parametrize("path", RULE_FILES, ids=_key)
def test_rules_check_verdict_matches_promtool(path: Path) -> None:
    done = subprocess.run(
        [_promtool(), "check", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    promtool_ok = done.returncode == 0
    issues = check_files([path])
    vigil_ok = not any(i.severity == "error" for i in issues)
    key = _key(path)
    if key in KNOWN_GAPS:
        assert vigil_ok != promtool_ok, f"{key} now loads: remove it from KNOWN_GAPS"
        return
    assert vigil_ok == promtool_ok, (
        f"promtool check rules {'accepts' if promtool_ok else 'refuses'} {key}\n"
        f"--- promtool\n{done.stdout}{done.stderr}\n--- vigil\n" + "\n".join(str(i) for i in issues)
    )


def test_failure_report_reads_like_promtool() -> None:
    path = OURS / "fail_limit_test.yml"
    done = _promtool_test(path)
    vigil = subprocess.run(
        [sys.executable, "-m", "vigil.cli", "rules", "test", path.name],
        cwd=path.parent,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert (done.returncode, vigil.returncode) == (1, 1)
    assert vigil.stdout == done.stdout  # "Unit Testing:  FILE" and the blank lines
    assert vigil.stderr == done.stderr  # "  FAILED:" and the rule's error
