"""Any bytes given to a line parser give an Event or a LineError, nothing else."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from fuzz_inputs import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from collectors.errors import LineError
from collectors.parsers import PARSERS
from siem.model import Event

FILES = Path(__file__).resolve().parent.parent / "files"
SEEDS = {
    "haproxy": (FILES / "haproxy-httplog-syslog.log").read_bytes().splitlines()
    + (FILES / "haproxy-httplog-edge.log").read_bytes().splitlines(),
    "nginx": (FILES / "nginx-access-combined.log").read_bytes().splitlines()
    + (FILES / "nginx-access-json.log").read_bytes().splitlines(),
    "nginx_error": (FILES / "nginx-error.log").read_bytes().splitlines(),
}
PIECES = [
    b"\xff",
    b"\x00",
    b"-1",
    b"+",
    b"/",
    b":",
    b" ",
    b'"',
    b"{",
    b"}",
    b"\\x22",
    b"99999999999999999999",
]


@st.composite
def mutated(draw: st.DrawFn, parser: str) -> bytes:
    """A real line with a slice replaced by hostile or random bytes, or random bytes."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    line = draw(st.sampled_from(SEEDS.get(parser, SEEDS["nginx"])))
    start = draw(st.integers(0, len(line)))
    end = draw(st.integers(start, min(len(line), start + 20)))
    piece = draw(st.sampled_from(PIECES) | st.binary(max_size=8))
    return line[:start] + piece + line[end:]


def _check(parser: str, raw: bytes) -> None:
    try:
        event = PARSERS[parser](raw, source="f", position=7, offset=0, now=1e9)
    except LineError:
        return
    assert isinstance(event, Event)
    assert event.dataset
    orjson.dumps(event.doc)  # storable as strict JSON (no NaN, no lone surrogate)


@pytest.mark.parametrize("parser", ["haproxy", "nginx", "nginx_error"])
@FUZZ
@given(data=st.data())
def test_fuzz_parsers_any_bytes_give_event_or_line_error(parser: str, data: st.DataObject) -> None:
    _check(parser, data.draw(mutated(parser)))
