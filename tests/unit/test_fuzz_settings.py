"""The config file and the environment take any input: ``Settings`` or a located ``ConfigError``.

Hypothesis feeds random bytes, ``config/vigil.yaml`` with hostile pieces
inserted, deep nesting, alias bombs and surrogates, and hostile values for
every environment variable.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fuzz_inputs import FUZZ, hostile_files
from hypothesis import given, settings
from hypothesis import strategies as st

from vigil.cli import main
from vigil.errors import ConfigError
from vigil.settings import describe_options, load_settings

SHIPPED = Path(__file__).parents[2] / "config" / "vigil.yaml"
VALID = SHIPPED.read_bytes()
ENV_VARS = sorted({row[2] for row in describe_options() if row[2]})


@settings(FUZZ, max_examples=60)  # the shipped file is the longest: fewer, slower examples
@given(hostile_files(VALID))
def test_fuzz_settings_any_file_gives_settings_or_a_located_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-vigil.yaml"
    path.write_bytes(data)
    try:
        settings = load_settings(path, env={})
    except ConfigError as exc:
        assert exc.file == str(path)
        assert str(exc).startswith(f"{path}:")
    else:
        assert 1 <= settings.shop.port <= 65535


hostile_value = st.one_of(
    st.text(st.one_of(st.characters(), st.characters(categories=["Cs", "Cc"])), max_size=30),
    st.sampled_from(["nan", "-inf", "1e999", "9" * 5000, "", " ", "true", "0x10", "١٢", ","]),
)


@FUZZ
@given(st.dictionaries(st.sampled_from(ENV_VARS), hostile_value, max_size=6))
def test_fuzz_settings_any_environment_gives_settings_or_an_error_naming_the_variable(
    env: dict[str, str],
) -> None:
    try:
        load_settings(SHIPPED, env=env)
    except ConfigError as exc:
        assert any(f"${name}" in str(exc) for name in env) or exc.file == str(SHIPPED), str(exc)


def test_settings_non_utf8_byte_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "vigil.yaml"
    path.write_bytes(b"data_dir: data\nshop:\n  release: v\xe91\n")
    with pytest.raises(ConfigError, match="byte 0xe9 is not UTF-8") as info:
        load_settings(path, env={})
    assert (info.value.file, info.value.line, info.value.column) == (str(path), 3, 13)


def test_config_check_cli_reports_a_non_utf8_byte_without_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "vigil.yaml"
    path.write_bytes(b"shop:\n  port: 80\xff\n")
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2:11: byte 0xff is not UTF-8" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("shop: " + "{a: " * 2000, 1, "more than 32"),
        ("shop:\n  rates: {EUR: 1, USD: .nan}\n", 2, "expected a finite decimal number"),
        ("shop:\n  gateways:\n    x: {decline_rate: .nan}\n", 3, "expected a finite number"),
        ("shop:\n  port: " + "9" * 5000 + "\n", 2, "bad value"),
        ("a: &a [*a]\n", 1, "contains it"),
        ("data_dir: !!python/name:os.system ''\n", 1, "could not determine a constructor"),
    ],
)
def test_settings_hostile_yaml_is_a_located_error(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "vigil.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message) as info:
        load_settings(path, env={})
    assert (info.value.file, info.value.line) == (str(path), line)


@pytest.mark.parametrize("name", ["a" * 300 + ".yaml", "a\x00.yaml"])
def test_settings_hostile_config_path_is_a_config_error(name: str) -> None:
    with pytest.raises(ConfigError, match="config file"):
        load_settings(name, env={})
    with pytest.raises(ConfigError, match="config file"):
        load_settings(None, env={"VIGIL_CONFIG": name})
