"""Prometheus' own PromQL test scripts (tests/files/promqltest/, Apache-2.0) run against Vigil.

Every ``eval`` of the copied files is one test case, except the cases on native
histograms, which Vigil refuses at compile time: they are left out of the
parametrisation (not skipped), and a test checks that nothing else is left out. The few
places where Vigil knowingly answers differently are strict xfails with the reason.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import promqltest

SCRIPTS = Path(__file__).parent.parent / "files" / "promqltest"
KNOWN_DIFFERENCES = {
    "functions.test:523": (
        'the parser decodes "\\xff" to the valid label name "ÿ"; '
        "Prometheus keeps the invalid UTF-8 byte and refuses it"
    ),
}


def _cases() -> list[promqltest.Case]:
    cases = []
    for path in sorted(SCRIPTS.glob("*.test")):
        cases.extend(promqltest.parse_script(path.name, path.read_text(encoding="utf-8")))
    return cases


ALL_CASES = _cases()
CASES = [c for c in ALL_CASES if c.skip is None]


def test_scripts_were_read() -> None:
    # guards the parametrisation below against a runner that silently reads nothing
    assert len(CASES) > 500


def test_only_native_histogram_cases_are_left_out() -> None:
    left_out = [c for c in ALL_CASES if c.skip is not None]
    assert left_out, "the copied scripts have native-histogram cases; the runner must see them"
    assert all(c.skip.startswith("native histograms") for c in left_out)


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(
            case,
            id=f"{case.name} {case.expr[:60]}",
            marks=[pytest.mark.xfail(strict=True, reason=KNOWN_DIFFERENCES[case.name])]
            if case.name in KNOWN_DIFFERENCES
            else [],
        )
        for case in CASES
    ],
)
def test_prometheus_script(case: promqltest.Case) -> None:
    problem = promqltest.run(case)
    assert problem is None, f"{case.name}: {case.expr}: {problem}"
