"""Currencies and prices: Decimal all the way, rounded half-up to cents.

Catalogue prices are in EUR. A price in another currency is converted per
unit and rounded once, so ``unit × quantity`` always equals the line total the
customer sees, and totals are sums of rounded lines (as on an invoice).
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import ROUND_HALF_UP, Decimal

from shop.validation import ApiError

CENT = Decimal("0.01")
BASE_CURRENCY = "EUR"


def round_money(amount: Decimal) -> Decimal:
    """Round to cents, half away from zero as shops and tax offices do."""
    return amount.quantize(CENT, rounding=ROUND_HALF_UP)


class Currencies:
    """The configured exchange rates (units per 1 EUR).

    >>> Currencies({"EUR": Decimal("1"), "PLN": Decimal("4.30")}).convert(Decimal("9.99"), "PLN")
    Decimal('42.96')
    """

    def __init__(self, rates: Mapping[str, Decimal]) -> None:
        self.rates = {code.upper(): Decimal(rate) for code, rate in rates.items()}

    @property
    def codes(self) -> list[str]:
        return sorted(self.rates)

    def check(self, code: str | None, field: str = "currency") -> str:
        """The currency code upper-cased, or a 400 naming the supported ones."""
        if code is None:
            return BASE_CURRENCY
        if not isinstance(code, str) or code.upper() not in self.rates:
            raise ApiError(
                400,
                "unknown_currency",
                f"unknown currency {code!r:.20}; use one of {', '.join(self.codes)}",
                field,
            )
        return code.upper()

    def convert(self, amount_eur: Decimal, currency: str) -> Decimal:
        """``amount_eur`` in ``currency``, rounded to cents."""
        return round_money(amount_eur * self.rates[currency])

    def to_eur(self, amount: Decimal, currency: str) -> Decimal:
        """``amount`` in ``currency`` back in EUR, rounded to cents."""
        return round_money(amount / self.rates[currency])
