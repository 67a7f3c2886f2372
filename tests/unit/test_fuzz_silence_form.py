"""The Alerts page's silence form takes any JSON body: a checked silence, or a
``FieldError`` naming one of the form's fields, nothing else."""

from __future__ import annotations

from typing import Any

from fuzz_inputs import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from dashboards.alerts import FieldError, parse_silence_form

FIELDS = ("body", "matchers", "startsAt", "endsAt", "duration", "comment")
NOW = 1_800_000_000.0
PIECES = st.sampled_from(
    [
        'alertname="X"',
        "a=b",
        "=~",
        '"',
        "\\",
        ",",
        "{",
        "}",
        ".*",
        "\x00",
        "\ud800",
        "é",
        "1h",
        "0s",
        "-5m",
        "1e308",
        "NaN",
        "2026-01-01T00:00:00Z",
        "now",
        " ",
    ]
)
TEXT = st.lists(PIECES | st.text(max_size=4), max_size=8).map("".join)
VALUE: st.SearchStrategy[Any] = st.none() | st.booleans() | st.integers() | st.floats() | TEXT
BODY = st.dictionaries(st.sampled_from(FIELDS[1:]), VALUE | st.lists(VALUE, max_size=2)) | VALUE


@FUZZ
@given(BODY)
def test_fuzz_silence_form_gives_a_silence_or_names_the_field(body: object) -> None:
    try:
        silence = parse_silence_form(body, "olga", NOW)
    except FieldError as exc:
        assert exc.field in FIELDS and str(exc).startswith(exc.field + ": ")
        return
    assert silence.created_by == "olga" and silence.comment.strip()
    assert NOW <= silence.starts_at < silence.ends_at
