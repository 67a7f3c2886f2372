"""Notification templates take any input: a template file loads or fails with a located
``ConfigError``; a field template renders or raises ``TemplateError`` — never another
exception, never unbounded output; the ``templates`` globs a reload watches are read from
any configuration file without failing."""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz_inputs import FUZZ, mutated
from hypothesis import given
from hypothesis import strategies as st

from alerting.am.config import template_globs
from alerting.am.templates import MAX_FIELD_OUTPUT, NotificationTemplates, group_data
from alerting.notify.base import GroupNotification
from alerting.state import Alert
from alerting.templates import TemplateError
from vigil.errors import ConfigError

CUSTOM = (
    Path(__file__).resolve().parents[1] / "files" / "am_templates" / "custom.tmpl"
).read_bytes()
PIECES = [
    "{{",
    "}}",
    "{{-",
    "-}}",
    " ",
    ".",
    "$",
    "|",
    "(",
    ")",
    '"',
    "`",
    "range",
    "if",
    "with",
    "else",
    "end",
    "define",
    "template",
    "block",
    ":=",
    "=",
    ",",
    ".Alerts",
    ".Firing",
    ".CommonLabels",
    ".SortedPairs",
    ".Remove",
    ".Names",
    "join",
    "printf",
    "safeHtml",
    "reReplaceAll",
    "match",
    "len",
    "index",
    '<a href="',
    "<script>",
    "<!--",
    "-->",
    "'",
    "1",
    "-1",
    "1e9",
    '"x"',
    "nil",
    "true",
    "/*",
    "*/",
    "\n",
    "date",
    "tz",
    "since",
    "humanizeDuration",
    ".StartsAt",
    ".EndsAt",
    ".Format",
    '"America/New_York"',
    '"Local"',
    '"2006-01-02 15:04:05.000 MST Z07:00"',
]
CONFIG = b"templates: ['tmpl/*.tmpl', x]\nroute: {receiver: team}\nreceivers: [{name: team}]\n"
DATA = group_data(
    GroupNotification(
        "team",
        "k",
        {"alertname": "X"},
        [
            Alert("a", {"alertname": "X", "i": "1"}, {"s": "<b>"}, "firing", 1.0, 10.0),
            Alert("b", {"alertname": "X", "i": "2"}, {}, "resolved", 1.0, 10.0, resolved_at=20.0),
        ],
    )
)


@FUZZ
@given(st.one_of(mutated(CUSTOM), st.binary(max_size=300)))
def test_fuzz_template_file_loads_or_fails_located(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes
) -> None:
    folder = tmp_path_factory.mktemp("t")
    (folder / "x.tmpl").write_bytes(raw)
    try:
        NotificationTemplates.load(["*.tmpl"], folder)
    except ConfigError as exc:
        assert exc.file is not None and exc.file.endswith("x.tmpl")


@FUZZ
@given(st.lists(st.sampled_from(PIECES), max_size=40).map("".join), st.booleans())
def test_fuzz_field_template_renders_or_raises_template_error(text: str, html: bool) -> None:
    templates = NotificationTemplates()
    try:
        out = templates.render(text, DATA, html=html)
    except TemplateError:
        return
    assert len(out) <= MAX_FIELD_OUTPUT


@FUZZ
@given(st.one_of(mutated(CONFIG), st.binary(max_size=300)))
def test_fuzz_template_globs_of_any_config_file(
    tmp_path_factory: pytest.TempPathFactory, raw: bytes
) -> None:
    path = tmp_path_factory.mktemp("c") / "am.yml"
    path.write_bytes(raw)
    globs = template_globs(path)
    assert all(isinstance(g, str) for g in globs)
