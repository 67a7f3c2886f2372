"""Alertmanager configurations, matchers and silences take any input: a value or a located
``AMConfigError`` / ``MatcherSyntaxError`` / ``SilenceError``, nothing else."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml
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


EMAIL_KEYS = st.sampled_from(
    [
        "to", "from", "smarthost", "hello", "auth_username", "auth_password",
        "auth_password_file", "auth_secret", "auth_identity", "require_tls", "tls_config",
        "headers", "html", "text", "send_resolved", "rate_limit", "timeout",
        "force_implicit_tls", "threading", "smtp_from",
    ]
)  # fmt: skip
VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-5, 70000)
    | st.sampled_from(["a@b.c", "h:25", "h:465", "10/h", "5s", "\r\nBcc: x@y.z", "{{ .X }}"])
    | st.text(max_size=12),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=6,
)


@FUZZ
@given(
    st.dictionaries(EMAIL_KEYS, VALUES, max_size=8),
    st.dictionaries(st.sampled_from(["smtp_smarthost", "smtp_from", "smtp_hello"]), VALUES),
)
def test_fuzz_email_configs_load_or_fail_located(
    tmp_path_factory: pytest.TempPathFactory, entry: dict[str, object], glob: dict[str, object]
) -> None:
    """Any ``email_configs`` entry and ``global`` smtp defaults: an e-mail config, or an
    ``AMConfigError`` naming the file and a line."""
    text = yaml.safe_dump(
        {
            "global": glob,
            "route": {"receiver": "mail"},
            "receivers": [{"name": "mail", "email_configs": [entry]}],
        }
    )
    path = tmp_path_factory.getbasetemp() / "fuzz-am-email.yml"
    path.write_text(text)
    try:
        cfg = load_config(path)
    except AMConfigError as exc:
        assert exc.file == str(path) and exc.line is not None, str(exc)
        return
    (email,) = cfg.receivers["mail"].email
    assert email.recipients and 1 <= email.port <= 65535
