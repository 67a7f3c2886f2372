"""Alertmanager's time functions in notification templates (``date``, ``tz``, ``since``,
``humanizeDuration``) and Go's printing of times and durations.

The cases marked "Alertmanager" are ``TestTemplateFuncs`` of Alertmanager's
template/template_test.go (Apache-2.0), with its data and its expected text; Debian's
amtool (0.25) predates these functions, so they are not in the amtool comparison.
"""

from __future__ import annotations

import datetime as dt

import pytest

from alerting.am.gotime import GoDuration, go_duration, go_time, since
from alerting.am.templates import NotificationTemplates, check_field
from alerting.templates import TemplateError


class Dot:
    """A template's dot holding one value as ``.V`` (Alertmanager's tests pass it as dot)."""

    def __init__(self, value: object) -> None:
        self.value = value

    def go_method(self, name: str) -> object:
        return (lambda: self.value) if name == "V" else None


def render(text: str, value: object = None) -> str:
    return NotificationTemplates().render(text, Dot(value))


NEW_YEAR = go_time(dt.datetime(2024, 1, 1, 8, 15, 30, tzinfo=dt.UTC).timestamp())


@pytest.mark.parametrize(
    ("text", "value", "expected"),
    [
        # Alertmanager
        ('{{ .V | date "2006-01-02" }}', NEW_YEAR, "2024-01-01"),
        ('{{ .V | tz "Europe/Paris" }}', NEW_YEAR, "2024-01-01 09:15:30 +0100 CET"),
        (
            "{{ range .V }}{{ humanizeDuration . }}:{{ end }}",
            [0.0, 1.0, 60.0, 3600.0, 86400.0, 90000.0, -(86400.0 * 2 + 3600 * 3 + 245), 899.99],
            "0s:1s:1m 0s:1h 0m 0s:1d 0h 0m 0s:1d 1h 0m 0s:-2d 3h 4m 5s:14m 59s:",
        ),
        (
            "{{ range .V }}{{ humanizeDuration . }}:{{ end }}",
            ["0", "1", "60", "3600", "86400"],
            "0s:1s:1m 0s:1h 0m 0s:1d 0h 0m 0s:",
        ),
        (
            "{{ range .V }}{{ humanizeDuration . }}:{{ end }}",
            [0.1, 0.0001, 0.12345, 60.1, 60.5, 1.2345, 12.345],
            "100ms:100us:123.5ms:1m 0s:1m 0s:1.234s:12.35s:",
        ),
        (
            "{{ range .V }}{{ humanizeDuration . }}:{{ end }}",
            [".1", ".0001", ".12345", "60.1", "60.5", "1.2345", "12.345"],
            "100ms:100us:123.5ms:1m 0s:1m 0s:1.234s:12.35s:",
        ),
        (
            "{{ range .V }}{{ humanizeDuration . }}:{{ end }}",
            [0, -1, 1, 1234567],
            "0s:-1s:1s:14d 6h 56m 7s:",
        ),
        # Go's layouts and zones
        (
            '{{ .V | tz "America/New_York" | date "Mon Jan _2 15:04:05.000 MST 2006 Z07:00" }}',
            NEW_YEAR,
            "Mon Jan  1 03:15:30.000 EST 2024 -05:00",
        ),
        (
            '{{ with .V | tz "Asia/Kolkata" }}{{ .Format "15:04 -0700 -07:00" }}{{ end }}',
            NEW_YEAR,
            "13:45 +0530 +05:30",
        ),
        (
            '{{ (.V | tz "Europe/Paris").UTC }} {{ .V | tz "UTC" }}',
            NEW_YEAR,
            "2024-01-01 08:15:30 +0000 UTC 2024-01-01 08:15:30 +0000 UTC",
        ),
        ('{{ (.V | tz "Asia/Kolkata").Format "Jan 2, 3:04PM" }}', NEW_YEAR, "Jan 1, 1:45PM"),
        ('{{ .V | date "2006-01-02T15:04:05Z07:00" }}', NEW_YEAR, "2024-01-01T08:15:30Z"),
        (
            "{{ .V }} {{ .V.Seconds }} {{ .V.Minutes }}",
            GoDuration(90_500_000_000),
            "1m30.5s 90.5 1.5083333333333333",
        ),
        ("{{ humanizeDuration .V }}", GoDuration(90_500_000_000), "1m 30s"),
    ],
)
def test_time_functions_render_as_alertmanager(text: str, value: object, expected: str) -> None:
    assert render(text, value) == expected


def test_since_is_a_duration_until_now() -> None:
    hour_ago = go_time(dt.datetime.now(dt.UTC).timestamp() - 3600)
    assert render("{{ .V | since | humanizeDuration }}", hour_ago) == "1h 0m 0s"  # Alertmanager
    assert render("{{ since .V }}", hour_ago).startswith("1h0m0")
    # Go's Sub saturates: the zero time (a firing alert's .EndsAt) is the longest duration
    assert render("{{ since .V }}", go_time(None)) == "2562047h47m16.854775807s"
    later = dt.datetime(2024, 1, 1, 9, 0, tzinfo=dt.UTC)
    assert since(NEW_YEAR, now=lambda: later) == 44 * 60 * 10**9 + 30 * 10**9


@pytest.mark.parametrize(
    ("text", "value", "error"),
    [
        # Alertmanager
        ('{{ .V | tz "Invalid/Timezone" }}', NEW_YEAR, "unknown time zone Invalid/Timezone"),
        (
            '{{ humanizeDuration "one" }}',
            None,
            'strconv.ParseFloat: parsing "one": invalid syntax',
        ),
        ('{{ humanizeDuration " 1" }}', None, "invalid syntax"),
        ("{{ humanizeDuration true }}", None, "can't convert true to float"),
        ('{{ date "2006" "2024-01-01" }}', None, "date needs a time"),
        ('{{ .V | tz "../etc/passwd" }}', NEW_YEAR, "unknown time zone"),
        ("{{ since 3 }}", None, "since needs a time"),
    ],
)
def test_time_functions_fail_as_alertmanager(text: str, value: object, error: str) -> None:
    with pytest.raises(TemplateError, match=error):
        render(text, value)


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (1500, "1.5µs"),
        (1_500_000, "1.5ms"),
        (2_000_000_000, "2s"),
        (61_500_000_000, "1m1.5s"),
        (3_600_000_000_000, "1h0m0s"),
        (-90_000_000_000, "-1m30s"),
    ],
)
def test_durations_print_as_go(ns: int, text: str) -> None:
    assert go_duration(ns) == text


def test_time_functions_are_known_to_the_field_check() -> None:
    assert check_field('{{ .StartsAt | tz "UTC" | date "15:04" }}{{ since .EndsAt }}') == ""
