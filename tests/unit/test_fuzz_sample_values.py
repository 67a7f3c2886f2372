"""Sample values as text (the Elasticsearch backend, the collector's spool): every double
reads back bit for bit, and any other text is a ValueError, never another exception."""

from __future__ import annotations

import math

from fuzz_inputs import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from siem.model import STALE_NAN, from_bits, is_stale, value_bits, value_from_text, value_text

PIECES = ["nan:", "nan", "inf", "-", "+", "0x", "7ff0000000000002", "fff8", "e", ".", " ", "_"]


@FUZZ
@given(st.integers(min_value=0, max_value=2**64 - 1))
def test_fuzz_every_double_round_trips_through_text(bits: int) -> None:
    value = from_bits(bits)
    back = value_from_text(value_text(value))
    assert value_bits(back) == bits
    assert is_stale(back) == (bits == value_bits(STALE_NAN))


@FUZZ
@given(st.lists(st.sampled_from(PIECES) | st.text(max_size=8), max_size=8).map("".join))
def test_fuzz_value_text_reader_takes_any_text(text: str) -> None:
    try:
        value = value_from_text(text)
    except ValueError:
        return
    assert isinstance(value, float)
    if text.startswith("nan:"):
        assert math.isnan(value)
