"""A syslog UDP receiver: haproxy's HTTP log datagrams → ``haproxy.log`` events.

``collect.syslog_udp: "127.0.0.1:5140"`` (off for a ``vigil collect`` of
its own) makes the collector listen there; ``vigil up`` points haproxy's
``log`` at it, and when it is empty picks ``127.0.0.1:<up.syslog_port>`` for
both. A port that cannot be bound is a warning, ``vigil_collector_source_up{source="syslog"} 0``
and a retry (:class:`collectors.deferred.Deferred`), never the collector's end. A thread
receives datagrams into a bounded queue, so the collector's interval does not
leave them in the kernel's socket buffer; :meth:`SyslogReceiver.collect`
drains the queue and parses each datagram with the haproxy parser. A
datagram that does not parse becomes a ``vigil.collector.error`` event with
the raw datagram, like an unparsable log line.

What is guaranteed, and what is not:

- UDP has no positions and no re-delivery. The event id hashes the listen
  address, the collector run (its start time in ns), the datagram's receive
  sequence number in that run and a hash of its bytes: a batch the sink
  retries keeps its ids and is stored once; the same line sent twice is two
  events.
- Datagrams can be lost: by the network stack before they are received (a
  full socket buffer: not visible here, see the kernel's ``Udp: receive buffer
  errors``), when the queue is full (counted as ``dropped``), or when the
  collector stops before the store accepted them (no spool yet).
- ``vigil_collector_syslog_datagrams_total{result}`` counts ``received``,
  ``parsed``, ``failed`` (stored as error events) and ``dropped``.
"""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable

from collectors.ecs import error_event
from collectors.errors import CollectorError, LineError
from collectors.metrics import CollectorMetrics
from collectors.parsers import Parser, get_parser
from collectors.sink import Batch
from siem.model import Event

log = logging.getLogger("vigil.collect.syslog")

MAX_DATAGRAM = 65535
MAX_QUEUED = 100_000
"""Datagrams held between two collections; more are dropped (and counted)."""
BATCH = 5000
"""Datagrams turned into one batch: a bounded read, like the tailer's."""


def parse_address(value: str) -> tuple[str, int]:
    """``"127.0.0.1:5140"`` → ``("127.0.0.1", 5140)`` (port 0: any free one); else ValueError."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected host:port, got {value!r}")
    return host.strip("[]"), int(port)


class SyslogReceiver:
    """A collector source listening for syslog datagrams on ``address`` (``host:port``)."""

    def __init__(
        self,
        address: str,
        metrics: CollectorMetrics,
        *,
        parser: str = "haproxy",
        clock: Callable[[], float] = time.time,
        max_queued: int = MAX_QUEUED,
    ) -> None:
        host, port = parse_address(address)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            # A bigger buffer rides out a burst while the thread is descheduled.
            self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
            self._sock.bind((host, port))
        except OSError as exc:
            self._sock.close()
            raise CollectorError(
                f"collect.syslog_udp: cannot listen on {address}: {exc.strerror}; stop what"
                " holds it, or choose another port (collect.syslog_udp, or up.syslog_port"
                " under `vigil up`)"
            ) from None
        self._sock.settimeout(0.5)  # wakes up to notice close()
        bound = self._sock.getsockname()
        self.address = f"{bound[0]}:{bound[1]}"
        self.source = f"udp://{self.address}"
        self._parse: Parser = get_parser(parser, key="collect.syslog_udp")
        self._metrics = metrics
        self._clock = clock
        self._run = time.time_ns()
        self._seq = 0
        self._queue: deque[bytes] = deque()
        self._max_queued = max_queued
        self._lock = threading.Lock()
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="syslog-udp", daemon=True)
        self._thread.start()
        log.info("listening for syslog datagrams", extra={"url.full": self.source})

    def _receive(self) -> None:
        received = self._metrics.syslog_datagrams.labels("received")
        dropped = self._metrics.syslog_datagrams.labels("dropped")
        while not self._closed.is_set():
            try:
                data = self._sock.recv(MAX_DATAGRAM)
            except TimeoutError:
                continue
            except OSError as exc:
                if self._closed.is_set():
                    return
                # Never let the receiver die: log, wait a moment, go on.
                log.error("syslog receive failed", extra={"error.message": str(exc)})
                self._closed.wait(0.5)
                continue
            received.inc()
            with self._lock:
                if len(self._queue) >= self._max_queued:
                    dropped.inc()
                    continue
                self._queue.append(data)

    def behind(self) -> bool:
        """True while datagrams are waiting to be collected."""
        with self._lock:
            return bool(self._queue)

    def collect(self) -> list[Batch]:
        """At most :data:`BATCH` received datagrams, as events, in one batch."""
        with self._lock:
            taken = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
        if not taken:
            return []
        now = self._clock()
        events: list[Event] = []
        parsed = failed = 0
        for data in taken:
            self._seq += 1
            digest = hashlib.sha256(data).hexdigest()[:16]
            position = f"{self._run}:{self._seq}:{digest}"
            line = data.rstrip(b"\r\n\x00")
            try:
                events.append(
                    self._parse(line, source=self.source, position=position, offset=0, now=now)
                )
                parsed += 1
            except LineError as exc:
                failed += 1
                self._metrics.parse_errors.inc()
                events.append(
                    error_event(
                        line, str(exc), source=self.source, position=position, offset=0, now=now
                    )
                )
        self._metrics.syslog_datagrams.labels("parsed").inc(parsed)
        self._metrics.syslog_datagrams.labels("failed").inc(failed)
        return [Batch(events=tuple(events))]

    def close(self) -> None:
        """Stop receiving; datagrams not yet collected are lost."""
        self._closed.set()
        self._thread.join(5)
        self._sock.close()
