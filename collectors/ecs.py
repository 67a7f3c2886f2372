"""Parse one log line into an ECS event, or into an error event that keeps the raw line.

Per ECS, ``log.file.path`` names the file an event was read from; like
Filebeat we add ``log.offset`` (the byte offset of the line). A line that is
not a JSON object with a usable ``@timestamp`` becomes an event of dataset
``vigil.collector.error`` with ``error.message`` and ``event.original``, so
nothing read is silently dropped.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from collectors.errors import LineError
from siem.model import Event, parse_timestamp

ERROR_DATASET = "vigil.collector.error"


def isoformat(timestamp: float) -> str:
    """``2024-05-01T12:00:00.123Z`` for seconds since the epoch."""
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_line(raw: bytes, *, source: str, position: int | str, offset: int, now: float) -> Event:
    """The ECS event of one JSON log line; raises :class:`LineError` when it is not one.

    A document without ``@timestamp`` gets the read time ``now``.
    """
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LineError(f"not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise LineError(f"not JSON: {exc.msg} at column {exc.colno}") from None
    if not isinstance(doc, dict):
        raise LineError(f"not a JSON object but {type(doc).__name__}")
    stamp = doc.setdefault("@timestamp", isoformat(now))
    if not isinstance(stamp, str):
        raise LineError(f"@timestamp is {type(stamp).__name__}, expected an ISO 8601 string")
    try:
        parse_timestamp(stamp)
    except ValueError:
        raise LineError(f"@timestamp {stamp!r} is not an ISO 8601 time") from None
    _put(doc, ("log", "file", "path"), source)
    _put(doc, ("log", "offset"), offset)
    return Event.from_doc(doc, source=source, position=position)


def error_event(
    raw: bytes, message: str, *, source: str, position: int | str, offset: int, now: float
) -> Event:
    """The ``vigil.collector.error`` event standing for an unparsable line."""
    doc: dict[str, Any] = {
        "@timestamp": isoformat(now),
        "message": f"unparsable line at {source}:{offset}",
        "event": {
            "dataset": ERROR_DATASET,
            "kind": "pipeline_error",
            "original": raw.decode("utf-8", errors="replace"),
        },
        "error": {"message": message},
        "log": {"file": {"path": source}, "offset": offset},
    }
    return Event.from_doc(doc, source=source, position=position)


def _put(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set a nested ECS field unless present (nested or as a flat dotted key)."""
    if ".".join(path) in doc:
        return
    node = doc
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            # A scalar sits where ECS expects an object: keep it, use the flat key.
            doc[".".join(path)] = value
            return
        node = child
    node.setdefault(path[-1], value)
