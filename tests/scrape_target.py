"""A real /metrics scrape target for the reliability tests: its counter counts the scrapes.

``<name>_total`` is the number of scrapes it answered, so a store that holds
every scrape exactly once holds the values 1..N, each once.
"""

from __future__ import annotations

import contextlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Target:
    """A /metrics target counting the scrapes it answers; ``hold()`` stops answering.

    ``wait_s`` bounds how long :meth:`hold` waits for the collector's next scrape,
    and how long a held scrape waits before it is answered 503 (not counted).
    """

    def __init__(self, name: str = "spool_test_scrapes", wait_s: float = 60.0) -> None:
        self.served = 0
        self.wait_s = wait_s
        self._open = threading.Event()
        self._open.set()
        self.blocked = threading.Event()
        target = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if not target._open.is_set():
                    target.blocked.set()
                    target._open.wait(target.wait_s)
                    with contextlib.suppress(OSError):
                        self.send_error(503)  # a scrape from before: not counted
                    return
                target.served += 1  # one request at a time: the collector waits for each
                body = f"# TYPE {name} counter\n{name}_total {target.served}\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.address = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def hold(self) -> int:
        """Stop answering; once the collector waits on a scrape, the scrapes served so far."""
        self.blocked.clear()
        self._open.clear()
        assert self.blocked.wait(self.wait_s), "the collector stopped scraping"
        return self.served

    def release(self) -> None:
        self._open.set()

    def close(self) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
