"""Any bytes given to the PostgreSQL and Python parsers, or grouped, give Events or LineErrors."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from fuzz_inputs import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from collectors import multiline
from collectors.errors import LineError
from collectors.multiline import Grouped
from collectors.parsers import PARSERS
from siem.model import Event

FILES = Path(__file__).resolve().parent.parent / "files"
SEEDS = {
    "postgresql": (FILES / "postgresql-jsonlog.json").read_bytes().splitlines(),
    "postgresql_stderr": (FILES / "postgresql-stderr.log").read_bytes().splitlines(),
    "python": (FILES / "gunicorn-error.log").read_bytes().splitlines(),
}
PIECES = [b"\xff", b"\x00", b"\t", b"\n", b":  ", b"[", b"]", b"@", b'"', b"{", b"}", b"9" * 25]


@st.composite
def mutated(draw: st.DrawFn, parser: str) -> bytes:
    """A few real lines (joined, as the tailer groups them) with a slice replaced."""
    if draw(st.booleans()):
        return draw(st.binary(max_size=300))
    seeds = SEEDS[parser]
    start = draw(st.integers(0, len(seeds) - 1))
    text = b"\n".join(seeds[start : start + draw(st.integers(1, 4))])
    at = draw(st.integers(0, len(text)))
    end = draw(st.integers(at, min(len(text), at + 20)))
    return text[:at] + draw(st.sampled_from(PIECES) | st.binary(max_size=8)) + text[end:]


@pytest.mark.parametrize("parser", sorted(SEEDS))
@FUZZ
@given(data=st.data())
def test_fuzz_pglogs_any_bytes_give_event_or_line_error(parser: str, data: st.DataObject) -> None:
    raw = data.draw(mutated(parser))
    parse = PARSERS[parser]
    if isinstance(parse, Grouped):
        # Grouping never loses or reorders a line, whatever the lines are.
        lines = [(i, line) for i, line in enumerate(raw.split(b"\n")) if line.strip()]
        groups, held = multiline.split(lines, parse.rule, max_bytes=4096, complete=True)
        assert held is None
        assert [line for g in groups for line in g.lines] == [line for _, line in lines]
    try:
        event = parse(raw, source="f", position=7, offset=0, now=1e9)
    except LineError:
        return
    assert isinstance(event, Event)
    assert event.dataset
    orjson.dumps(event.doc)  # storable as strict JSON (no NaN, no lone surrogate)
