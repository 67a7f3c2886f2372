"""Alertmanager configurations, matchers and silences take any input: a value or a located
``AMConfigError`` / ``MatcherSyntaxError`` / ``SilenceError``, nothing else."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from fuzz_inputs import FUZZ, hostile_files
from hypothesis import given
from hypothesis import strategies as st

from alerting.am.config import AMConfigError, load_config
from alerting.am.matchers import MatcherSyntaxError, parse_matchers
from alerting.am.silences import SilenceError, new_silence

ROOT = Path(__file__).resolve().parents[2]
VALID = (
    (ROOT / "tests/files/alertmanager/upstream/conf.good.yml").read_bytes()
    + b"""
time_intervals:
  - name: office
    time_intervals:
      - weekdays: ['monday:friday']
        times: [{start_time: '09:00', end_time: '17:00'}]
        days_of_month: ['1:5', '-3:-1']
        months: ['january:march']
        years: ['2026']
        location: Europe/Berlin
"""
)


@FUZZ
@given(hostile_files(VALID))
def test_fuzz_config_any_bytes_load_or_fail_located(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-am.yml"
    path.write_bytes(data)
    try:
        cfg = load_config(path)
    except AMConfigError as exc:
        assert exc.file == str(path)
        assert str(exc).startswith(str(path))
        return
    for route in cfg.route.walk():  # whatever loaded routes without raising
        route.match({"alertname": "x", "severity": "critical"})


MATCHER_PIECES = st.sampled_from(
    ["a", "=", "!=", "=~", "!~", '"', "\\", ",", "{", "}", " ", "(", "é", "\x00", "\ud800", ".*"]
)


@FUZZ
@given(st.lists(MATCHER_PIECES | st.text(max_size=5), max_size=30).map("".join))
def test_fuzz_matchers_parse_or_raise_matcher_syntax_error(text: str) -> None:
    try:
        matchers = parse_matchers(text)
    except MatcherSyntaxError:
        return
    for m in matchers:
        m.matches({"a": "x"})
    with contextlib.suppress(SilenceError):
        new_silence(matchers, created_by="fuzz", comment="", now=0.0)
