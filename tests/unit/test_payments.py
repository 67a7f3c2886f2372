"""Card parsing, the Luhn check and masking: no PAN survives, no message echoes it."""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest

from shop.payments import CardData, luhn_ok, mask, parse_card
from shop.validation import ApiError

TODAY = dt.date(2026, 5, 15)
VISA = "4242424242424242"


def card(**overrides: object) -> dict[str, object]:
    rv: dict[str, object] = {"number": VISA, "expiry": "12/30", "cvc": "123", "holder": "Ann Lee"}
    rv.update(overrides)
    return rv


@pytest.mark.parametrize(
    ("number", "valid"),
    [
        ("4242424242424242", True),
        ("5555555555554444", True),
        ("378282246310005", True),  # Amex, 15 digits
        ("4000000000000002", True),
        ("4000000000000119", True),
        ("4242424242424241", False),
        ("1234567812345678", False),
        ("0000000000000000", True),
        ("79927398713", True),
        ("79927398710", False),
        ("42424242x4242424", False),
    ],
)
def test_luhn_ok_known_numbers(number: str, valid: bool) -> None:
    assert luhn_ok(number) is valid


def test_parse_card_keeps_only_bin_last4_expiry() -> None:
    data = parse_card(card(number="4242 4242-4242 4242"), today=TODAY)
    assert data == CardData(bin="424242", last4="4242", expiry="12/30")
    assert data.card_ref == "424242…4242:12/30"
    assert data.masked == "424242******4242"
    stored = repr(dataclasses.astuple(data)) + repr(data)
    assert VISA not in stored
    assert "4242424242" not in stored.replace("…", "")


def test_parse_card_holder_and_cvc_are_not_kept() -> None:
    data = parse_card(card(cvc="9876", holder="Zed"), today=TODAY)
    assert "9876" not in repr(data)
    assert "Zed" not in repr(data)


@pytest.mark.parametrize(
    ("overrides", "field", "code"),
    [
        ({"number": "4242424242424241"}, "card.number", "invalid_card"),
        ({"number": "42424242424"}, "card.number", "invalid_card"),
        ({"number": "42424242424242424242"}, "card.number", "invalid_card"),
        ({"number": "4242abcd42424242"}, "card.number", "invalid_card"),
        ({"number": 4242424242424242}, "card.number", "invalid_type"),
        ({"number": None}, "card.number", "missing_field"),
        ({"expiry": "13/30"}, "card.expiry", "invalid_card"),
        ({"expiry": "1230"}, "card.expiry", "invalid_card"),
        ({"expiry": "04/26"}, "card.expiry", "card_expired"),
        ({"expiry": None}, "card.expiry", "invalid_card"),
        ({"cvc": "12"}, "card.cvc", "invalid_card"),
        ({"cvc": "12345"}, "card.cvc", "invalid_card"),
        ({"cvc": 123}, "card.cvc", "invalid_card"),
        ({"holder": "x" * 121}, "card.holder", "invalid_card"),
    ],
)
def test_parse_card_rejects_bad_field(overrides: dict[str, object], field: str, code: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_card(card(**overrides), today=TODAY)
    assert info.value.status == 400
    assert info.value.field == field
    assert info.value.code == code
    number = overrides.get("number")
    if isinstance(number, str):
        assert number not in info.value.message
        assert number[-8:] not in info.value.message


def test_parse_card_current_month_is_still_valid() -> None:
    assert parse_card(card(expiry="05/26"), today=TODAY).expiry == "05/26"


def test_parse_card_not_an_object() -> None:
    with pytest.raises(ApiError, match="'card' must be an object") as info:
        parse_card(VISA, today=TODAY)
    assert info.value.field == "card"
    assert VISA not in info.value.message


def test_mask_shows_bin_and_last4() -> None:
    assert mask("555555", "4444") == "555555******4444"
