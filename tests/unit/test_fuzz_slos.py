"""SLO files take any bytes: SLOs whose generated rules load, or issues with file:line.

Hypothesis feeds random bytes, the shipped SLO file with hostile pieces inserted,
deep nesting, alias bombs and surrogates; nothing but located issues may come out
of ``parse_slo_file``, only ``SloError`` out of ``load_slos``, and the rules
generated from whatever loads must load in the rule engine.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz_inputs import FUZZ, hostile_files
from hypothesis import given

from alerting.slo import SloError, load_slos, parse_slo_file, rule_groups

SHIPPED = Path(__file__).parents[2] / "config" / "slos.yaml"
VALID = SHIPPED.read_bytes()


@FUZZ
@given(hostile_files(VALID))
def test_fuzz_slo_files_give_slos_or_located_issues(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-slos.yaml"
    path.write_bytes(data)
    slos, issues = parse_slo_file(path)
    for issue in issues:
        assert issue.file == str(path)
        assert issue.line >= 1
        assert str(issue).startswith(f"{path}:{issue.line}")
    try:
        loaded = load_slos([path])
    except SloError as exc:
        assert exc.issues and all(i.severity == "error" for i in exc.issues)
        return
    assert [s.name for s in loaded] == [s.name for s in slos]
    groups = rule_groups(loaded, str(path))  # a generated file that fails to load is a bug
    assert len(groups) == 2 * len(loaded)
