"""PostgreSQL's server log → ECS ``postgresql.log`` events.

Two formats, one event shape:

- ``postgresql``: ``log_destination = 'jsonlog'`` (PostgreSQL 15+), one JSON
  object per line (``timestamp``, ``user``, ``dbname``, ``pid``,
  ``remote_host``, ``error_severity``, ``state_code``, ``message``,
  ``detail``, ``hint``, ``statement``…).
- ``postgresql_stderr``: the classic ``stderr`` format, each message begun by
  ``log_line_prefix`` (setting ``collect.postgresql_log_line_prefix``,
  Debian's ``'%m [%p] %q%u@%d '`` by default). A message spans lines: the
  lines PostgreSQL continues with a tab, and the ``DETAIL``/``HINT``/
  ``CONTEXT``/``QUERY``/``STATEMENT``/``LOCATION`` lines the same process
  writes right after it, are one event (see :mod:`collectors.multiline`).

Field names are those of Filebeat's postgresql module where it has one
(``postgresql.log.database``, ``.query``, ``.query_step``, ``.query_name``,
``.sql_state_code``, ``.session_id``, ``.session_line_number``,
``.client_addr``, ``.client_port``, ``.application_name``, ``.backend_type``,
``.detail``, ``.hint``, ``.context``…), ECS ones beside them (``log.level``
lower-cased, ``user.name``, ``process.pid``, ``source.address``/``.ip``/``.port``,
``event.duration`` in nanoseconds). Recognised messages add:

- ``duration: 12.345 ms  statement: …`` (``log_min_duration_statement``):
  ``event.duration``, ``postgresql.log.query`` (``event.action: statement``);
- ``ERROR`` and worse: ``event.outcome: failure``, ``error.message``,
  ``error.code`` (the SQLSTATE), the ``STATEMENT`` as ``postgresql.log.query``;
- failed logins (``password authentication failed``, ``no pg_hba.conf
  entry``): ``event.category: authentication``, ``event.outcome: failure``,
  ``event.action: authentication-failed``; ``connection authorized``: the
  same with ``success``;
- ``deadlock detected``: ``event.action: deadlock`` (the processes and locks
  are in ``postgresql.log.detail``);
- ``checkpoint starting``/``complete`` (``log_checkpoints``):
  ``postgresql.log.checkpoint.*`` (buffers written, WAL files, write/sync/total
  seconds, distance and estimate in kB) and ``event.duration``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import re
from collections.abc import Sequence
from typing import Any

import orjson

from collectors.ecs import isoformat
from collectors.errors import LineError
from collectors.multiline import Grouped, Rule
from siem.model import Event, event_id
from vigil.errors import ConfigError

DATASET = "postgresql.log"
DEFAULT_PREFIX = "%m [%p] %q%u@%d "
MAX_TEXT = 32 * 1024  # a statement longer than this is cut: the event stays storable

_SEVERITIES: tuple[str, ...] = ("DEBUG5", "DEBUG4", "DEBUG3", "DEBUG2", "DEBUG1", "LOG", "INFO")
_SEVERITIES += ("NOTICE", "WARNING", "ERROR", "FATAL", "PANIC")
# Lines that belong to the message before them (elog.c writes them right after it).
_SECONDARY = {
    "DETAIL": "detail",
    "HINT": "hint",
    "QUERY": "internal_query",
    "CONTEXT": "context",
    "LOCATION": "location",
    "STATEMENT": "statement",
}
_FAILURE = {"ERROR", "FATAL", "PANIC"}
_STAMP = re.compile(
    r"(?P<date>\d{4}-\d\d-\d\d) (?P<time>\d\d:\d\d:\d\d)(?:\.(?P<frac>\d{1,6}))?"
    r"(?: (?P<tz>[A-Za-z][A-Za-z0-9/_+-]{0,31}|[+-]\d\d(?::?\d\d)?))?"
)
_DURATION = re.compile(
    r"duration: (?P<ms>\d{1,15}(?:\.\d{1,6})?) ms"
    r"(?:  (?P<step>statement|execute|parse|bind)(?: (?P<name>[^:]*))?: (?P<query>.*))?",
    re.S,
)
_STATEMENT = re.compile(r"statement: (?P<query>.*)", re.S)
_AUTH_FAILED = re.compile(
    r"(?:password|md5|scram-sha-256|ident|peer|cert|ldap|radius|pam|gss|sspi) authentication"
    r' failed for user "(?P<user>[^"]*)"'
    r'|no pg_hba\.conf entry for host "(?P<host>[^"]*)", user "(?P<user2>[^"]*)"'
    r'(?:, database "(?P<db>[^"]*)")?'
)
_AUTHORIZED = re.compile(r"connection authorized: user=(?P<user>\S+)(?: database=(?P<db>\S+))?")
_NUMBER = r"(\d{1,18}(?:\.\d{1,9})?)"
_CHECKPOINT_FIELDS = (
    ("buffers_written", rf"wrote {_NUMBER} buffers"),
    ("wal_files_added", rf"{_NUMBER} WAL file\(s\) added"),
    ("wal_files_removed", rf"{_NUMBER} removed"),
    ("wal_files_recycled", rf"{_NUMBER} recycled"),
    ("write_s", rf"write={_NUMBER} s"),
    ("sync_s", rf"sync={_NUMBER} s"),
    ("total_s", rf"total={_NUMBER} s"),
    ("sync_files", rf"sync files={_NUMBER}"),
    ("longest_s", rf"longest={_NUMBER} s"),
    ("average_s", rf"average={_NUMBER} s"),
    ("distance_kb", rf"distance={_NUMBER} kB"),
    ("estimate_kb", rf"estimate={_NUMBER} kB"),
)
_CHECKPOINT_RES = tuple((name, re.compile(pattern)) for name, pattern in _CHECKPOINT_FIELDS)

# log_line_prefix escapes → what they match (named when the event keeps it).
_ESCAPES: dict[str, tuple[str, str | None]] = {
    "m": (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}(?: [^\s\]]+)?", "timestamp"),
    "t": (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?: [^\s\]]+)?", "timestamp"),
    "n": (r"\d{1,12}\.\d{3}", "epoch"),
    "s": (r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?: [^\s\]]+)?", "session_start"),
    "p": (r"\d{1,10}", "pid"),
    "u": (r"[^\s@]*?", "user"),
    "d": (r"\S*?", "dbname"),
    "r": (r"\S*?", "remote"),
    "h": (r"\S*?", "remote_host"),
    "a": (r".*?", "application_name"),
    "b": (r".*?", "backend_type"),
    "c": (r"[0-9a-f]{1,16}\.[0-9a-f]{1,16}", "session_id"),
    "l": (r"\d{1,18}", "line_num"),
    "e": (r"[0-9A-Z]{5}", "state_code"),
    "i": (r".*?", "ps"),
    "v": (r"\S*?", "vxid"),
    "x": (r"\d{1,18}", "txid"),
    "Q": (r"-?\d{1,20}", "query_id"),
}


def compile_prefix(
    prefix: str, *, key: str = "collect.postgresql_log_line_prefix"
) -> re.Pattern[str]:
    """A regex for lines begun by ``prefix`` followed by ``SEVERITY:  text``.

    Raises :class:`ConfigError` naming ``key`` for an escape it does not know
    (or padding such as ``%-10u``).
    """
    out: list[str] = []
    named: set[str] = set()
    optional = False
    i = 0
    while i < len(prefix):
        ch = prefix[i]
        if ch != "%":
            out.append(re.escape(ch))
            i += 1
            continue
        esc = prefix[i + 1 : i + 2]
        i += 2
        if esc == "%":
            out.append("%")
        elif esc == "q":
            if not optional:
                out.append("(?:")
                optional = True
        elif esc in _ESCAPES:
            pattern, name = _ESCAPES[esc]
            if name and name not in named:
                named.add(name)
                out.append(f"(?P<{name}>{pattern})")
            else:
                out.append(f"(?:{pattern})")
        else:
            raise ConfigError(
                f"{key}: log_line_prefix escape %{esc} is not supported; use "
                + " ".join(f"%{e}" for e in sorted(_ESCAPES))
                + " %q %%"
            )
    if optional:
        out.append(")?")
    severities = "|".join([*_SEVERITIES, *_SECONDARY])
    return re.compile("".join(out) + rf"(?P<severity>{severities}):  (?P<text>.*)", re.S)


def parse_json_line(
    raw: bytes, *, source: str, position: int | str, offset: int, now: float
) -> Event:
    """The ``postgresql.log`` event of one ``jsonlog`` line; :class:`LineError` if not one."""
    try:
        rec = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise LineError(f"not a PostgreSQL jsonlog line: {exc}") from None
    if not isinstance(rec, dict) or not isinstance(rec.get("timestamp"), str):
        raise LineError("not a PostgreSQL jsonlog line: no timestamp")
    if not isinstance(rec.get("error_severity"), str) or not isinstance(rec.get("message"), str):
        raise LineError("not a PostgreSQL jsonlog line: no error_severity or message")
    clean = {k: v for k, v in rec.items() if isinstance(v, (str, int)) and not isinstance(v, bool)}
    return _event(clean, source=source, position=position, offset=offset)


def stderr_parser(
    prefix: str = DEFAULT_PREFIX, *, key: str = "collect.postgresql_log_line_prefix"
) -> Grouped:
    """The ``postgresql_stderr`` parser for lines begun by ``prefix``, grouping its messages.

    A prefix it cannot read raises :class:`ConfigError` naming ``key``.
    """
    line_re = compile_prefix(prefix, key=key)

    def continues(lines: Sequence[bytes], line: bytes) -> bool:
        if line[:1] == b"\t":
            return True  # PostgreSQL continues a message's own lines with a tab
        found = line_re.match(line.decode("utf-8", "replace"))
        if found is None or found["severity"] not in _SECONDARY:
            return False
        first = line_re.match(lines[0].decode("utf-8", "replace"))
        # Another process's DETAIL is not ours (with %p in the prefix we can tell).
        return first is None or found.groupdict().get("pid") == first.groupdict().get("pid")

    def parse(raw: bytes, *, source: str, position: int | str, offset: int, now: float) -> Event:
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as bad:
            raise LineError(f"not UTF-8 text: {bad.reason} at byte {bad.start}") from None
        lines = text.split("\n")
        head = line_re.fullmatch(lines[0])
        if head is None or head["severity"] in _SECONDARY:
            raise LineError(f"not a PostgreSQL log line with log_line_prefix {prefix!r}")
        rec: dict[str, Any] = {
            k: v for k, v in head.groupdict().items() if v and k not in ("severity", "text")
        }
        rec["error_severity"] = head["severity"]
        field, parts = "message", [head["text"]]
        for line in lines[1:]:
            if line.startswith("\t"):
                parts.append(line[1:])
                continue
            found = line_re.fullmatch(line)
            if found is None or found["severity"] not in _SECONDARY:
                raise LineError("a line of the message is neither a continuation nor DETAIL/HINT")
            rec[field] = "\n".join(parts)
            field, parts = _SECONDARY[found["severity"]], [found["text"]]
        rec[field] = "\n".join(parts)
        return _event(rec, source=source, position=position, offset=offset)

    return Grouped(parse, Rule(continues))


def _event(rec: dict[str, Any], *, source: str, position: int | str, offset: int) -> Event:
    """The event of one PostgreSQL message as ``jsonlog`` names its parts."""
    timestamp = _timestamp(str(rec["timestamp"]) if "timestamp" in rec else None, rec.get("epoch"))
    severity = str(rec["error_severity"])
    message = _cut(str(rec["message"]))
    pg: dict[str, Any] = {}
    for ours, theirs in (
        ("database", "dbname"),
        ("session_id", "session_id"),
        ("application_name", "application_name"),
        ("backend_type", "backend_type"),
        ("virtual_transaction_id", "vxid"),
        ("command_tag", "ps"),
        ("detail", "detail"),
        ("hint", "hint"),
        ("context", "context"),
        ("internal_query", "internal_query"),
        ("location", "location"),
        ("sql_state_code", "state_code"),
    ):
        value = rec.get(theirs)
        if isinstance(value, str) and value and value not in ("[unknown]", "00000"):
            pg[ours] = _cut(value)
    for ours, theirs in (
        ("session_line_number", "line_num"),
        ("transaction_id", "txid"),
        ("query_pos", "cursor_position"),
    ):
        number = _int(rec.get(theirs))
        if number is not None and (ours != "transaction_id" or number):
            pg[ours] = number
    if isinstance(rec.get("session_start"), str):
        with contextlib.suppress(LineError):  # a session start is a nicety, not the event
            pg["session_start_time"] = isoformat(_timestamp(rec["session_start"], None))
    event: dict[str, Any] = {"dataset": DATASET, "module": "postgresql", "kind": "event"}
    doc: dict[str, Any] = {
        "@timestamp": isoformat(timestamp),
        "message": message,
        "event": event,
        "log": {"level": severity.lower(), "file": {"path": source}, "offset": offset},
        "postgresql": {"log": pg},
    }
    pid = _int(rec.get("pid"))
    if pid is not None:
        doc["process"] = {"pid": pid}
    user = rec.get("user")
    if isinstance(user, str) and user and user != "[unknown]":
        doc["user"] = {"name": user}
    host, port = _remote(rec)
    if host:
        doc["source"] = {"address": host}
        if _is_ip(host):
            doc["source"]["ip"] = host
        pg["client_addr"] = host
        if port is not None:
            doc["source"]["port"] = port
            pg["client_port"] = port
    statement = rec.get("statement")
    if isinstance(statement, str) and statement:
        pg["query"] = _cut(statement)
    if severity in _FAILURE:
        event["type"] = ["error"]
        event["outcome"] = "failure"
        doc["error"] = {"message": message}
        if "sql_state_code" in pg:
            doc["error"]["code"] = pg["sql_state_code"]
    _classify(message, severity, doc, pg)
    return Event(event_id(source, position), timestamp, DATASET, doc)


def _classify(message: str, severity: str, doc: dict[str, Any], pg: dict[str, Any]) -> None:
    """The fields of the messages worth a query of their own (see the module docs)."""
    event = doc["event"]
    if (found := _DURATION.match(message)) is not None:
        _duration(event, float(found["ms"]) / 1000)
        event["action"] = "statement"
        if found["query"] is not None:
            pg["query"] = _cut(found["query"])
            pg["query_step"] = found["step"]
            if found["name"] and found["name"] != "<unnamed>":
                pg["query_name"] = found["name"]
    elif (found := _STATEMENT.match(message)) is not None and severity == "LOG":
        pg["query"] = _cut(found["query"])
        pg["query_step"] = "statement"
        event["action"] = "statement"
    elif (found := _AUTH_FAILED.search(message)) is not None:
        event.update(category=["authentication"], type=["start"], outcome="failure")
        event["action"] = "authentication-failed"
        user = found["user"] or found["user2"]
        doc.setdefault("user", {"name": user})
        if found["db"] and "database" not in pg:
            pg["database"] = found["db"]
        if found["host"] and "source" not in doc:
            doc["source"] = {"address": found["host"]}
            if _is_ip(found["host"]):
                doc["source"]["ip"] = found["host"]
    elif (found := _AUTHORIZED.match(message)) is not None:
        event.update(category=["authentication"], type=["start"], outcome="success")
        event["action"] = "connection-authorized"
        doc.setdefault("user", {"name": found["user"]})
        if found["db"] and "database" not in pg:
            pg["database"] = found["db"]
    elif message.startswith("deadlock detected"):
        event["action"] = "deadlock"
    elif message.startswith(("checkpoint starting:", "checkpoint complete:")):
        starting = message.startswith("checkpoint starting:")
        event["action"] = "checkpoint-started" if starting else "checkpoint-completed"
        checkpoint: dict[str, Any] = {}
        if starting:
            checkpoint["flags"] = message.removeprefix("checkpoint starting:").split()
        for name, pattern in _CHECKPOINT_RES:
            if (number := pattern.search(message)) is not None:
                value = number[1]
                checkpoint[name] = (
                    float(value) if "." in value or name.endswith("_s") else int(value)
                )
        if "total_s" in checkpoint:
            _duration(event, checkpoint["total_s"])
        pg["checkpoint"] = checkpoint


def _duration(event: dict[str, Any], seconds: float) -> None:
    """``event.duration`` in nanoseconds, as ECS wants, when it fits 64 bits."""
    if 0 <= seconds < 9e9:
        event["duration"] = round(seconds * 1_000_000_000)


def _timestamp(stamp: str | None, epoch: Any) -> float:
    """``2026-11-29 23:50:01.123 UTC`` (or ``%n``'s epoch) as seconds since the epoch.

    A zone PostgreSQL names by abbreviation other than UTC/GMT is taken as
    the collector's own (both run on the same host, as for haproxy).
    """
    if stamp is None:
        try:
            return float(epoch)
        except (TypeError, ValueError):
            raise LineError(
                "no timestamp in the line (log_line_prefix needs %m, %t or %n)"
            ) from None
    found = _STAMP.fullmatch(stamp)
    if found is None:
        raise LineError(f"timestamp {stamp!r} is not PostgreSQL's")
    tz = found["tz"]
    try:
        moment = dt.datetime.fromisoformat(
            f"{found['date']}T{found['time']}.{(found['frac'] or '0').ljust(6, '0')}"
        )
        if tz in ("UTC", "GMT", "Z", "UCT", "Etc/UTC"):
            moment = moment.replace(tzinfo=dt.UTC)
        elif tz and tz[0] in "+-":
            digits = tz[1:].replace(":", "").ljust(4, "0")
            delta = dt.timedelta(hours=int(digits[:2]), minutes=int(digits[2:4]))
            moment = moment.replace(tzinfo=dt.timezone(-delta if tz[0] == "-" else delta))
        else:
            moment = moment.astimezone()
        return moment.timestamp()
    except (ValueError, OverflowError, OSError):
        raise LineError(f"timestamp {stamp!r} is not a valid time") from None


def _remote(rec: dict[str, Any]) -> tuple[str | None, int | None]:
    """Client host and port from jsonlog's fields or ``%r`` (``host(port)``)/``%h``."""
    host = rec.get("remote_host")
    port = _int(rec.get("remote_port"))
    remote = rec.get("remote")
    if isinstance(remote, str) and remote:
        name, _, rest = remote.partition("(")
        host = name
        if rest.endswith(")"):
            port = _int(rest[:-1])
    if not isinstance(host, str) or not host or host == "[local]":
        return None, None
    return host, port if port is not None and 0 <= port <= 65535 else None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if -(2**63) <= value < 2**63 else None
    if isinstance(value, str) and value.isdigit() and len(value) <= 18:
        return int(value)
    return None


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _cut(text: str) -> str:
    return text if len(text) <= MAX_TEXT else text[:MAX_TEXT] + "…"
