"""Parse one log line into an ECS event, or into an error event that keeps the raw line.

Per ECS, ``log.file.path`` names the file an event was read from; like
Filebeat we add ``log.offset`` (the byte offset of the line). A line that is
not a JSON object with a usable ``@timestamp`` becomes an event of dataset
``vigil.collector.error`` with ``error.message`` and ``event.original``, so
nothing read is silently dropped.

Lines that parse but could not be stored or used as they are count as not
ECS too: JSON nested deeper than :data:`MAX_DEPTH` (a 50 000-deep line makes
Python's ``json`` raise ``RecursionError``, and SQLite's JSON functions stop
at 2000 levels), strings holding a lone UTF-16 surrogate escape (``"\\ud800"``
would decode to a ``str`` that cannot be encoded as UTF-8, so no UTF-8 store
could keep it) and ``NaN``/``Infinity`` (not JSON). Lines are parsed with
``orjson``, which is strict in exactly these ways.

In the common case (``@timestamp`` present, no ``log.file`` or ``log.offset``
yet) the two fields are added as ECS flat dotted keys, ``"log.file.path"``
and ``"log.offset"`` (as ecs-logging writes ``"log.level"``; every reader of
the store accepts both forms), appended to the line's own text: the event
keeps that text as ``Event.text``, so the store does not encode it again.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any

import orjson

from collectors.errors import LineError
from siem.model import Event, event_id, parse_timestamp

ERROR_DATASET = "vigil.collector.error"
MAX_DEPTH = 64
"""Deepest nesting of objects and arrays a log line may have (ECS needs about 4)."""


def isoformat(timestamp: float) -> str:
    """``2024-05-01T12:00:00.123Z`` for seconds since the epoch."""
    moment = dt.datetime.fromtimestamp(timestamp, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_line(raw: bytes, *, source: str, position: int | str, offset: int, now: float) -> Event:
    """The ECS event of one JSON log line; raises :class:`LineError` when it is not one.

    A document without ``@timestamp`` gets the read time ``now``.
    """
    try:
        # orjson is strict JSON as SQLite reads it: UTF-8 only, no lone surrogates,
        # no NaN, a depth limit instead of a RecursionError; and it is fast.
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise LineError(_reason(raw, exc)) from None
    if type(doc) is not dict:
        raise LineError(f"not a JSON object but {type(doc).__name__}")
    # Counting brackets is fast; only a line with many of them is walked.
    if raw.count(b"{") + raw.count(b"[") > MAX_DEPTH and _depth(doc) > MAX_DEPTH:
        raise LineError(f"not usable JSON: nested deeper than {MAX_DEPTH} levels")
    stamp = raw_stamp = doc.get("@timestamp")
    if stamp is None:
        stamp = doc["@timestamp"] = isoformat(now)
    if type(stamp) is not str:
        raise LineError(f"@timestamp is {type(stamp).__name__}, expected an ISO 8601 string")
    try:
        timestamp = parse_timestamp(stamp)
    except (ValueError, OverflowError):
        raise LineError(f"@timestamp {stamp!r} is not an ISO 8601 time") from None
    log = doc.get("log")
    if (
        (log is None or (type(log) is dict and "file" not in log and "offset" not in log))
        and "log.file.path" not in doc
        and "log.offset" not in doc
        and raw_stamp is not None
    ):
        # The common case, kept cheap: ECS flat keys (as ecs-logging writes
        # "log.level"), appended to the line's own text, which stays the document.
        doc["log.file.path"] = source
        doc["log.offset"] = offset
        body = raw.rstrip().decode("utf-8")[:-1]  # without its closing brace
        text: str | None = f'{body},"log.file.path":{_json_string(source)},"log.offset":{offset}}}'
    else:
        _put(doc, ("log", "file", "path"), source)
        _put(doc, ("log", "offset"), offset)
        text = None  # encoded again by the store
    event = doc.get("event")
    dataset = event.get("dataset") if type(event) is dict else None
    if not dataset:
        dataset = doc.get("event.dataset") or "unknown"
    return Event(event_id(source, position), timestamp, str(dataset), doc, text)


@functools.lru_cache(maxsize=1024)
def _json_string(value: str) -> str:
    return orjson.dumps(value).decode("utf-8")


def _reason(raw: bytes, exc: orjson.JSONDecodeError) -> str:
    """Why ``raw`` is not usable JSON, in the words of the old ``json`` messages."""
    message = str(exc)
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        return f"not UTF-8 text: {bad.reason} at byte {bad.start}"
    if "depth limit" in message or "recursion" in message:
        return f"not usable JSON: nested deeper than {MAX_DEPTH} levels"
    if "surrogate" in message:
        return f"not usable JSON: a \\u escape is a lone UTF-16 surrogate, not text ({message})"
    return f"not JSON: {message}"


def error_event(
    raw: bytes, message: str, *, source: str, position: int | str, offset: int, now: float
) -> Event:
    """The ``vigil.collector.error`` event standing for an unparsable line.

    ``event.original`` is the line with bytes that are not UTF-8 written as
    ``\\xNN``, so the raw bytes can be recovered from it.
    """
    doc: dict[str, Any] = {
        "@timestamp": isoformat(now),
        "message": f"unparsable line at {source}:{offset}",
        "event": {
            "dataset": ERROR_DATASET,
            "kind": "pipeline_error",
            "original": raw.decode("utf-8", errors="backslashreplace"),
        },
        "error": {"message": message},
        "log": {"file": {"path": source}, "offset": offset},
    }
    return Event.from_doc(doc, source=source, position=position)


def _put(doc: dict[str, Any], path: tuple[str, ...], value: Any) -> bool:
    """Set a nested ECS field unless present (nested or as a flat dotted key).

    True when the field is (now) at its nested place, False when a flat dotted
    key holds it.
    """
    if ".".join(path) in doc:
        return False
    node = doc
    for part in path[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            # A scalar sits where ECS expects an object: keep it, use the flat key.
            doc[".".join(path)] = value
            return False
        node = child
    node.setdefault(path[-1], value)
    return True


def _depth(value: Any) -> int:
    """How deeply objects and arrays nest in ``value``, without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth > deepest:
            deepest = depth
            if deepest > MAX_DEPTH:
                return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest
