"""Rule files and annotation templates take any bytes: groups, or issues with file:line.

Hypothesis feeds random bytes, the shipped rule file with hostile pieces
inserted, deep nesting, alias bombs and surrogates; nothing but ``RuleError``
(from ``load_rules``) or ``TemplateError`` (from ``check_template``) may escape.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest
from fuzz_inputs import FUZZ, hostile_files
from hypothesis import given
from hypothesis import strategies as st

from alerting.rules import Issue, RuleError, check_files, load_rules, parse_file
from alerting.templates import FUNCTIONS, TemplateError, check_template, render
from vigil.safeyaml import MAX_FILE_BYTES

SHIPPED = Path(__file__).parents[2] / "config" / "rules" / "shop.yaml"
VALID = SHIPPED.read_bytes()


def _assert_located(issues: list[Issue], path: Path) -> None:
    for issue in issues:
        assert issue.file == str(path)
        assert issue.line >= 1
        assert str(issue).startswith(f"{path}:{issue.line}")


@FUZZ
@given(hostile_files(VALID))
def test_fuzz_rules_any_bytes_give_groups_or_located_issues(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    path = tmp_path_factory.getbasetemp() / "fuzz-rules.yaml"
    path.write_bytes(data)
    groups, issues = parse_file(path)  # load_rules raises RuleError with the errors here
    _assert_located(issues, path)
    assert all(rule.file == str(path) for group in groups for rule in group.rules)


TEMPLATE_WORDS = [
    *FUNCTIONS,
    "$value",
    "$labels",
    "$labels.instance",
    ".Value",
    ".Labels.job",
    "|",
    "1e400",
    "-1",
    "nan",
    '"%c"',
    '"%d %s"',
    '"%*d"',
    '"%(x)s"',
    '"\\x41\\u00e9"',
    '"\\q"',
    '"\\x"',
    "`raw`",
    '"',
    "{{",
    "}}",
    "-",
    "if",
    "else",
    "end",
    "with",
    "range",
    "define",
    "template",
    '"x"',
    "$x",
    ":=",
    "=",
    "(",
    ")",
    ".",
    ",",
    "$",
    "/*",
    "*/",
]
templates = st.one_of(
    st.text(max_size=120),
    st.lists(st.sampled_from(TEMPLATE_WORDS), min_size=1, max_size=6).map(
        lambda words: "{{ " + " ".join(words) + " }}"
    ),
    st.sampled_from(["{{", "{{ $value }}", '{{ "\\x41" }}', "{{- $value -}}"]),
    st.lists(
        st.sampled_from(
            [
                "{{ if $value }}",
                "{{ else }}",
                "{{ end }}",
                "{{ range query `up` }}",
                "{{ with $labels.job }}",
                '{{ define "t" }}',
                '{{ template "t" . }}',
                "{{ $x := 1 }}",
                "{{ .Labels }}",
                "text",
            ]
        ),
        max_size=8,
    ).map("".join),
)


@FUZZ
@given(templates)
def test_fuzz_templates_check_raises_only_template_error_and_render_never_raises(
    text: str,
) -> None:
    template = "{{ " + text + " }}" if "{{" not in text else text
    with contextlib.suppress(TemplateError):
        check_template(template)
    for value in (0.0, -1.5, 1e308, float("nan"), float("inf"), 1e20):
        assert isinstance(render(template, {"instance": "a\udc80b"}, value), str)


@pytest.mark.parametrize(
    "template",
    [
        '{{ "\\x" }}',
        '{{ "\\N{BULLET}" }}',
        '{{ "\\ud800" }}',
        '{{ "\\U00110000" }}',
    ],
)
def test_templates_bad_escape_is_a_template_error(template: str) -> None:
    with pytest.raises(TemplateError, match=r"escape|not a character"):
        check_template(template)


def test_templates_go_escapes_are_read() -> None:
    assert render('{{ "a\\tb\\x41\\u00e9\\"" }}', {}, 0.0) == 'a\tbAé"'


@pytest.mark.parametrize("value", [1e300, -1e300])
def test_templates_timestamp_out_of_range_renders_an_error_text(value: float) -> None:
    assert render("{{ $value | humanizeTimestamp }}", {}, value).startswith(
        "<error expanding template: error calling humanizeTimestamp: out of range"
    )
    # NaN and infinities print as numbers, as in Prometheus
    assert render("{{ $value | humanizeTimestamp }}", {}, float("nan")) == "NaN"


def test_rules_non_utf8_byte_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    text = VALID.split(b"\n")
    text[5] = text[5] + b" \xff"
    path.write_bytes(b"\n".join(text))
    with pytest.raises(RuleError) as info:
        load_rules([path])
    (issue,) = info.value.issues
    assert (issue.file, issue.line) == (str(path), 6)
    assert issue.column == len(text[5])
    assert "byte 0xff is not UTF-8" in issue.message and "save the file as UTF-8" in issue.message


def test_rules_file_over_the_size_limit_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    with path.open("wb") as fh:
        fh.write(VALID + b"#" * (MAX_FILE_BYTES - len(VALID)) + b"\n# one byte too many\n")
    (issue,) = check_files([path])
    assert issue.file == str(path) and "larger than 256 KiB" in issue.message


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("groups: " + "[" * 200_000, 1, r"more than 32 '\[' or '\{' open at once"),
        (
            "groups:\n" + "".join("  " * i + f"k{i}:\n" for i in range(1, 100)),
            32,
            "nested more than 32",
        ),
        (
            "groups:\n"
            + "".join("  " * i + f"k{i}:\n" for i in range(1, 20))
            + "  " * 20
            + "[" * 20,
            21,
            "nested more than 32 levels",
        ),
        (
            "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{b}: &{b} [{', '.join([f'*{a}'] * 10)}]\n"
                for a, b in zip("abcdef", "bcdefg", strict=True)
            )
            + "groups: *g\n",
            6,
            "more than 200000 values once aliases are expanded",
        ),
        ("groups: &g [{name: g, rules: *g}]", 1, "refers to a mapping or list that contains it"),
        ("groups:\n  - name: g\n    interval: !!int five\n    rules: []\n", 3, "bad value 'five'"),
        ("groups:\n  - name: 2026-13-45\n    rules: []\n", 2, "month must be in 1..12"),
        ("groups:\n  - name: g\n    rules: []\n  - name: \x00\n", 4, "not valid YAML"),
        ("groups:\n  - {? [a]: b}\n", 2, "a key must be a plain value"),
    ],
)
def test_rules_hostile_yaml_is_a_located_issue(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(RuleError, match=message) as info:
        load_rules([path])
    assert (info.value.issues[0].file, info.value.issues[0].line) == (str(path), line)


RULE_TEST = (
    Path(__file__).parents[2] / "config" / "rules" / "tests" / "postgres_test.yml"
).read_bytes()


@FUZZ
@given(hostile_files(RULE_TEST))
def test_fuzz_rule_test_files_give_a_verdict_never_an_exception(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    from alerting.ruletest import test_file

    base = tmp_path_factory.getbasetemp()
    (base / "postgres.yaml").write_bytes(SHIPPED.parent.joinpath("postgres.yaml").read_bytes())
    path = base / "fuzz_test.yml"
    path.write_bytes(data.replace(b"../postgres.yaml", b"postgres.yaml"))
    errors = test_file(path)
    assert isinstance(errors, list) and all(isinstance(e, str) for e in errors)
