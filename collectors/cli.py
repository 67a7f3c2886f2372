"""``vigil collect [--once]``: the collector process."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from types import FrameType

from prometheus_client import start_http_server

from collectors.loop import Collector, tune_gc
from siem.backends import open_store
from vigil.logging import setup_logging
from vigil.settings import load_settings

log = logging.getLogger("vigil.collect")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``collect`` to the ``vigil`` command line."""
    parser = sub.add_parser("collect", help="scrape metrics and tail logs into the store")
    parser.add_argument(
        "--once", action="store_true", help="one pass, then exit (for tests and cron)"
    )
    parser.set_defaults(func=cmd_collect)


def cmd_collect(args: argparse.Namespace) -> int:
    """Run the collector; 0 when everything collected was stored, 1 otherwise."""
    settings = load_settings(args.config)
    setup_logging(
        "collect", data_dir=settings.data_dir, log_format=getattr(args, "log_format", None)
    )
    store = open_store(settings, collector=True)
    try:
        collector = Collector(settings, store)
        tune_gc()
        if args.once:
            try:
                return 0 if collector.run_once() else 1
            finally:
                collector.close()
        server, _ = start_http_server(settings.collect.port, addr="127.0.0.1")
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            log.info("stopping on %s", signal.Signals(signum).name)
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        try:
            return 0 if collector.run(stop) else 1
        finally:
            server.shutdown()
            collector.close()
    finally:
        store.close()
