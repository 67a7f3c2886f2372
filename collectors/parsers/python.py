"""A Python process's output (the shop's, gunicorn's) with its tracebacks as one event.

Under ``vigil up`` a child's ``run/<name>.log`` holds ECS JSON lines (read as
the ``ecs`` parser does) and, between them, text Python wrote itself:
gunicorn's ``[2026-11-29 23:50:01 +0000] [1234] [ERROR] Exception in worker
process`` lines and uncaught tracebacks::

    Traceback (most recent call last):
      File "/srv/shop/app.py", line 12, in checkout
        total = price / quantity
    ZeroDivisionError: division by zero

The traceback (chained ones too) and the line logged just before it are one
event (:func:`collectors.multiline.python_traceback`) with
``error.stack_trace``, ``error.type`` and ``error.message``; other text lines
are events of their own (``log.level`` from gunicorn's, ``process.pid``).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from typing import Any

from collectors import ecs
from collectors.ecs import isoformat
from collectors.errors import LineError
from collectors.multiline import Grouped, Rule, python_traceback
from siem.model import Event, event_id

DATASET = "python.log"
_GUNICORN = re.compile(
    r"\[(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d [+-]\d{4})\] \[(?P<pid>\d{1,10})\]"
    r" \[(?P<level>[A-Z]{1,10})\] (?P<msg>.*)"
)
_EXCEPTION = re.compile(r"(?P<type>[A-Za-z_][\w.]{0,200})(?:: (?P<msg>.*))?", re.S)
_TRACEBACK = "Traceback (most recent call last):"


def continues(lines: Sequence[bytes], line: bytes) -> bool:
    """A traceback joins the text line before it; never a JSON line (it has its own)."""
    return not lines[0].startswith(b"{") and python_traceback(lines, line)


def parse(raw: bytes, *, source: str, position: int | str, offset: int, now: float) -> Event:
    """The event of a JSON line, a text line, or a text line with its traceback."""
    if raw.startswith(b"{"):
        return ecs.parse_line(raw, source=source, position=position, offset=offset, now=now)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as bad:
        raise LineError(f"not UTF-8 text: {bad.reason} at byte {bad.start}") from None
    lines = text.split("\n")
    timestamp = now
    doc: dict[str, Any] = {
        "message": lines[0],
        "event": {"dataset": DATASET, "module": "python", "kind": "event"},
        "log": {"file": {"path": source}, "offset": offset},
    }
    header = _GUNICORN.fullmatch(lines[0])
    if header is not None:
        try:
            stamp = dt.datetime.strptime(header["ts"], "%Y-%m-%d %H:%M:%S %z")
            timestamp = stamp.timestamp()
        except (ValueError, OverflowError):
            raise LineError(f"gunicorn timestamp {header['ts']!r} is not a valid time") from None
        doc["message"] = header["msg"]
        doc["log"]["level"] = header["level"].lower()
        doc["log"]["logger"] = "gunicorn.error"
        doc["process"] = {"pid": int(header["pid"])}
    start = next((i for i, line in enumerate(lines) if line.startswith(_TRACEBACK)), None)
    if start is not None:
        error: dict[str, Any] = {"stack_trace": "\n".join(lines[start:])}
        last = lines[-1]
        found = _EXCEPTION.fullmatch(last) if last[:1] not in (" ", "\t") else None
        if found is not None and not last.startswith(_TRACEBACK):
            error["type"] = found["type"]
            error["message"] = found["msg"] or ""
        doc["error"] = error
        doc["event"]["type"] = ["error"]
        doc.setdefault("log", {}).setdefault("level", "error")
        if start == 0:  # a bare traceback: its exception line says the most
            doc["message"] = last
    doc["@timestamp"] = isoformat(timestamp)
    return Event(event_id(source, position), timestamp, DATASET, doc)


PARSER = Grouped(parse, Rule(continues))
