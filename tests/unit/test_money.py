"""Money: half-up rounding to cents and currency conversion with configured rates."""

from __future__ import annotations

from decimal import Decimal

import pytest

from shop.money import Currencies, round_money
from shop.validation import ApiError

RATES = {
    "EUR": Decimal("1"),
    "USD": Decimal("1.08"),
    "PLN": Decimal("4.30"),
    "CNY": Decimal("7.80"),
}


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        ("0.125", "0.13"),
        ("0.124", "0.12"),
        ("0.135", "0.14"),
        ("2.675", "2.68"),  # a float would say 2.67; Decimal keeps the exact half
        ("-0.125", "-0.13"),
        ("10", "10.00"),
        ("0.005", "0.01"),
    ],
)
def test_round_money_half_up(amount: str, expected: str) -> None:
    assert round_money(Decimal(amount)) == Decimal(expected)
    assert str(round_money(Decimal(amount))) == expected


def test_convert_cny_rounds_once() -> None:
    currencies = Currencies(RATES)
    # 9.99 × 7.80 = 77.922
    assert currencies.convert(Decimal("9.99"), "CNY") == Decimal("77.92")
    # 0.0625 × 7.80 = 0.4875 → 0.49 half-up
    assert currencies.convert(Decimal("0.0625"), "CNY") == Decimal("0.49")


def test_convert_pln_and_eur() -> None:
    currencies = Currencies(RATES)
    assert currencies.convert(Decimal("249.99"), "PLN") == Decimal("1074.96")
    assert currencies.convert(Decimal("249.99"), "EUR") == Decimal("249.99")


def test_to_eur_rounds_back() -> None:
    currencies = Currencies(RATES)
    assert currencies.to_eur(Decimal("77.92"), "CNY") == Decimal("9.99")
    assert currencies.to_eur(Decimal("100.00"), "USD") == Decimal("92.59")


@pytest.mark.parametrize(("given", "expected"), [("pln", "PLN"), ("CNY", "CNY"), (None, "EUR")])
def test_currencies_check_accepts(given: str | None, expected: str) -> None:
    assert Currencies(RATES).check(given) == expected


def test_currencies_check_unknown_names_supported() -> None:
    with pytest.raises(ApiError, match="use one of CNY, EUR, PLN, USD") as info:
        Currencies(RATES).check("GBP")
    assert info.value.status == 400
    assert info.value.field == "currency"
