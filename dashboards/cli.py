"""``vigil web``: serve the dashboards on ``web.host:web.port``."""

from __future__ import annotations

import argparse
import logging
import signal
from types import FrameType

from werkzeug.serving import WSGIRequestHandler, make_server

from vigil.logging import setup_logging
from vigil.settings import load_settings

log = logging.getLogger("vigil.web")


def cmd_web(args: argparse.Namespace) -> int:
    """Serve the web UI until SIGINT/SIGTERM (threaded werkzeug server)."""
    from dashboards.app import context, create_app

    settings = load_settings(args.config)
    setup_logging("web", data_dir=settings.data_dir, log_format=getattr(args, "log_format", None))
    host = args.host or settings.web.host
    port = args.port if args.port is not None else settings.web.port
    app = create_app(settings)
    server = make_server(host, port, app, threaded=True, request_handler=_AppLogsRequests)
    log.info("web UI listening", extra={"url.full": f"http://{host}:{server.server_port}/"})
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    try:
        server.serve_forever()
    finally:
        server.server_close()
        with app.app_context():
            context().store.close()
    return 0


class _AppLogsRequests(WSGIRequestHandler):
    """werkzeug's handler without its plain-text access line: the app logs each request."""

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


def _exit_on_sigterm(signum: int, frame: FrameType | None) -> None:
    # Leaves serve_forever through the finally block, so the store is closed.
    raise SystemExit(0)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Add ``vigil web`` to the ``vigil`` command line."""
    web = sub.add_parser("web", help="serve the web UI (overview dashboard and JSON API)")
    web.add_argument("--host", help="address to listen on (default: web.host, VIGIL_WEB_HOST)")
    web.add_argument(
        "--port", type=int, help="port to listen on (default: web.port, VIGIL_WEB_PORT)"
    )
    web.set_defaults(func=cmd_web)
