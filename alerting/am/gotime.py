"""Go's ``time.Time`` and ``time.Duration`` as Alertmanager's templates see them, and the time
functions of its templates (``date``, ``tz``, ``since``, ``humanizeDuration``; Alertmanager
0.27+).

A time prints as Go prints it (``2024-01-01 09:15:30 +0100 CET``), a duration too
(``1h2m3.5s``)::

    {{ .StartsAt | tz "Europe/Paris" | date "2006-01-02 15:04 MST" }}   2024-01-01 09:15 CET
    {{ .StartsAt | since | humanizeDuration }}                           1h 0m 0s
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from collections.abc import Callable
from typing import Any

from alerting.templates import TemplateError, humanize_duration, show

ZERO_TIME = dt.datetime(1, 1, 1, tzinfo=dt.UTC)
"""Go's zero ``time.Time``: a firing alert's ``.EndsAt``."""
_MAX_NS = (1 << 63) - 1
"""``time.Duration`` is an int64 of nanoseconds; ``Sub`` saturates at its bounds."""


class GoTime(dt.datetime):
    """A ``time.Time``: prints as Go does; ``.Format``, ``.Unix``, ``.UTC``, ``.IsZero``."""

    def go_method(self, name: str) -> Callable[..., Any] | None:
        methods: dict[str, Callable[..., Any]] = {
            "Format": lambda layout: go_time_format(self, str(layout)),
            "Unix": lambda: int(self.timestamp() // 1),
            "UnixMilli": lambda: int(self.timestamp() * 1000 // 1),
            "UTC": lambda: in_zone(self, dt.UTC),
            "Local": lambda: in_zone(self, None),
            "IsZero": lambda: self == ZERO_TIME,
            "String": lambda: show(self),
            "Year": lambda: self.year,
        }
        return methods.get(name)


def _as_go(moment: dt.datetime) -> GoTime:
    return GoTime(
        moment.year,
        moment.month,
        moment.day,
        moment.hour,
        moment.minute,
        moment.second,
        moment.microsecond,
        tzinfo=moment.tzinfo,
        fold=moment.fold,
    )


def go_time(seconds: float | None) -> GoTime:
    """Seconds since the epoch as a UTC ``GoTime``; None is Go's zero time."""
    return _as_go(ZERO_TIME if seconds is None else dt.datetime.fromtimestamp(seconds, tz=dt.UTC))


def in_zone(t: dt.datetime, zone: dt.tzinfo | None) -> GoTime:
    """``t.In(zone)`` (None: the process' local zone, Go's ``Local``)."""
    try:
        return _as_go(t.astimezone(zone))
    except (OverflowError, ValueError, OSError):
        # Go shows year 0 (the zero time west of UTC); Python's datetime stops at year 1.
        raise TemplateError(f"{show(t)} is out of range in that time zone") from None


_LAYOUT = re.compile(
    r"January|Jan|Monday|Mon|MST|2006|Z07:00|Z0700|Z07|-07:00|-0700|-07|[.,][09]+|"
    r"002|_2|06|01|02|03|04|05|15|PM|pm|1|2|3|4|5"
)


def _offset(t: dt.datetime, colon: bool, minutes: bool = True) -> str:
    seconds = int((t.utcoffset() or dt.timedelta()).total_seconds())
    sign = "-" if seconds < 0 else "+"
    hours, rest = divmod(abs(seconds) // 60, 60)
    if not minutes:
        return f"{sign}{hours:02d}"
    return f"{sign}{hours:02d}{':' if colon else ''}{rest:02d}"


def go_time_format(t: dt.datetime, layout: str) -> str:
    """``time.Time.Format``: ``2006-01-02 15:04:05 -0700 MST`` and the other elements of Go's
    reference time, in ``t``'s own zone."""
    utc = not (t.utcoffset() or dt.timedelta())

    def element(m: re.Match[str]) -> str:
        e = m.group(0)
        if e[0] in ".," and len(e) > 1:
            digits = f"{t.microsecond:06d}000"[: len(e) - 1]
            if e[1] == "9":
                digits = digits.rstrip("0")
                return e[0] + digits if digits else ""
            return e[0] + digits
        if e.startswith("Z0"):  # ISO 8601: Z for UTC, else as the - form
            return "Z" if utc else go_time_format(t, "-" + e[1:])
        table: dict[str, Callable[[], str]] = {
            "January": lambda: t.strftime("%B"),
            "Jan": lambda: t.strftime("%b"),
            "Monday": lambda: t.strftime("%A"),
            "Mon": lambda: t.strftime("%a"),
            "MST": lambda: t.tzname() or _offset(t, False),
            "2006": lambda: f"{t.year:04d}",
            "-07:00": lambda: _offset(t, True),
            "-0700": lambda: _offset(t, False),
            "-07": lambda: _offset(t, False, minutes=False),
            "002": lambda: f"{t.timetuple().tm_yday:03d}",
            "_2": lambda: f"{t.day:2d}",
            "06": lambda: f"{t.year % 100:02d}",
            "01": lambda: f"{t.month:02d}",
            "02": lambda: f"{t.day:02d}",
            "03": lambda: f"{(t.hour % 12) or 12:02d}",
            "04": lambda: f"{t.minute:02d}",
            "05": lambda: f"{t.second:02d}",
            "15": lambda: f"{t.hour:02d}",
            "PM": lambda: "PM" if t.hour >= 12 else "AM",
            "pm": lambda: "pm" if t.hour >= 12 else "am",
            "1": lambda: str(t.month),
            "2": lambda: str(t.day),
            "3": lambda: str((t.hour % 12) or 12),
            "4": lambda: str(t.minute),
            "5": lambda: str(t.second),
        }
        return table[e]()

    return _LAYOUT.sub(element, layout)


# --- durations -----------------------------------------------------------------------------


class GoDuration(int):
    """A ``time.Duration`` (nanoseconds): prints as ``1h2m3.5s``; ``.Seconds``, ``.Minutes``,
    ``.Hours``, ``.Milliseconds``."""

    def go_method(self, name: str) -> Callable[..., Any] | None:
        methods: dict[str, Callable[..., Any]] = {
            "Seconds": lambda: self / 1e9,
            "Minutes": lambda: self / 6e10,
            "Hours": lambda: self / 3.6e12,
            "Milliseconds": lambda: int(self / 1_000_000),
            "Nanoseconds": lambda: int(self),
            "String": self.go_string,
        }
        return methods.get(name)

    def go_string(self) -> str:
        return go_duration(int(self))


def _fraction(value: int, digits: int) -> str:
    text = f"{value:0{digits}d}".rstrip("0") if digits else ""
    return "." + text if text else ""


def go_duration(ns: int) -> str:
    """``time.Duration.String``: ``1h0m0s``, ``2.5s``, ``1.5ms``, ``100µs``, ``0s``."""
    if ns == 0:
        return "0s"
    sign, u = ("-" if ns < 0 else ""), abs(ns)
    if u < 1_000_000_000:
        digits, unit = (0, "ns") if u < 1000 else (3, "µs") if u < 1_000_000 else (6, "ms")
        whole, frac = divmod(u, 10**digits)
        return f"{sign}{whole}{_fraction(frac, digits)}{unit}"
    seconds, frac = divmod(u, 1_000_000_000)
    text = f"{seconds % 60}{_fraction(frac, 9)}s"
    minutes = seconds // 60
    if minutes:
        text = f"{minutes % 60}m{text}"
        if minutes // 60:
            text = f"{minutes // 60}h{text}"
    return sign + text


# --- the functions -------------------------------------------------------------------------


def _time(value: Any, what: str) -> dt.datetime:
    if not isinstance(value, dt.datetime):
        raise TemplateError(f"{what} needs a time (as .StartsAt), got {show(value)}")
    return value


def date(layout: Any, t: Any) -> str:
    """``date "2006-01-02" .StartsAt``: the time in Go's layout."""
    if not isinstance(layout, str):
        raise TemplateError(f"date needs a layout string, got {show(layout)}")
    return go_time_format(_time(t, "date"), layout)


def tz(name: Any, t: Any) -> GoTime:
    """``tz "Europe/Paris" .StartsAt``: the time in that zone (``time.LoadLocation``: "" and
    "UTC" are UTC, "Local" the process' zone)."""
    if not isinstance(name, str):
        raise TemplateError(f"tz needs a zone name, got {show(name)}")
    moment = _time(t, "tz")
    if name in ("", "UTC"):
        return in_zone(moment, dt.UTC)
    if name == "Local":
        return in_zone(moment, None)
    try:
        zone = zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        raise TemplateError(f"unknown time zone {name}") from None
    return in_zone(moment, zone)


def since(t: Any, now: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> GoDuration:
    """``since .StartsAt``: how long ago, a duration (saturated as Go's ``Sub``)."""
    delta = now() - _time(t, "since")
    ns = (delta.days * 86400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    return GoDuration(max(-_MAX_NS - 1, min(_MAX_NS, ns)))


def _go_parse_float(text: str) -> float:
    """``strconv.ParseFloat``, which takes neither spaces nor (decimal) underscores."""
    try:
        if text.strip() != text or "_" in text:
            raise ValueError
        return float(text)
    except ValueError:
        raise TemplateError(f'strconv.ParseFloat: parsing "{text}": invalid syntax') from None


def am_humanize_duration(value: Any) -> str:
    """Prometheus' ``humanizeDuration`` as Alertmanager has it (``ConvertToFloat``): seconds
    as a number or a string, or a duration (``since``'s)."""
    if isinstance(value, GoDuration):
        return humanize_duration(int(value) / 1e9)
    if isinstance(value, str):
        return humanize_duration(_go_parse_float(value))
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TemplateError(f"can't convert {show(value)} to float")
    return humanize_duration(value)
