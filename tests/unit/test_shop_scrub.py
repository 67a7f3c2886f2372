"""Card numbers masked out of log text: which digit runs count, what is kept."""

from __future__ import annotations

import pytest

from shop.scrub import scrub_pan, scrub_value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4111111111111111", "411111******1111"),
        ("card=4111 1111 1111 1111&x=1", "card=4111 11** **** 1111&x=1"),
        ("/pay/4111-1111-1111-1111/", "/pay/4111-11**-****-1111/"),
        # Luhn-invalid: masked too, a typo still gives the other digits away.
        ("4111111111111112", "411111******1112"),
        # 13 (shortest PAN) and 19 digits (longest).
        ("n4222222222222x", "n422222***2222x"),
        ("6011000990139424123", "601100*********4123"),
        # Longer runs: a PAN glued to its CVC is still a PAN.
        ("41111111111111111234", "411111**********1234"),
        ("Amex 3782 822463 10005.", "Amex 3782 82**** *0005."),
        # As URLs write spaces.
        ("q=5500+0000+0000+0005&x", "q=5500+00**+****+0005&x"),
        ("/q/5500%200000%200000%200005", "/q/5500%2000**%20****%200005"),
        # A status after a path: one run, masked in place, the status keeps its digits.
        ("GET /o/4111111111111111 404", "GET /o/411111*********1 404"),
    ],
)
def test_scrub_pan_masks_card_numbers(text: str, expected: str) -> None:
    rv, count = scrub_pan(text)
    assert rv == expected
    assert count == 1


@pytest.mark.parametrize(
    "text",
    [
        "order 123456789012 shipped",  # 12 digits
        "+49 170 1234567",  # a phone number, 12 digits
        "2026-11-29 22:41:07.123456",  # separators only between single digits count
        "cart 3f2b8c1e-5d4a-4c2e-9b1a-7e6f5d4c3b2a",
        "1 2  3 4 5 6 7 8 9 0 1 2 3",  # two spaces break the run
        "",
    ],
)
def test_scrub_pan_leaves_other_text(text: str) -> None:
    assert scrub_pan(text) == (text, 0)


def test_scrub_pan_counts_each_run() -> None:
    rv, count = scrub_pan("4111111111111111 and 5500-0000-0000-0004")
    assert rv == "411111******1111 and 5500-00**-****-0004"
    assert count == 2


def test_scrub_value_walks_nested_fields() -> None:
    value = {
        "names": {"en": "x 4111111111111111"},
        "4111111111111111": [1, "5500000000000004", ("3782822463100050",)],
        "n": 4111111111111111,
    }
    rv, count = scrub_value(value)
    assert rv == {
        "names": {"en": "x 411111******1111"},
        "411111******1111": [1, "550000******0004", ["378282******0050"]],
        # Numbers are the shop's own values, not client text.
        "n": 4111111111111111,
    }
    assert count == 4


def test_scrub_pan_long_digit_text_is_linear() -> None:
    # 100 000 digits and separators: one run, masked, without backtracking blow-up.
    text = "1 2-" * 25_000
    rv, count = scrub_pan(text)
    assert count == 1
    assert rv.startswith("1 2-1 2-1 2-* *-") and rv.endswith("* *-1 2-1 2-")
