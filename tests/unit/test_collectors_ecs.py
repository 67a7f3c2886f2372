"""ECS parsing of log lines: documents, error events, ids."""

from __future__ import annotations

import json

import pytest

from collectors.ecs import ERROR_DATASET, error_event, isoformat, parse_line
from collectors.errors import LineError

NOW = 1_700_000_000.0
SHOP_LINE = json.dumps(
    {
        "@timestamp": "2024-05-01T12:00:00.123Z",
        "log": {"level": "info"},
        "message": "GET /api/version 200",
        "event": {"dataset": "shop.access", "duration": 1200000},
        "http": {"request": {"method": "GET"}, "response": {"status_code": 200}},
    }
).encode()


def test_ecs_parse_line_keeps_fields_and_adds_file_and_offset() -> None:
    event = parse_line(SHOP_LINE, source="/d/logs/access.log", position=42, offset=42, now=NOW)
    assert event.dataset == "shop.access"
    assert event.timestamp == pytest.approx(1714564800.123)
    assert event.get("http.response.status_code") == 200
    assert event.get("log.level") == "info"
    assert event.get("log.file.path") == "/d/logs/access.log"
    assert event.get("log.offset") == 42


def test_ecs_parse_line_id_depends_on_source_and_position_only() -> None:
    a = parse_line(SHOP_LINE, source="/a.log", position=0, offset=0, now=NOW)
    again = parse_line(SHOP_LINE, source="/a.log", position=0, offset=0, now=NOW + 5)
    other = parse_line(SHOP_LINE, source="/a.log", position=10, offset=10, now=NOW)
    assert a.id == again.id
    assert a.id != other.id


def test_ecs_parse_line_without_timestamp_gets_read_time() -> None:
    event = parse_line(b'{"message": "hi"}', source="/a.log", position=0, offset=0, now=NOW)
    assert event.timestamp == NOW
    assert event.get("@timestamp") == isoformat(NOW)
    assert event.dataset == "unknown"


def test_ecs_parse_line_flat_dotted_keys_are_not_duplicated() -> None:
    raw = b'{"@timestamp": "2024-05-01T12:00:00Z", "log.offset": 7, "log": "scalar"}'
    event = parse_line(raw, source="/a.log", position=0, offset=0, now=NOW)
    assert event.doc["log.offset"] == 7
    assert event.doc["log"] == "scalar"
    assert event.doc["log.file.path"] == "/a.log"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"GET / HTTP/1.1 200", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"@timestamp": 12}', "@timestamp is int"),
        (b'{"@timestamp": "yesterday"}', "not an ISO 8601 time"),
        (b'{"a": "\xff"}', "not UTF-8"),
    ],
)
def test_ecs_parse_line_rejects_non_ecs(raw: bytes, reason: str) -> None:
    with pytest.raises(LineError, match=reason):
        parse_line(raw, source="/a.log", position=0, offset=0, now=NOW)


def test_ecs_error_event_keeps_raw_line_and_reason() -> None:
    event = error_event(b"garbage \xff", "not JSON", source="/a.log", position=3, offset=3, now=NOW)
    assert event.dataset == ERROR_DATASET
    assert event.timestamp == NOW
    assert event.get("error.message") == "not JSON"
    assert event.get("event.original") == "garbage \\xff"  # the byte stays recoverable
    assert event.get("log.offset") == 3
    good = parse_line(SHOP_LINE, source="/a.log", position=3, offset=3, now=NOW)
    assert event.id == good.id  # same place in the file, same id


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"a": "\\ud800"}', "lone UTF-16 surrogate"),
        (b'{"a": "x\\uDC00y", "@timestamp": "2024-05-01T12:00:00Z"}', "lone UTF-16 surrogate"),
        (b"[" * 50_000 + b"]" * 50_000, "nested deeper"),
        (b'{"a": ' + b"[" * 100 + b"]" * 100 + b"}", "nested deeper"),
        (b'{"a": NaN}', "not JSON"),
        (b'{"a": "x\x00y"}', "not JSON"),
        (b'{"a": 1}\x00', "not JSON"),
        (b'{"a": "\xed\xa0\x80"}', "not UTF-8"),
    ],
)
def test_ecs_parse_line_rejects_poison(raw: bytes, reason: str) -> None:
    with pytest.raises(LineError, match=reason):
        parse_line(raw, source="/a.log", position=0, offset=0, now=NOW)


def test_ecs_parse_line_keeps_escaped_nul_and_surrogate_pairs() -> None:
    raw = b'{"@timestamp": "2024-05-01T12:00:00Z", "a": "x\\u0000y", "b": "\\ud83d\\ude00"}'
    event = parse_line(raw, source="/a.log", position=0, offset=0, now=NOW)
    assert event.get("a") == "x\x00y"
    assert event.get("b") == "\U0001f600"


def test_ecs_parse_line_text_is_the_document() -> None:
    event = parse_line(SHOP_LINE, source='/d/"odd".log', position=42, offset=42, now=NOW)
    assert event.text is not None
    assert json.loads(event.text) == event.doc
    assert event.text.startswith(SHOP_LINE.decode()[:-1])  # the line itself, not re-encoded
    missing = parse_line(b'{"message": "hi"}', source="/a.log", position=0, offset=0, now=NOW)
    assert missing.text is None  # @timestamp added: the store encodes the document


def test_ecs_error_event_escapes_nul_and_bad_bytes() -> None:
    event = error_event(b"a\x00b\xffc", "not JSON", source="/a.log", position=3, offset=3, now=NOW)
    assert event.get("event.original") == "a\x00b\\xffc"
    assert "\\u0000" in json.dumps(event.doc)
