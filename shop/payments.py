"""Payment cards and the simulated gateways (stripe, adyen, payu).

A card number lives only inside ``parse_card``: the returned ``CardData``
keeps the BIN, the last four digits and the expiry, which is all the shop may
store or log (PCI DSS 3.4: the PAN is never kept). Error messages name the
field and never echo what was typed.

The gateways behave like real sandboxes: latency, a share of declines and of
errors from the settings, and deterministic test cards independent of those
rates — a number ending in 0002 is always declined, one ending in 0119 always
fails with a processing error. Example::

    card = parse_card({"number": "4242 4242 4242 4242", "expiry": "12/30", "cvc": "123"})
    result = authorise(shop, "stripe", card, amount=Decimal("9.99"), currency="EUR",
                       order_id="x1", client_ip="203.0.113.9")
"""

from __future__ import annotations

import datetime as dt
import logging
import random
import re
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from shop import metrics
from shop.validation import ApiError

if TYPE_CHECKING:
    from shop.context import ShopContext

# Seedable source of the simulated declines, errors and jitter (tests call ``seed``).
rng = random.Random()

DECLINE_SUFFIX = "0002"
ERROR_SUFFIX = "0119"

_EXPIRY = re.compile(r"^(\d{2})\s*/\s*(\d{2})$")
_CVC = re.compile(r"^\d{3,4}$")
_SEPARATORS = re.compile(r"[\s-]")


def seed(value: int) -> None:
    """Make the gateways' random outcomes repeatable."""
    rng.seed(value)


def luhn_ok(digits: str) -> bool:
    """True when ``digits`` passes the Luhn (mod 10) check.

    >>> luhn_ok("4242424242424242"), luhn_ok("4242424242424241")
    (True, False)
    """
    if not digits.isdigit():
        return False
    total = 0
    for i, char in enumerate(reversed(digits)):
        n = int(char)
        if i % 2 == 1:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return total % 10 == 0


def mask(card_bin: str, last4: str) -> str:
    """How a card is shown: ``424242******4242``."""
    return f"{card_bin}******{last4}"


@dataclass(frozen=True)
class CardData:
    """What the shop keeps of a card: never the full number."""

    bin: str
    last4: str
    expiry: str

    @property
    def card_ref(self) -> str:
        """Identifies a card for velocity checks without the PAN."""
        return f"{self.bin}…{self.last4}:{self.expiry}"

    @property
    def masked(self) -> str:
        return mask(self.bin, self.last4)


def _card_error(field: str, message: str, code: str = "invalid_card") -> ApiError:
    return ApiError(400, code, message, f"card.{field}")


def parse_card(data: Any, *, today: dt.date | None = None) -> CardData:
    """Validate card input ``{"number", "expiry": "MM/YY", "cvc", "holder"}``.

    Raises a 400 naming the field (``card.number`` …); messages never contain
    the number. Only the BIN, last four and expiry survive this function.
    """
    if not isinstance(data, dict):
        raise ApiError(
            400,
            "invalid_type",
            "'card' must be an object with number, expiry, cvc and holder",
            "card",
        )
    number = data.get("number")
    if number is None:
        raise _card_error("number", "'card.number' is required", "missing_field")
    if not isinstance(number, str):
        raise _card_error("number", "'card.number' must be a string of digits", "invalid_type")
    digits = _SEPARATORS.sub("", number)
    if not digits.isdigit() or not 12 <= len(digits) <= 19:
        raise _card_error(
            "number", "the card number must have 12 to 19 digits (spaces and dashes are allowed)"
        )
    if not luhn_ok(digits):
        raise _card_error("number", "the card number is not valid; check it for typos")
    expiry = _parse_expiry(data.get("expiry"), today or dt.datetime.now(dt.UTC).date())
    cvc = data.get("cvc")
    if not isinstance(cvc, str) or not _CVC.match(cvc.strip()):
        raise _card_error("cvc", "'card.cvc' must be the 3 or 4 digits on the card")
    holder = data.get("holder")
    if holder is not None and (not isinstance(holder, str) or len(holder.strip()) > 120):
        raise _card_error("holder", "'card.holder' must be a name of at most 120 characters")
    return CardData(bin=digits[:6], last4=digits[-4:], expiry=expiry)


def _parse_expiry(value: Any, today: dt.date) -> str:
    match = _EXPIRY.match(value.strip()) if isinstance(value, str) else None
    if match is None or not 1 <= int(match.group(1)) <= 12:
        raise _card_error("expiry", "'card.expiry' must be MM/YY, e.g. 08/29")
    month, year = int(match.group(1)), 2000 + int(match.group(2))
    # A card is valid through the last day of its expiry month.
    if (year, month) < (today.year, today.month):
        raise _card_error("expiry", "the card has expired", "card_expired")
    return f"{month:02d}/{year % 100:02d}"


@dataclass(frozen=True)
class Authorisation:
    """A gateway's answer: outcome approved, declined or error, and why."""

    gateway: str
    outcome: str
    reason: str
    duration_ms: int
    http_status: int = 0  # for errors: 502 gateway error, 503 gateway unavailable

    @property
    def approved(self) -> bool:
        return self.outcome == "approved"


def _decide(shop: ShopContext, gateway: str, card: CardData) -> tuple[str, str, int]:
    if gateway in shop.faults.current().gateway_outage:
        return "error", "gateway_unavailable", 503
    config = shop.settings.shop.gateways[gateway]
    if config.latency_ms:
        time.sleep(config.latency_ms / 1000.0)
    if card.last4 == DECLINE_SUFFIX:
        return "declined", "card_declined", 0
    if card.last4 == ERROR_SUFFIX:
        return "error", "processing_error", 502
    if rng.random() < shop.release.payment_error_rate:
        return "error", "gateway_internal_error", 502
    if rng.random() < config.error_rate:
        return "error", "gateway_internal_error", 502
    if rng.random() < config.decline_rate:
        return "declined", "do_not_honor", 0
    return "approved", "", 0


def authorise(
    shop: ShopContext,
    gateway: str,
    card: CardData,
    *,
    amount: Decimal,
    currency: str,
    order_id: str,
    client_ip: str,
) -> Authorisation:
    """Ask the simulated ``gateway`` to authorise ``amount``; time, count and log it."""
    started = time.perf_counter()
    outcome, reason, status = _decide(shop, gateway, card)
    elapsed = time.perf_counter() - started
    metrics.PAYMENT_DURATION.labels(gateway).observe(elapsed)
    result = Authorisation(gateway, outcome, reason, int(elapsed * 1000), status)
    log_payment(
        shop,
        result,
        card,
        amount=amount,
        currency=currency,
        order_id=order_id,
        client_ip=client_ip,
        duration_ns=int(elapsed * 1e9),
    )
    return result


def log_payment(
    shop: ShopContext,
    result: Authorisation,
    card: CardData,
    *,
    amount: Decimal,
    currency: str,
    order_id: str,
    client_ip: str,
    duration_ns: int = 0,
) -> None:
    """Count the attempt in ``shop_payments`` and write its ``shop.payment`` event."""
    metrics.PAYMENTS.labels(result.gateway, result.outcome).inc()
    message = f"payment {result.outcome} by {result.gateway} for order {order_id}"
    if result.reason:
        message += f": {result.reason}"
    shop.logs.payment(
        message,
        level=logging.WARNING if result.outcome == "error" else logging.INFO,
        **{
            "event.kind": "event",
            "event.action": "payment-authorisation",
            "event.outcome": "success" if result.approved else "failure",
            "event.reason": result.reason or None,
            "event.duration": duration_ns,
            "source.ip": client_ip,
            "labels.gateway": result.gateway,
            "labels.payment_outcome": result.outcome,
            "labels.card_bin": card.bin,
            "labels.card_last4": card.last4,
            "labels.amount": str(amount),
            "labels.currency": currency,
            "labels.order_id": order_id,
            "labels.release": shop.release.name,
        },
    )
