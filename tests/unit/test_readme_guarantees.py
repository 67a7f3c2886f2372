"""The README's "Guarantees" section names the tests that back each promise:
every file and test it names must exist, so a renamed or deleted test cannot
leave a promise without its proof."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def _guarantees() -> str:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("\n## Guarantees\n", 1)[1]
    return section.split("\n## ", 1)[0]


def test_readme_guarantees_name_existing_test_files() -> None:
    text = _guarantees()
    files = set(re.findall(r"tests/[\w/]+\.py", text))
    for pattern in re.findall(r"tests/[\w/]+_\{([\w,]+)\}\.py", text):
        files.update(f"tests/unit/test_fuzz_{name}.py" for name in pattern.split(","))
    files = {f for f in files if "{" not in f}
    assert len(files) >= 10
    missing = sorted(f for f in files if not (REPO / f).is_file())
    assert not missing, f"README Guarantees name test files that do not exist: {missing}"


def test_readme_guarantees_name_existing_tests() -> None:
    text = _guarantees()
    sources = "\n".join(p.read_text(encoding="utf-8") for p in (REPO / "tests").rglob("test_*.py"))
    defined = set(re.findall(r"^def (test_\w+)", sources, flags=re.M))
    files = set(re.findall(r"\b(test_\w+)\.py", text))
    # ``test_fuzz_{rules,…}.py`` leaves a bare prefix behind: not a test name.
    named = {n for n in re.findall(r"\b(test_\w+)\b", text) if not n.endswith("_")} - files
    # "…_locked_database" style abbreviations name a test's suffix.
    suffixes = set(re.findall(r"…(_\w+)", text))
    assert len(named) >= 10
    missing = sorted(n for n in named if n not in defined)
    assert not missing, f"README Guarantees name tests that do not exist: {missing}"
    for suffix in suffixes:
        assert any(d.endswith(suffix) for d in defined), f"no test ends with {suffix}"
