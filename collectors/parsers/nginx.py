"""nginx access and error logs → ECS ``nginx.access`` / ``nginx.error`` events.

Field names are those of Filebeat's nginx module. Two access formats are read
(parser ``nginx``), told apart by the line's first byte:

- ``combined`` (nginx's default)::

    $remote_addr - $remote_user [$time_local] "$request" $status
    $body_bytes_sent "$http_referer" "$http_user_agent"

- a JSON ``log_format`` (``escape=json``) with these keys, all optional except
  ``time`` (``$time_iso8601``): ``remote_addr``, ``remote_user``, ``request``,
  ``status``, ``body_bytes_sent``, ``request_time`` (seconds, becomes
  ``event.duration`` in ns), ``http_referer``, ``http_user_agent``,
  ``request_id``, ``upstream_addr``, ``upstream_response_time``, ``host``.
  The README gives the recommended ``log_format``.

The error log (parser ``nginx_error``)::

    2024/05/01 12:00:00 [error] 123#0: *45 message, client: 1.2.3.4, server: s,
    request: "GET / HTTP/1.1", host: "h"

Times without a zone (``$time_local`` carries one, the error log does not)
are nginx's local time, read in the collector's local time zone.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import orjson

from collectors.ecs import isoformat
from collectors.errors import LineError
from siem.model import Event, event_id

ACCESS = "nginx.access"
ERROR = "nginx.error"

_COMBINED = re.compile(
    r"(?P<addr>\S+) - (?P<user>\S+) \[(?P<time>[^\]]+)\] "
    r'"(?P<req>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) (?P<bytes>\d{1,18}|-)'
    r'(?: "(?P<ref>(?:[^"\\]|\\.)*)" "(?P<ua>(?:[^"\\]|\\.)*)")?'
    r"(?P<rest> .*)?"
)
_ERROR = re.compile(
    r"(?P<time>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d) \[(?P<level>[a-z]+)\] "
    r"(?P<pid>\d{1,18})#(?P<tid>\d{1,18}): (?:\*(?P<cid>\d{1,18}) )?(?P<msg>.*)"
)
_ERROR_CONTEXT = re.compile(r', (client|server|request|upstream|host|referrer): ("[^"]*"|[^,]*)')
_METHOD = re.compile(r"[A-Z][A-Z0-9_-]{0,31}")
_LEVELS = {"debug", "info", "notice", "warn", "error", "crit", "alert", "emerg"}


def parse_access_line(
    raw: bytes, *, source: str, position: int | str, offset: int, now: float
) -> Event:
    """The ``nginx.access`` event of one combined or JSON line; :class:`LineError` otherwise."""
    if raw.lstrip()[:1] == b"{":
        return _json_access(raw, source=source, position=position, offset=offset)
    text = _text(raw)
    found = _COMBINED.fullmatch(text.rstrip())
    if found is None:
        raise LineError("not an nginx access log line (combined format or JSON)")
    g = found.group
    try:
        moment = dt.datetime.strptime(g("time"), "%d/%b/%Y:%H:%M:%S %z")
    except ValueError:
        raise LineError(f"time {g('time')!r} is not nginx's $time_local") from None
    fields: dict[str, Any] = {
        "remote_addr": g("addr"),
        "remote_user": g("user"),
        "request": _unescape(g("req")),
        "status": int(g("status")),
        "body_bytes_sent": 0 if g("bytes") == "-" else int(g("bytes")),
        "http_referer": _unescape(g("ref") or "-"),
        "http_user_agent": _unescape(g("ua") or "-"),
    }
    return _access_event(text.rstrip(), moment.timestamp(), fields, source, position, offset)


def _json_access(raw: bytes, *, source: str, position: int | str, offset: int) -> Event:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise LineError(f"not JSON: {exc}") from None
    if type(doc) is not dict:
        raise LineError("not a JSON object")
    stamp = doc.get("time")
    if type(stamp) is not str:
        raise LineError('JSON access line has no "time" ($time_iso8601) string')
    try:
        moment = dt.datetime.fromisoformat(stamp)
        if moment.tzinfo is None:
            moment = moment.astimezone()
        timestamp = moment.timestamp()
    except (ValueError, OverflowError, OSError):
        raise LineError(f"time {stamp!r} is not an ISO 8601 time") from None
    fields: dict[str, Any] = {}
    for key, value in doc.items():
        if key in ("status", "body_bytes_sent"):
            value = _number(value, key, int)
        elif key == "request_time":
            value = _number(value, key, float)
        elif not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise LineError(f"JSON access line: {key} is {type(value).__name__}")
        fields[key] = value
    text = raw.decode("utf-8").strip()
    return _access_event(text, timestamp, fields, source, position, offset)


def _number(value: Any, key: str, kind: type[int] | type[float]) -> int | float | None:
    if value in ("-", "", None):
        return None
    try:
        number = kind(value)
    except (TypeError, ValueError, OverflowError):
        raise LineError(f"JSON access line: {key} {value!r} is not a number") from None
    if isinstance(value, bool) or not -(2**63) <= number < 2**63:  # also NaN and infinities
        raise LineError(f"JSON access line: {key} {value!r} is not a number")
    return number


def _access_event(
    text: str,
    timestamp: float,
    f: dict[str, Any],
    source: str,
    position: int | str,
    offset: int,
) -> Event:
    event: dict[str, Any] = {
        "dataset": ACCESS,
        "module": "nginx",
        "kind": "event",
        "category": ["web"],
        "type": ["access"],
    }
    http: dict[str, Any] = {"request": {}, "response": {}}
    doc: dict[str, Any] = {
        "@timestamp": isoformat(timestamp),
        "message": text,
        "event": event,
        "http": http,
        "log": {"file": {"path": source}, "offset": offset},
    }
    addr = f.get("remote_addr")
    if isinstance(addr, str) and addr not in ("", "-"):
        doc["source"] = {"address": addr, "ip": addr}
        doc["nginx"] = {"access": {"remote_ip_list": [addr]}}
    user = f.get("remote_user")
    if isinstance(user, str) and user not in ("", "-"):
        doc["user"] = {"name": user}
    status = f.get("status")
    if isinstance(status, int):
        http["response"]["status_code"] = status
        event["outcome"] = "failure" if status >= 400 else "success"
    sent = f.get("body_bytes_sent")
    if isinstance(sent, int):
        http["response"]["body"] = {"bytes": sent}
    took = f.get("request_time")
    if isinstance(took, (int, float)) and 0 <= took < 1e9:  # in ns it must fit 64 bits
        event["duration"] = round(took * 1e9)
    request = f.get("request")
    if isinstance(request, str) and request:
        parts = request.split(" ")
        if len(parts) == 3 and _METHOD.fullmatch(parts[0]) and parts[2].startswith("HTTP/"):
            http["request"]["method"] = parts[0]
            http["version"] = parts[2].removeprefix("HTTP/")
            doc["url"] = {"original": parts[1]}
        else:
            event["original"] = text  # not a request line (a probe, TLS bytes): kept as is
    referer = f.get("http_referer")
    if isinstance(referer, str) and referer not in ("", "-"):
        http["request"]["referrer"] = referer
    agent = f.get("http_user_agent")
    if isinstance(agent, str) and agent not in ("", "-"):
        doc["user_agent"] = {"original": agent}
    request_id = f.get("request_id")
    if isinstance(request_id, str) and request_id not in ("", "-"):
        http["request"]["id"] = request_id
    host = f.get("host")
    if isinstance(host, str) and host not in ("", "-"):
        doc.setdefault("url", {})["domain"] = host
    for key in ("upstream_addr", "upstream_response_time"):
        value = f.get(key)
        if value not in (None, "", "-"):
            doc.setdefault("nginx", {}).setdefault("access", {})[key] = str(value)
    if not http["request"]:
        del http["request"]
    return Event(event_id(source, position), timestamp, ACCESS, doc)


def parse_error_line(
    raw: bytes, *, source: str, position: int | str, offset: int, now: float
) -> Event:
    """The ``nginx.error`` event of one error log line; :class:`LineError` when it is not one."""
    text = _text(raw).rstrip()
    found = _ERROR.fullmatch(text)
    if found is None or found["level"] not in _LEVELS:
        raise LineError("not an nginx error log line")
    g = found.group
    try:
        timestamp = dt.datetime.strptime(g("time"), "%Y/%m/%d %H:%M:%S").astimezone().timestamp()
    except (ValueError, OverflowError, OSError):
        raise LineError(f"time {g('time')!r} is not a valid time") from None
    message = g("msg")
    context: dict[str, str] = {}
    # nginx appends ", client: …, server: …, request: "…"" to the message.
    first = _ERROR_CONTEXT.search(message)
    if first is not None and message[first.start() :].startswith(", client: "):
        for key, value in _ERROR_CONTEXT.findall(message[first.start() :]):
            value = value[1:-1] if value.startswith('"') else value
            if value:  # nginx writes "server: ," when the server has no name
                context[key] = value
        message = message[: first.start()]
    error: dict[str, Any] = {}
    if g("cid") is not None:
        error["connection_id"] = int(g("cid"))
    doc: dict[str, Any] = {
        "@timestamp": isoformat(timestamp),
        "message": message,
        "event": {
            "dataset": ERROR,
            "module": "nginx",
            "kind": "event",
            "category": ["web"],
            "type": ["error"],
            "original": text,
        },
        "log": {"level": g("level"), "file": {"path": source}, "offset": offset},
        "process": {"pid": int(g("pid")), "thread": {"id": int(g("tid"))}},
        "nginx": {"error": error},
    }
    if "client" in context:
        doc["source"] = {"address": context["client"], "ip": context["client"]}
    if "server" in context:
        doc["server"] = {"address": context["server"]}
    if "host" in context:
        doc["url"] = {"domain": context["host"]}
    if "upstream" in context:
        error["upstream"] = context["upstream"]
    if "referrer" in context:
        doc["http"] = {"request": {"referrer": context["referrer"]}}
    request = context.get("request", "").split(" ")
    if len(request) == 3 and _METHOD.fullmatch(request[0]) and request[2].startswith("HTTP/"):
        doc.setdefault("http", {}).setdefault("request", {})["method"] = request[0]
        doc["http"]["version"] = request[2].removeprefix("HTTP/")
        doc.setdefault("url", {})["original"] = request[1]
    return Event(event_id(source, position), timestamp, ERROR, doc)


def _text(raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        raise LineError(f"not UTF-8 text: {bad.reason} at byte {bad.start}") from None


_ESCAPE = re.compile(rb"\\x([0-9A-Fa-f]{2})")


def _unescape(value: str) -> str:
    """A quoted combined-format field as sent: nginx writes ``"``, ``\\`` and bytes
    outside printable ASCII as ``\\xHH``; bytes that are not UTF-8 stay escaped."""
    if "\\x" not in value:
        return value
    raw = _ESCAPE.sub(lambda m: bytes([int(m[1], 16)]), value.encode("utf-8"))
    return raw.decode("utf-8", errors="backslashreplace")
