"""Every file of the public rule collections that `promtool check rules` accepts loads
in `vigil rules check`.

The collections (tests/files/rule_collections, with their licences) are
awesome-prometheus-alerts' dist/rules and kube-prometheus' PrometheusRule specs.
Debian's promtool 2.42 is the oracle; without it this skips locally and fails
under CI=true.

``KNOWN_GAPS`` lists the files that do not load yet, with the first construct
the PromQL evaluator lacks. A file there that starts loading fails the test:
take it off the list, so the list only shrinks.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import require_server

from alerting.rules import check_files

ROOT = Path(__file__).resolve().parents[2] / "tests" / "files" / "rule_collections"
FILES = sorted([*ROOT.rglob("*.yml"), *ROOT.rglob("*.yaml")])

KNOWN_GAPS: dict[str, str] = {}
"""File → the first PromQL construct it uses that Vigil does not evaluate yet."""


def _key(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.fixture(scope="module")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        require_server("promtool", "not installed (scripts/install-system-deps installs it)")
    assert found is not None
    return found


def test_collections_are_there_with_their_licences() -> None:
    assert len(FILES) >= 100
    for name in ("awesome-prometheus-alerts", "kube-prometheus"):
        assert (ROOT / name / "LICENSE").stat().st_size > 500
    assert set(KNOWN_GAPS) <= {_key(p) for p in FILES}


@pytest.mark.parametrize("path", FILES, ids=_key)
def test_collection_file_loads_when_promtool_accepts_it(promtool: str, path: Path) -> None:
    done = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=120
    )
    errors = [i for i in check_files([path]) if i.severity == "error"]
    key = _key(path)
    if done.returncode != 0:
        return  # promtool refuses it: nothing to match (none of the shipped ones today)
    if key in KNOWN_GAPS:
        assert errors, f"{key} loads now: remove it from KNOWN_GAPS"
        assert KNOWN_GAPS[key].split()[-1].rstrip("()") in str(errors[0])
        return
    assert not errors, "\n".join(str(e) for e in errors)
