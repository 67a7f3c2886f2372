"""Retention settings take any input: a value or a located ``ConfigError``.

Durations (``store.retention.*``, ``store.samples_retention``) and sizes
(``store.max_bytes``) come from YAML and the environment; ``vigil.units`` parses
them. Hypothesis feeds hostile text and YAML scalars.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz_inputs import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from vigil.errors import ConfigError
from vigil.settings import load_settings
from vigil.units import format_bytes, format_duration, parse_bytes, parse_duration

hostile_text = st.one_of(
    st.text(st.one_of(st.characters(), st.characters(categories=["Cs", "Cc"])), max_size=30),
    st.from_regex(r"[0-9]{1,20}(y|w|d|h|m|s|ms|KB|MB|GiB|TB|B)?", fullmatch=True),
    st.sampled_from(["1e999s", "9" * 5000 + "d", "15d ", "1h1d", "-1d", "٣d", "0", "1.5h"]),
)


@FUZZ
@given(hostile_text)
def test_fuzz_units_parse_or_value_error(text: str) -> None:
    for parse in (parse_duration, parse_bytes):
        try:
            value = parse(text)
        except ValueError as exc:
            assert "write it like" in str(exc)
        else:
            assert value >= 0


@FUZZ
@given(st.integers(min_value=0, max_value=10**12))
def test_fuzz_units_format_parses_back(n: int) -> None:
    assert parse_duration(format_duration(n)) == n or n == 0
    text = format_bytes(n * 1024)
    assert "." in text or parse_bytes(text) == n * 1024


yaml_scalar = st.one_of(
    hostile_text,
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(),
    st.booleans(),
    st.none(),
)


@FUZZ
@given(st.sampled_from(["retention", "samples_retention", "max_bytes"]), yaml_scalar)
def test_fuzz_retention_settings_give_a_value_or_a_located_error(
    tmp_path_factory: pytest.TempPathFactory, key: str, value: object
) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-retention.yaml"
    quoted = value if not isinstance(value, str) else repr(value).replace("\\", "\\\\")
    body = f"{{shop.access: {quoted!r}}}" if key == "retention" else repr(quoted)
    path.write_text(f"store:\n  {key}: {body}\n", encoding="utf-8", errors="surrogatepass")
    try:
        settings = load_settings(path, env={})
    except ConfigError as exc:
        assert exc.file == str(path) and exc.line is not None, str(exc)
    else:
        assert settings.store.samples_retention >= 0 and settings.store.max_bytes >= 0
        assert all(v >= 0 for v in settings.store.retention.values())


def test_retention_bad_values_are_located(tmp_path: Path) -> None:
    path = tmp_path / "vigil.yaml"
    path.write_text("store:\n  samples_retention: 15 days\n  max_bytes: 1.5GB\n")
    with pytest.raises(ConfigError, match=r":2: store.samples_retention: bad duration"):
        load_settings(path, env={})
    with pytest.raises(ConfigError, match=r"VIGIL_STORE_MAX_BYTES.*write it like 500MB"):
        load_settings(env={"VIGIL_STORE_MAX_BYTES": "ten gigs"})
