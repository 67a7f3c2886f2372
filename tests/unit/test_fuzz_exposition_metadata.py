"""Any text given to the scraper's metadata reader gives valid metadata, never an exception."""

from __future__ import annotations

import re

from fuzz_inputs import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from collectors.prometheus import exposition_metadata
from siem.lookups import METRIC_TYPES

SEED = (
    "# HELP a_total Requests \\\\ served\\n.\n# TYPE a_total counter\n# UNIT a_total requests\n"
    'a_total 1\n# TYPE h histogram\nh_bucket{le="+Inf"} 1\n# TYPE u untyped\n'
)
PIECES = [
    "#",
    " ",
    "\t",
    "\n",
    "\r",
    "\\",
    "HELP",
    "TYPE",
    "UNIT",
    "counter",
    "\x00",
    "\u2028",
    "1",
]
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


@st.composite
def mutated(draw: st.DrawFn) -> str:
    """The seed exposition with a slice replaced by hostile or random text, or random text."""
    if draw(st.booleans()):
        return draw(st.text(max_size=300))
    start = draw(st.integers(0, len(SEED)))
    end = draw(st.integers(start, min(len(SEED), start + 20)))
    piece = draw(st.sampled_from(PIECES) | st.text(max_size=8))
    return SEED[:start] + piece + SEED[end:]


@FUZZ
@given(text=mutated())
def test_fuzz_exposition_metadata_gives_valid_families(text: str) -> None:
    found = exposition_metadata(text)
    assert len({m.metric for m in found}) == len(found)  # one entry per family
    for item in found:
        assert NAME.fullmatch(item.metric)
        assert item.type in METRIC_TYPES
        assert "\n" not in item.unit
