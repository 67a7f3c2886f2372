"""``vigil store stats [--json]`` and ``vigil store prune [--dry-run] [--vacuum]``.

Both open the configured store directly (``siem.backends.open_store``), like
``vigil search``: no server is needed. ``prune`` applies the retention policy of
the ``store.*`` settings now, in the same bounded chunks as the collector's
background pass, so it can run while the collector writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import sys
import time
from typing import Any, TextIO

from siem.retention import PruneResult, StoreStats, policy_from
from vigil.errors import ConfigError
from vigil.settings import load_settings
from vigil.units import format_bytes


def add_commands(sub: Any) -> None:
    """Register ``vigil store stats`` and ``vigil store prune``."""
    store = sub.add_parser("store", help="the store: size per dataset, retention")
    store_sub = store.add_subparsers(dest="store_command", required=True)
    stats = store_sub.add_parser(
        "stats", help="events, size, oldest and newest per dataset; samples; the store's size"
    )
    stats.add_argument("--json", action="store_true", help="one JSON object")
    stats.set_defaults(func=cmd_stats)
    prune = store_sub.add_parser(
        "prune",
        help="apply store.retention, store.samples_retention and store.max_bytes now",
    )
    prune.add_argument(
        "--dry-run", action="store_true", help="count what would be removed; remove nothing"
    )
    prune.add_argument(
        "--vacuum",
        action="store_true",
        help="SQLite: then rewrite the file (VACUUM) so it shrinks, now and after later"
        " prunes; locks writers out for the copy and needs room for a second copy",
    )
    prune.set_defaults(func=cmd_prune)


def cmd_stats(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from siem.backends import open_store

    out = out or sys.stdout
    settings = load_settings(args.config)
    store = open_store(settings)
    try:
        stats = store.stats()
    finally:
        store.close()
    if args.json:
        out.write(json.dumps(_stats_json(stats, settings.store.max_bytes)) + "\n")
    else:
        _stats_table(stats, settings.store.max_bytes, out)
    return 0


def _stats_json(stats: StoreStats, max_bytes: int) -> dict[str, Any]:
    rv = dataclasses.asdict(stats)
    rv["datasets"] = [dataclasses.asdict(d) for d in stats.datasets]
    rv["events"] = stats.events
    rv["max_bytes"] = int(max_bytes)
    return rv


def _stats_table(stats: StoreStats, max_bytes: int, out: TextIO) -> None:
    mark = "" if stats.bytes_exact else "~"
    rows = [["dataset", "events", "size", "oldest", "newest"]]
    for d in stats.datasets:
        size = format_bytes(d.bytes) + mark
        rows.append([d.dataset, f"{d.events:,}", size, _time(d.oldest), _time(d.newest)])
    rows.append(
        [
            "(samples)",
            f"{stats.samples:,}",
            format_bytes(stats.samples_bytes) + mark,
            _time(stats.oldest_sample),
            _time(stats.newest_sample),
        ]
    )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [
            cell.rjust(w) if i in (1, 2) else cell.ljust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ]
        out.write("  ".join(cells).rstrip() + "\n")
    line = (
        f"{stats.events:,} events, {stats.series:,} series; store {format_bytes(stats.total_bytes)}"
    )
    if stats.free_bytes:
        line += f" ({format_bytes(stats.free_bytes)} free inside the file)"
    if max_bytes:
        line += f", cap {format_bytes(max_bytes)}"
    out.write(line + "\n")
    if not stats.bytes_exact:
        out.write("~ estimated from the documents' length\n")


def cmd_prune(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from siem.backends import open_store
    from siem.sqlite import SqliteStore

    out = out or sys.stdout
    settings = load_settings(args.config)
    if args.vacuum and settings.store.backend != "sqlite":
        raise ConfigError("--vacuum applies to store.backend: sqlite only")
    store = open_store(settings)
    try:
        result = store.prune(policy_from(settings.store), time.time(), dry_run=args.dry_run)
        _prune_report(result, out)
        if args.vacuum and isinstance(store, SqliteStore) and not args.dry_run:
            out.write(f"vacuum: the file shrank by {format_bytes(store.vacuum())}\n")
    finally:
        store.close()
    return 0


def _prune_report(result: PruneResult, out: TextIO) -> None:
    verb = "would remove" if result.dry_run else "removed"
    out.write(f"{verb} {result.total_events:,} events and {result.samples:,} samples\n")
    width = max((len(name) for name in result.events), default=0)
    for dataset, n in sorted(result.events.items()):
        by_size = result.size_cap[dataset]
        note = f"  ({by_size:,} by the size cap)" if by_size else ""
        out.write(f"  {dataset.ljust(width)}  {n:>12,}{note}\n")
    if result.size_cap_samples:
        out.write(f"  {result.size_cap_samples:,} samples by the size cap\n")
    if result.over_cap_bytes:
        out.write(
            f"the store is {format_bytes(result.over_cap_bytes)} over store.max_bytes:"
            " a prune also removes the oldest events and samples until it is under\n"
        )
    if result.reclaimed_bytes:
        out.write(f"gave {format_bytes(result.reclaimed_bytes)} back to the file system\n")


def _time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
