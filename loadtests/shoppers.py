"""Who the simulated shoppers are: language, currency, card, client IP, e-mail.

The shop's fraud check declines a card after 5 payment attempts and a client IP
after 20 within 10 minutes. A load test is not fraud, so every shopper gets its
own card (a valid, non-sandbox number with its own expiry) and its own client
IP, sent as ``X-Forwarded-For`` (believed from loopback, where locust and
haproxy run), and takes a fresh identity after ``PAYMENTS_PER_IDENTITY``
payments. Kept free of locust so it is tested as plain code.
"""

from __future__ import annotations

import datetime as dt
import itertools
import random
from dataclasses import dataclass

LANGUAGES = ("en", "de", "pl", "zh")
CURRENCIES = ("EUR", "USD", "PLN", "CNY")
GATEWAYS = ("stripe", "adyen", "payu")
COUPON = "WELCOME10"

# Below both fraud limits (5 per card, 20 per IP) with room to spare.
PAYMENTS_PER_IDENTITY = 4

# Words of the seeded catalogue's names in each language.
SEARCH_TERMS: dict[str, tuple[str, ...]] = {
    "en": ("headphones", "smartwatch", "lamp", "coffee", "sweater", "running shoes", "bottle"),
    "de": ("kopfhörer", "stehlampe", "kaffeebereiter", "pullover", "laufschuhe", "teddybär"),
    "pl": ("słuchawki", "lampa", "kawy", "sweter", "buty", "butelka", "historia"),
    "zh": ("耳机", "智能手表", "落地灯", "咖啡", "羊毛衫", "跑步鞋", "泰迪熊"),
}

# Last four digits the shop's gateways treat as sandbox cards (decline, error).
_SANDBOX_ENDINGS = ("0002", "0119")
_BIN = "424242"

_serials = itertools.count(1)


@dataclass(frozen=True)
class Identity:
    """One shopper as the shop sees them at checkout."""

    serial: int
    client_ip: str
    email: str
    card_number: str
    card_expiry: str
    holder: str

    def card(self) -> dict[str, str]:
        """The ``card`` object of ``POST /api/checkout``."""
        return {
            "number": self.card_number,
            "expiry": self.card_expiry,
            "cvc": "123",
            "holder": self.holder,
        }


def luhn_check_digit(partial: str) -> str:
    """The digit that makes ``partial + digit`` pass the Luhn check."""
    total = 0
    for i, ch in enumerate(reversed(partial)):
        d = int(ch)
        if i % 2 == 0:  # doubled: these are the odd positions once the check digit is appended
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def card_number(rng: random.Random) -> str:
    """A Luhn-valid 16-digit Visa number that no gateway treats as a sandbox card."""
    while True:
        partial = _BIN + "".join(rng.choice("0123456789") for _ in range(9))
        number = partial + luhn_check_digit(partial)
        if not number.endswith(_SANDBOX_ENDINGS):
            return number


def client_ip(serial: int) -> str:
    """A distinct private address per serial: 10.x.y.z, never .0 or .255 in the last octet."""
    n = serial % (256 * 256 * 254)
    return f"10.{n // (256 * 254)}.{n // 254 % 256}.{n % 254 + 1}"


def new_identity(rng: random.Random, today: dt.date | None = None) -> Identity:
    """A fresh shopper: next serial, own client IP, own card expiring 1 to 8 years ahead."""
    serial = next(_serials)
    year = (today or dt.date.today()).year + rng.randint(1, 8)
    return Identity(
        serial=serial,
        client_ip=client_ip(serial),
        email=f"shopper{serial}@loadtest.example",
        card_number=card_number(rng),
        card_expiry=f"{rng.randint(1, 12):02d}/{year % 100:02d}",
        holder=f"Load Shopper {serial}",
    )
