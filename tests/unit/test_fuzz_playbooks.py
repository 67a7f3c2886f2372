"""Playbook files take any bytes: a ``Playbook`` or a ``PlaybookError`` naming file and line.

Hypothesis feeds random bytes, the shipped rollback playbook with hostile
pieces inserted, deep nesting, alias bombs and surrogates.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from fuzz_inputs import FUZZ, hostile_files
from hypothesis import given
from hypothesis import strategies as st

from playbooks.actions import ACTIONS
from playbooks.loader import PLAYBOOK_DIR, find_playbook, load_playbook, prepare
from playbooks.model import PlaybookError, parse_duration

SHIPPED = PLAYBOOK_DIR / "rollback-shop.yaml"
VALID = SHIPPED.read_bytes()


@FUZZ
@given(hostile_files(VALID))
def test_fuzz_playbooks_any_bytes_give_a_playbook_or_a_located_error(
    tmp_path_factory: pytest.TempPathFactory, data: bytes
) -> None:
    directory = tmp_path_factory.getbasetemp() / "fuzz-playbooks"
    directory.mkdir(exist_ok=True)
    path = directory / "rollback-shop.yaml"
    path.write_bytes(data)
    try:
        playbook = load_playbook(path)
    except PlaybookError as exc:
        assert exc.file == str(path)
        assert exc.line is not None and exc.line >= 1, str(exc)
        assert str(exc).startswith(f"{path}:{exc.line}")
    else:
        params = {p.name: p.default or "v1" for p in playbook.params}
        try:
            prepare(playbook, params)
        except PlaybookError as exc:
            assert exc.file == str(path) and exc.line is not None, str(exc)


def test_playbooks_non_utf8_byte_names_file_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "rollback-shop.yaml"
    lines = VALID.split(b"\n")
    lines[4] = lines[4].replace(b"Roll", b"R\xc3\x28oll", 1)
    path.write_bytes(b"\n".join(lines))
    with pytest.raises(PlaybookError, match="byte 0xc3 is not UTF-8") as info:
        load_playbook(path)
    assert (info.value.file, info.value.line, info.value.column) == (str(path), 5, 15)
    assert str(info.value).startswith(f"{path}:5:15: ")


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("name: drill\nsteps: " + "[" * 3000, 2, r"more than 32 '\[' or '\{' open at once"),
        ("steps: &s [{name: a, action: report, with: *s}]\nname: drill\n", 1, "contains it"),
        ("name: drill\nsteps:\n  - {name: a, action: report, timeout: !!int soon}\n", 3, "soon"),
        ("name: drill\nsteps:\n  - {name: a, action: report, timeout: .inf}\n", 3, "at most"),
        (
            "name: drill\nsteps:\n  - {name: a, action: report, timeout: " + "9" * 400 + "}\n",
            3,
            "at most",
        ),
        ("description: no name\nsteps: []\n", 1, "name: required"),
        (
            "name: drill\nsteps:\n  - name: a\n    action: http\n"
            "    with: {url: 'http://x', expect_status: .inf}\n",
            5,
            "must be status codes",
        ),
    ],
)
def test_playbooks_hostile_yaml_is_a_located_error(
    tmp_path: Path, text: str, line: int, message: str
) -> None:
    path = tmp_path / "drill.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(PlaybookError, match=message) as info:
        load_playbook(path)
    assert (info.value.file, info.value.line) == (str(path), line)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), 10**400, "1e999s", "٣s", [1]])
def test_playbooks_duration_out_of_range_is_a_value_error(value: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(value)


yaml_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(),
        st.text(max_size=20),
        st.binary(max_size=8),
        st.sampled_from(["{{ params.release }}", "{{ nope }}", "http://x", "5s", "0s", "1e999"]),
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


@FUZZ
@given(
    st.sampled_from(sorted(ACTIONS)),
    st.dictionaries(
        st.sampled_from(
            [
                "release",
                "expr",
                "timeout",
                "interval",
                "url",
                "method",
                "expect_status",
                "body",
                "headers",
                "message",
                "title",
                "other",
            ]
        ),
        yaml_values,
        max_size=4,
    ),
)
def test_fuzz_playbooks_any_action_arguments_give_a_playbook_or_a_located_error(
    tmp_path_factory: pytest.TempPathFactory, action: str, args: dict[str, object]
) -> None:
    directory = tmp_path_factory.getbasetemp() / "fuzz-actions"
    directory.mkdir(exist_ok=True)
    path = directory / "drill.yaml"
    doc = {
        "name": "drill",
        "params": {"release": {"default": "v1"}},
        "steps": [{"name": "s", "action": action, "with": args, "timeout": "1m"}],
    }
    path.write_text(yaml.safe_dump(doc, allow_unicode=False), encoding="utf-8")
    try:
        prepare(load_playbook(path), {"release": "v1"})
    except PlaybookError as exc:
        assert exc.file == str(path) and exc.line is not None and exc.line >= 1, str(exc)


@pytest.mark.parametrize("name", ["a" * 300 + ".yaml", "a\x00.yaml", "x" * 300, "../../etc/passwd"])
def test_playbooks_find_hostile_name_is_a_playbook_error(name: str) -> None:
    with pytest.raises(PlaybookError):
        find_playbook(name)
