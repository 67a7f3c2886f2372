"""Query-string parameters of the JSON API, read as Prometheus' HTTP API reads them."""

from __future__ import annotations

import math
import re

from siem.model import parse_timestamp
from vigil.errors import VigilError


class DashboardError(VigilError):
    """A request to the dashboards is wrong; the message says which parameter and why."""


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|w|y)")
_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
    "w": 604800.0,
    "y": 31536000.0,
}


def _invalid(name: str, raw: str, what: str) -> DashboardError:
    return DashboardError(f'invalid parameter "{name}": cannot parse "{raw}" to a valid {what}')


def parse_time(name: str, raw: str) -> float:
    """A timestamp given as Unix seconds (``1700000000.5``) or RFC 3339."""
    try:
        value = float(raw)
    except ValueError:
        try:
            return parse_timestamp(raw)
        except ValueError:
            raise _invalid(name, raw, "timestamp") from None
    if not math.isfinite(value):
        raise _invalid(name, raw, "timestamp")
    return value


def parse_duration(name: str, raw: str) -> float:
    """A duration in seconds (``15``, ``2.5``) or in PromQL form (``15s``, ``1m30s``)."""
    try:
        value = float(raw)
    except ValueError:
        pos, total = 0, 0.0
        for match in _DURATION.finditer(raw):
            if match.start() != pos:
                break
            total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
            pos = match.end()
        if pos == 0 or pos != len(raw):
            raise _invalid(name, raw, "duration") from None
        return total
    if not math.isfinite(value):
        raise _invalid(name, raw, "duration")
    return value


def parse_limit(raw: str | None, *, default: int, maximum: int) -> int:
    """A positive count, at most ``maximum``."""
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise DashboardError(f'invalid parameter "limit": "{raw}" is not an integer') from None
    if not 1 <= value <= maximum:
        raise DashboardError(f'invalid parameter "limit": must be between 1 and {maximum}')
    return value


_RELATIVE = re.compile(r"now(?:([+-])(\S+))?")


def parse_when(name: str, raw: str, now: float) -> float:
    """A time as ``parse_time`` reads it, or relative to ``now`` as Kibana writes it:
    ``now``, ``now-15m``, ``now-1h30m``, ``now+5m`` (no rounding such as ``/d``)."""
    match = _RELATIVE.fullmatch(raw.strip())
    if match is None:
        return parse_time(name, raw)
    sign, amount = match.groups()
    if sign is None:
        return now
    try:
        seconds = parse_duration(name, amount)
    except DashboardError:
        raise _invalid(name, raw, "time (absolute, or relative like now-15m)") from None
    return now - seconds if sign == "-" else now + seconds
