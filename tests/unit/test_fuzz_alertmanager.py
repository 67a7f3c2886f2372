"""Alertmanager configurations, matchers and silences take any input: a value or a located
``AMConfigError`` / ``MatcherSyntaxError`` / ``SilenceError``, nothing else; the
configuration the API shows is the same YAML with every secret hidden."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
import yaml
from fuzz_inputs import FUZZ, hostile_files
from hypothesis import example, given
from hypothesis import strategies as st

from alerting.am.config import AMConfigError, load_config
from alerting.am.matchers import MatcherSyntaxError, parse_matchers
from alerting.am.redact import SECRET_KEYS, redacted_text
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


REDACT_KEYS = st.sampled_from(
    ["smtp_auth_password", "password", "api_url", "url", "slack_configs", "http_config",
     "basic_auth", "name", "token", "credentials", "channel", "routes"]
)  # fmt: skip
TREES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(REDACT_KEYS, inner, max_size=4),
    max_leaves=10,
)


def _secrets_hidden(before: object, after: object, parent: str) -> None:
    """``after`` is ``before`` with every non-empty string under a secret key hidden."""
    if isinstance(before, list):
        assert isinstance(after, list) and len(after) == len(before)
        for b, a in zip(before, after, strict=True):
            _secrets_hidden(b, a, parent)
    elif isinstance(before, dict):
        assert isinstance(after, dict) and list(after) == list(before)
        for key, value in before.items():
            secret = key in SECRET_KEYS or (parent == "slack_configs" and key == "api_url")
            if secret and isinstance(value, str) and value:
                assert after[key] == "<secret>"
            else:
                _secrets_hidden(value, after[key], key)
    else:
        assert after == before


@FUZZ
@given(st.dictionaries(REDACT_KEYS, TREES, min_size=1, max_size=4))
@example({"name": "a\x85b é", "password": "\x85"})  # PyYAML writes NEL raw, reads a break
def test_fuzz_redacted_config_is_the_same_yaml_with_secrets_hidden(tree: dict[str, object]) -> None:
    shown = yaml.safe_load(redacted_text(yaml.safe_dump(tree, sort_keys=False)))
    _secrets_hidden(tree, shown, "")
