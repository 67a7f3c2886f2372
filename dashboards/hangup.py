"""Notice a client that hangs up while its request is being answered.

werkzeug's server reads the request and then runs the app; nothing reads the
socket until the response is written, so a client that gave up on a slow
query goes unnoticed. ``HangupWatcher`` polls the request's socket from a
thread: readable with nothing to peek at means the peer closed its side (a
reset says so too), and ``on_hangup`` is called once, e.g. to cancel the
query's ``siem.limits.QueryBudget``.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable

POLL_S = 0.1


class HangupWatcher:
    """Watch ``sock`` (the request's socket, ``environ["werkzeug.socket"]``) until ``stop()``.

    Without a socket (another server, a test client) it does nothing. Data
    waiting on the socket (a pipelined request) ends the watch without a call:
    the client is still there.
    """

    def __init__(self, sock: socket.socket | None, on_hangup: Callable[[], None]) -> None:
        self._sock = sock
        self._on_hangup = on_hangup
        self._stopped = threading.Event()
        if sock is not None:
            threading.Thread(target=self._watch, name="vigil-hangup", daemon=True).start()

    def _watch(self) -> None:
        sock = self._sock
        assert sock is not None
        while not self._stopped.is_set():
            try:
                readable, _, _ = select.select([sock], [], [], POLL_S)
                if not readable:
                    continue
                if self._stopped.is_set():
                    return
                gone = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
            except BlockingIOError:
                continue
            except (ConnectionError, TimeoutError):
                gone = True
            except (OSError, ValueError):
                # closed by the server, or a TLS socket that cannot peek: stop watching
                return
            if gone:
                self._on_hangup()
            return

    def stop(self) -> None:
        """End the watch (the response is about to be written).

        Does not wait: the thread sees the flag within ``POLL_S``, and a late
        call can only cancel a query that has already finished.
        """
        self._stopped.set()
