"""Durations and byte sizes as Prometheus writes them: ``15d``, ``1h30m``, ``512MB``.

>>> parse_duration("1h30m"), format_duration(5400.0)
(5400.0, '1h30m')
>>> parse_bytes("512MB"), format_bytes(536870912)
(536870912, '512MiB')
"""

from __future__ import annotations

import re

_DURATION = re.compile(
    r"(?:(\d+)y)?(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?(?:(\d+)ms)?", re.ASCII
)
_UNITS = (365 * 86400, 7 * 86400, 86400, 3600, 60, 1, 0.001)
_UNIT_NAMES = ("y", "w", "d", "h", "m", "s", "ms")
MAX_DIGITS = 15
"""Longest number of a unit: beyond it a duration or size means nothing (and floats round)."""


def parse_duration(text: str) -> float:
    """A Prometheus duration (``30s``, ``1m30s``, ``15d``, ``1y``, ``250ms``) in seconds.

    Units go from the largest to the smallest, each at most once, as in Prometheus;
    ``0`` is the one duration written without a unit.
    Raises ``ValueError`` saying how to write one.

    >>> parse_duration("1m30s")
    90.0
    """
    stripped = text.strip()
    if stripped == "0":
        return 0.0  # Prometheus' only duration without a unit
    match = _DURATION.fullmatch(stripped) if stripped else None
    groups = match.groups() if match is not None else ()
    if not any(groups) or any(len(g or "") > MAX_DIGITS for g in groups):
        raise ValueError(f"bad duration {text!r}; write it like 30s, 5m, 12h, 15d or 1h30m")
    return float(sum(int(g) * unit for g, unit in zip(groups, _UNITS, strict=True) if g))


def format_duration(seconds: float) -> str:
    """The Prometheus form of ``seconds`` (whole milliseconds), largest units first, weeks
    written as days (``15d``, not ``2w1d``); ``0s``.

    >>> format_duration(30 * 86400)
    '30d'
    """
    left = round(seconds * 1000)
    if left <= 0:
        return "0s"
    parts = []
    for unit, name in zip(_UNITS, _UNIT_NAMES, strict=True):
        if name == "w":
            continue
        size = round(unit * 1000)
        if left >= size:
            count, left = divmod(left, size)
            parts.append(f"{count}{name}")
    return "".join(parts)


_BYTES = re.compile(r"(\d+)\s*([KMGTPE]?)(i?B)?", re.ASCII | re.IGNORECASE)
_POWERS = {"": 0, "K": 1, "M": 2, "G": 3, "T": 4, "P": 5, "E": 6}


def parse_bytes(text: str) -> int:
    """A size as Prometheus' ``--storage.tsdb.retention.size`` takes it, in bytes.

    ``512MB``, ``10GB``, ``1TB`` (units of 1024, as Prometheus counts them; ``MiB``
    and the like mean the same) or a plain number of bytes. Raises ``ValueError``.

    >>> parse_bytes("10GB")
    10737418240
    """
    match = _BYTES.fullmatch(text.strip())
    if match is None or len(match.group(1)) > MAX_DIGITS:
        raise ValueError(f"bad size {text!r}; write it like 500MB, 10GB or 1TB (or bytes)")
    number, prefix, suffix = match.groups()
    if prefix and suffix is None:  # "10G": say the unit
        raise ValueError(f"bad size {text!r}; write it like 500MB, 10GB or 1TB (or bytes)")
    return int(number) * 1024 ** _POWERS[prefix.upper()]


def format_bytes(size: int) -> str:
    """``size`` in the largest binary unit it is a whole multiple of (``512MiB``), or with
    one decimal (``1.5GiB``) when it is not.

    >>> format_bytes(1536)
    '1.5KiB'
    """
    if size < 1024:
        return f"{size}B"
    for name in ("E", "P", "T", "G", "M", "K"):
        unit = 1024 ** _POWERS[name]
        if size >= unit:
            value = size / unit
            text = f"{size // unit}" if size % unit == 0 else f"{value:.1f}"
            return f"{text}{name}iB"
    return f"{size}B"  # pragma: no cover - unreachable
