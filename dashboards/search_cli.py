"""``vigil search 'KQL' --since 15m``: matching events from the store, as a table or NDJSON.

It reads the store directly (``siem.backends.open_store(settings)``, like the
other commands), not through the web API: no server or token is needed, only
read access to the store. The query runs under the ``query.*`` limits.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import sys
import time
from typing import Any, TextIO

from dashboards.events import event_json
from dashboards.params import DashboardError, parse_duration, parse_when
from siem.kql import KqlError
from siem.limits import QueryBudget
from siem.model import Event, EventQuery, get_field
from vigil.settings import load_settings

MAX_LIMIT = 100_000
MESSAGE_WIDTH = 100


def add_commands(sub: Any) -> None:
    """Register ``vigil search``."""
    search = sub.add_parser(
        "search",
        help="search events with KQL (reads the store directly)",
        description="Search the store's events with KQL, newest first. Reads the store "
        "directly through siem.backends.open_store(settings) (store.* settings), "
        "not through the web API.",
    )
    search.add_argument(
        "query", nargs="?", default="", help="KQL, e.g. 'http.response.status_code >= 500'"
    )
    search.add_argument(
        "--since",
        default="15m",
        help="start: a duration ago (15m, 2h), now-15m, Unix seconds or RFC 3339 (default 15m)",
    )
    search.add_argument("--until", help="end (exclusive), same forms as --since (default now)")
    search.add_argument("--dataset", help="only this event.dataset")
    search.add_argument("--limit", type=int, default=100, help="at most N events (default 100)")
    search.add_argument("--json", action="store_true", help="NDJSON, one event per line")
    search.add_argument("--fields", help="comma-separated fields to show instead of the message")
    search.set_defaults(func=cmd_search)


_AGO = re.compile(r"(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w|y))+")


def when(name: str, raw: str, now: float) -> float:
    """``15m`` or ``1h30m`` (that long ago), or anything ``parse_when`` reads
    (``now-15m``, Unix seconds, RFC 3339)."""
    if _AGO.fullmatch(raw.strip()):
        return now - parse_duration(name, raw.strip())
    return parse_when(name, raw, now)


def cmd_search(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Print the matching events; exit 2 with the located error on a bad query."""
    from siem.backends import open_store

    out = out or sys.stdout
    now = time.time()
    start = when("--since", args.since, now)
    end = when("--until", args.until, now) if args.until else now
    if end <= start:
        raise DashboardError("--until must be after --since")
    if not 1 <= args.limit <= MAX_LIMIT:
        raise DashboardError(f"--limit must be between 1 and {MAX_LIMIT:,}")
    fields = [f.strip() for f in args.fields.split(",") if f.strip()] if args.fields else None
    try:
        query = EventQuery(
            dataset=args.dataset,
            start=start,
            end=end,
            limit=args.limit,
            kql=args.query if args.query.strip() else None,
        )
    except KqlError as exc:
        # The query, and a caret under the column the parser names.
        print(f"vigil: error: {exc}\n  {args.query}\n  {' ' * (exc.column - 1)}^", file=sys.stderr)
        return 2
    settings = load_settings(args.config)
    store = open_store(settings)
    try:
        with QueryBudget(settings.query.max_samples, settings.query.timeout_s).active():
            found = store.search(query)
    finally:
        store.close()
    if args.json:
        for event in found:
            row = event_json(event) if fields is None else _only(event, fields)
            out.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
    else:
        _table(found, fields, out)
    return 0


def _only(event: Event, fields: list[str]) -> dict[str, Any]:
    return {
        "id": event.id,
        "timestamp": event.timestamp,
        "dataset": event.dataset,
        "fields": {name: get_field(event.doc, name) for name in fields},
    }


def _table(found: list[Event], fields: list[str] | None, out: TextIO) -> None:
    columns = ["time", "dataset", *(fields or ["message"])]
    rows = [[_time(e.timestamp), e.dataset, *_cells(e, fields)] for e in found]
    widths = [max([len(c), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]
    for row in [columns, *rows]:
        out.write("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        out.write("\n")
    out.write(f"{len(found)} event{'s' if len(found) != 1 else ''}\n")


def _cells(event: Event, fields: list[str] | None) -> list[str]:
    if fields is None:
        message = get_field(event.doc, "message")
        text = "" if message is None else " ".join(str(message).split())
        return [text if len(text) <= MESSAGE_WIDTH else text[: MESSAGE_WIDTH - 1] + "…"]
    rv = []
    for name in fields:
        value = get_field(event.doc, name)
        cell = "-" if value is None else value if isinstance(value, str) else json.dumps(value)
        rv.append(" ".join(cell.split()))
    return rv


def _time(ts: float) -> str:
    moment = dt.datetime.fromtimestamp(ts, dt.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
