"""haproxy's HTTP log (``option httplog``) → ECS ``haproxy.log`` events.

The line is haproxy's default HTTP format::

    %ci:%cp [%tr] %ft %b/%s %TR/%Tw/%Tc/%Tr/%Ta %ST %B %CC %CS %tsc
    %ac/%fc/%bc/%sc/%rc %sq/%bq {%hrl} {%hsl} "%r"

as written to a file or received over syslog: with an RFC 3164 header
(``<134>Nov 29 22:00:00 haproxy[123]: ``, the hostname optional) or without
one. Field names are those of Filebeat's haproxy module, so its dashboards
apply:

- ``haproxy.http.request.time_wait_ms`` (TR), ``haproxy.total_waiting_time_ms``
  (Tw), ``haproxy.connection_wait_time_ms`` (Tc),
  ``haproxy.http.request.time_wait_without_data_ms`` (Tr), and
  ``event.duration`` (Ta, in nanoseconds, as ECS wants). A timer haproxy
  logs as ``-1`` (the step never happened: client aborted, no server) is kept
  as ``-1``; ``event.duration`` is then absent.
- ``haproxy.connections.{active,frontend,backend,server,retries}``; a ``+``
  before the retries (the request was redispatched to another server) sets
  ``haproxy.redispatched: true``. ``haproxy.server_queue`` and
  ``haproxy.backend_queue`` are the queue positions.
- ``haproxy.bytes_read`` and ``http.response.bytes``; a ``+`` before bytes or
  Ta (``option logasap``: logged before the end) sets ``haproxy.logasap: true``.
- captured headers (``capture request header``) as lists in
  ``haproxy.http.request.captured_headers`` / ``…response.captured_headers``.

The accept date ``[%tr]`` has no time zone: haproxy writes the local time of
its host, read here in the collector's local time zone (the two run on the
same host).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from collectors.ecs import isoformat
from collectors.errors import LineError
from siem.model import Event, event_id

DATASET = "haproxy.log"

_SYSLOG = re.compile(
    rb"(?:<(?P<pri>\d{1,3})>)?"
    rb"(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d (?:[^\s\[:]+ )?)?"
    rb"(?P<prog>[\w./-]+)\[(?P<pid>\d{1,18})\]: "
)
# Numbers have at most 18 digits: every one fits a signed 64-bit integer, as stores want.
_N = r"\d{1,18}"
_HTTP = re.compile(
    rf"(?P<cip>\S+):(?P<cport>{_N}) "
    r"\[(?P<date>\d\d/[A-Z][a-z]{2}/\d{4}:\d\d:\d\d:\d\d(?:\.\d{1,6})?)\] "
    r"(?P<fe>\S+) (?P<be>[^\s/]+)/(?P<srv>\S+) "
    rf"(?P<tq>-?{_N})/(?P<tw>-?{_N})/(?P<tc>-?{_N})/(?P<tr>-?{_N})/(?P<ta>\+?-?{_N}) "
    rf"(?P<status>-?{_N}) (?P<bytes>\+?{_N}) (?P<reqcookie>\S+) (?P<rescookie>\S+) "
    r"(?P<term>\S{4}) "
    rf"(?P<ac>{_N})/(?P<fc>{_N})/(?P<bc>{_N})/(?P<sc>{_N})/(?P<rc>\+?{_N}) "
    rf"(?P<sq>{_N})/(?P<bq>{_N})"
    r"(?: \{(?P<h1>[^}]*)\})?(?: \{(?P<h2>[^}]*)\})?"
    r' "(?P<req>.*)"\s*'
)
_MONTHS = {
    m: i + 1
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
    )
}
_METHOD = re.compile(r"[A-Z][A-Z0-9_-]{0,31}")


def parse_line(raw: bytes, *, source: str, position: int | str, offset: int, now: float) -> Event:
    """The ``haproxy.log`` event of one HTTP log line; :class:`LineError` when it is not one."""
    header = _SYSLOG.match(raw)
    body = raw[header.end() :] if header else raw
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as bad:
        raise LineError(f"not UTF-8 text: {bad.reason} at byte {bad.start}") from None
    found = _HTTP.fullmatch(text)
    if found is None:
        raise LineError("not a haproxy HTTP log line (option httplog format)")
    g = found.group
    timestamp = _accept_time(g("date"))
    ta = g("ta")
    haproxy: dict[str, Any] = {
        "frontend_name": g("fe").removesuffix("~"),
        "backend_name": g("be"),
        "server_name": g("srv"),
        "http": {
            "request": {
                "time_wait_ms": int(g("tq")),
                "time_wait_without_data_ms": int(g("tr")),
                "raw_request_line": g("req"),
            },
        },
        "total_waiting_time_ms": int(g("tw")),
        "connection_wait_time_ms": int(g("tc")),
        "active_time_ms": int(ta.lstrip("+")),
        "bytes_read": int(g("bytes").lstrip("+")),
        "termination_state": g("term"),
        "connections": {
            "active": int(g("ac")),
            "frontend": int(g("fc")),
            "backend": int(g("bc")),
            "server": int(g("sc")),
            "retries": int(g("rc").lstrip("+")),
        },
        "server_queue": int(g("sq")),
        "backend_queue": int(g("bq")),
    }
    if g("fe").endswith("~"):
        haproxy["tls"] = True  # haproxy marks a frontend that terminated TLS with "~"
    if g("rc").startswith("+"):
        haproxy["redispatched"] = True
    if ta.startswith("+") or g("bytes").startswith("+"):
        haproxy["logasap"] = True
    for name, cookie in (("request", g("reqcookie")), ("response", g("rescookie"))):
        if cookie != "-":
            haproxy["http"].setdefault(name, {})["captured_cookie"] = cookie
    for name, headers in (("request", g("h1")), ("response", g("h2"))):
        if headers is not None:
            haproxy["http"].setdefault(name, {})["captured_headers"] = (
                headers.split("|") if headers else []
            )
    status = int(g("status"))
    event: dict[str, Any] = {
        "dataset": DATASET,
        "module": "haproxy",
        "kind": "event",
        "category": ["web"],
        "type": ["access"],
    }
    active = int(ta.lstrip("+"))
    if 0 <= active < 2**63 // 1_000_000:  # in ns it must fit 64 bits
        event["duration"] = active * 1_000_000
    http: dict[str, Any] = {"response": {"bytes": haproxy["bytes_read"]}}
    if status >= 0:
        http["response"]["status_code"] = status
        event["outcome"] = "failure" if status >= 500 else "success"
    doc: dict[str, Any] = {
        "@timestamp": isoformat(timestamp),
        "message": text.rstrip(),
        "event": event,
        "source": {"address": g("cip"), "ip": g("cip"), "port": int(g("cport"))},
        "haproxy": haproxy,
        "http": http,
        "log": {"file": {"path": source}, "offset": offset},
    }
    parts = g("req").split(" ")
    if len(parts) == 3 and _METHOD.fullmatch(parts[0]) and parts[2].startswith("HTTP/"):
        http["request"] = {"method": parts[0]}
        http["version"] = parts[2].removeprefix("HTTP/")
        doc["url"] = {"original": parts[1]}
    if header:
        doc["process"] = {"name": header["prog"].decode("ascii"), "pid": int(header["pid"])}
        if header["pri"] is not None:
            pri = int(header["pri"])
            doc["log"]["syslog"] = {
                "priority": pri,
                "facility": {"code": pri >> 3},
                "severity": {"code": pri & 7},
            }
    return Event(event_id(source, position), timestamp, DATASET, doc)


def _accept_time(stamp: str) -> float:
    """``06/Feb/2009:12:14:14.655`` (haproxy's local time) as seconds since the epoch."""
    day, month, rest = stamp.split("/", 2)
    year, hh, mm, ss = rest.split(":")
    whole, _, fraction = ss.partition(".")
    try:
        moment = dt.datetime(
            int(year),
            _MONTHS[month],
            int(day),
            int(hh),
            int(mm),
            int(whole),
            int(fraction.ljust(6, "0")) if fraction else 0,
        ).astimezone()
        return moment.timestamp()
    except (KeyError, ValueError, OverflowError, OSError):
        raise LineError(f"accept date {stamp!r} is not a valid time") from None
