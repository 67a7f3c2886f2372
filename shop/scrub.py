"""Card numbers (PANs) masked out of everything the shop logs.

PCI DSS (requirement 3.4) allows at most the BIN (first six digits) and the
last four of a card number to be shown; the shop never writes more, even when
a client puts a whole card number in a URL, a query string or a form field
that ends up in a message.

What counts as card-number-like: a run of 13 to 19 digits, optionally
separated by single spaces or dashes (``4111 1111 1111 1111``,
``4111-1111-1111-1111``; in URLs also ``+`` and ``%20``), bounded by
non-digits. Luhn-valid or not: a card number with one digit mistyped still
gives away all the others, and the checksum would only spare the odd 13-digit
millisecond timestamp, which then keeps its first six and last four digits
anyway. Longer digit runs are masked too, because a PAN glued to an expiry or
a CVC is still a PAN. Digits are masked in place, separators kept, so the
text around a run keeps its shape.

Example::

    scrub_pan("GET /pay?card=4111111111111111")[0]  # 'GET /pay?card=411111******1111'
    scrub_pan("4111-1111-1111-1111")[0]  # '4111-11**-****-1111'
"""

from __future__ import annotations

import re
from typing import Any

# A separator is one space or dash, also as a URL writes it ("+", "%20"); the
# lookarounds make a match the whole run, never a 19-digit slice of a longer one.
_SEP = r"(?:[ +-]|%20)"
_PAN_RE = re.compile(
    rf"(?<![0-9])(?<![0-9][ +-])(?<![0-9]%20)[0-9](?:{_SEP}?[0-9]){{12,}}(?!{_SEP}?[0-9])"
)
_MIN_DIGITS = 13
# A run's pieces: one digit, or one separator ("%20" whole).
_PART_RE = re.compile(r"[0-9]|%20|[ +-]")
# Cheap pre-check: most strings have no run of 13 digits at all.
_DIGITS_RE = re.compile(r"[0-9]")


def _mask(match: re.Match[str]) -> str:
    # In place, separators kept: "4111 1111 1111 1111 404" (a path, then a status)
    # is one run to the regex, and the status must survive it.
    parts = _PART_RE.findall(match.group())
    total = sum(part.isdigit() for part in parts)
    out: list[str] = []
    seen = 0
    for part in parts:
        if part.isdigit():
            seen += 1
            out.append(part if seen <= 6 or seen > total - 4 else "*")
        else:
            out.append(part)
    return "".join(out)


def scrub_pan(text: str) -> tuple[str, int]:
    """``text`` with every card-number-like run masked, and how many were masked."""
    if len(_DIGITS_RE.findall(text)) < _MIN_DIGITS:
        return text, 0
    return _PAN_RE.subn(_mask, text)


def scrub_value(value: Any) -> tuple[Any, int]:
    """A log field's value with card numbers masked in every string inside it.

    Strings, lists, tuples and dict values (and keys) are walked; numbers are
    left alone: an ``int`` field is the shop's own (a duration, a status), not
    client text.
    """
    if isinstance(value, str):
        return scrub_pan(value)
    if isinstance(value, dict):
        total = 0
        rv: dict[Any, Any] = {}
        for key, item in value.items():
            clean_key, n_key = scrub_value(key)
            clean_item, n_item = scrub_value(item)
            rv[clean_key] = clean_item
            total += n_key + n_item
        return rv, total
    if isinstance(value, (list, tuple)):
        items = [scrub_value(item) for item in value]
        return [item for item, _ in items], sum(n for _, n in items)
    return value, 0
