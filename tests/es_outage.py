"""A real ``vigil collect`` writing to osmem-server through a TCP proxy the test controls.

Shared by the Elasticsearch reliability tests (tests/reliability/test_es_*.py):

- :class:`Proxy` forwards to the server, refuses connections (a node down) or
  swallows answers (a partition);
- :class:`Load` appends numbered ECS log lines to a tailed file and sends
  numbered haproxy syslog datagrams, at a steady rate;
- :class:`CollectorProcess` runs ``vigil collect`` with the store behind the proxy;
- the ``stored_*``/``count`` helpers read the store straight from the server,
  and :func:`assert_each_item_once` checks that every item is there exactly once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families
from scrape_target import Target

from siem.elasticsearch import ElasticsearchStore
from siem.model import EventQuery, Matcher

REPO = Path(__file__).resolve().parents[1]
MAX_ITEMS = 100_000  # bounds each load generator, whatever the outage length


class Proxy:
    """A TCP proxy to ``upstream``: ``forward``, ``refuse`` connections, or ``swallow`` answers.

    ``refuse`` closes the listening socket (connects get ECONNREFUSED) and every
    open connection; ``swallow`` accepts connections and forwards requests to the
    server but drops its answers, so the client waits until its timeout.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.port = free_port()
        self.mode = "forward"
        self.swallowed = 0  # answer bytes dropped
        self._lock = threading.Lock()
        self._conns: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._closed = False
        self._listen()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _listen(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # closed: refusing now
                return
            try:
                server = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                client.close()
                continue
            server.settimeout(None)
            with self._lock:
                self._conns |= {client, server}
            threading.Thread(target=self._pump, args=(client, server, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, answers: bool) -> None:
        try:
            while data := src.recv(65536):
                if answers and self.mode == "swallow":
                    self.swallowed += len(data)
                    continue
                dst.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(src, dst)

    def _drop(self, *socks: socket.socket) -> None:
        with self._lock:
            for sock in socks:
                self._conns.discard(sock)
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def _drop_all(self) -> None:
        with self._lock:
            conns = list(self._conns)
        self._drop(*conns)

    def set_mode(self, mode: str) -> None:
        """Switch to ``forward``, ``refuse`` or ``swallow``; open connections are cut."""
        self.mode = mode
        if mode == "refuse" and self._listener is not None:
            # shutdown() wakes the thread blocked in accept(); close() alone would not,
            # and the socket would go on listening.
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        self._drop_all()  # a connection that swallowed an answer is out of step
        if mode != "refuse" and self._listener is None and not self._closed:
            self._listen()

    def close(self) -> None:
        self._closed = True
        self.set_mode("refuse")


class Load:
    """Numbered log lines and syslog datagrams at a steady rate, from one thread.

    The rates are multiples of 5 per second (one batch every 0.2 s).
    """

    def __init__(
        self,
        log_file: Path,
        syslog: tuple[str, int],
        *,
        lines_per_s: int = 25,
        datagrams_per_s: int = 10,
    ) -> None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = log_file
        self.syslog = syslog
        self.lines_per_s = lines_per_s
        self.datagrams_per_s = datagrams_per_s
        self.lines = 0
        self.datagrams = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        tick = 0.2
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock, self.log_file.open("a", encoding="utf-8") as fh:
            while not self._stop.wait(tick) and self.lines < MAX_ITEMS:
                for _ in range(int(self.lines_per_s * tick)):
                    doc = {
                        "@timestamp": "2026-11-30T01:00:00.000Z",
                        "event": {"dataset": "outage.app"},
                        "message": f"line {self.lines}",
                        "n": self.lines,
                    }
                    fh.write(json.dumps(doc) + "\n")
                    self.lines += 1
                fh.flush()
                for _ in range(int(self.datagrams_per_s * tick)):
                    sock.sendto(haproxy_datagram(self.datagrams), self.syslog)
                    self.datagrams += 1

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(30)
        assert not self._thread.is_alive()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def haproxy_datagram(n: int) -> bytes:
    return (
        "<134>Nov 30 01:00:00 haproxy[4242]: 127.0.0.1:50000 [30/Nov/2026:01:00:00.000]"
        " web app/app1 0/0/0/1/1 200 119 - - ---- 1/1/0/0/0 0/0"
        f' {{127.0.0.1:45887|curl/7.88.1}} "GET /outage/{n} HTTP/1.1"'
    ).encode()


def collector_metrics(port: int) -> dict[str, float]:
    """The collector's own /metrics: ``name{labels}`` → value (empty while it does not answer)."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
    except OSError:
        return {}
    rv: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            rv[f"{s.name}{{{labels}}}" if labels else s.name] = s.value
    return rv


def wait_for(what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1.0)


def store_yaml(proxy: Proxy, request_timeout_s: float) -> str:
    """The ``store:`` section of a config whose store is osmem-server behind ``proxy``."""
    return textwrap.dedent(
        f"""\
        store:
          backend: elasticsearch
          url: "{proxy.url}"
          es_compat_headers: false
          request_timeout_s: {request_timeout_s}
        """
    )


class CollectorProcess:
    """``vigil collect`` with its store on osmem-server behind ``proxy``, tailing
    ``data/logs/*.log``, receiving syslog and scraping ``target`` every second."""

    def __init__(
        self, tmp_path: Path, proxy: Proxy, target: Target, *, request_timeout_s: float
    ) -> None:
        self.data = tmp_path / "data"
        self.syslog = ("127.0.0.1", free_port())
        self.metrics_port = free_port()
        config = tmp_path / "vigil.yaml"
        config.write_text(
            store_yaml(proxy, request_timeout_s)
            + textwrap.dedent(
                f"""\
                collect:
                  interval_s: 1
                  scrape_stack: false
                  tail: ["logs/*.log"]
                  syslog_udp: "{self.syslog[0]}:{self.syslog[1]}"
                  scrape:
                    outage:
                      targets: ["{target.address}"]
                      timeout_s: 2
                """
            )
        )
        env = dict(
            os.environ, VIGIL_DATA_DIR=str(self.data), VIGIL_COLLECT_PORT=str(self.metrics_port)
        )
        self.stderr = tmp_path / "collector.stderr"
        with self.stderr.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vigil.cli", "--config", str(config), "collect"],
                env=env,
                cwd=REPO,
                stdout=subprocess.DEVNULL,
                stderr=err,
            )

    def metrics(self) -> dict[str, float]:
        return collector_metrics(self.metrics_port)

    def load(self, **rates: int) -> Load:
        return Load(self.data / "logs" / "app.log", self.syslog, **rates)

    def stop(self) -> int:
        """SIGTERM; the exit code (0: everything collected was stored)."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=60)

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def __enter__(self) -> CollectorProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


def stored_lines(store: ElasticsearchStore) -> Counter[int]:
    events = store.search(EventQuery(dataset="outage.app", limit=10 * MAX_ITEMS))
    return Counter(int(e.doc["n"]) for e in events)


def stored_datagrams(store: ElasticsearchStore) -> Counter[int]:
    events = store.search(EventQuery(dataset="haproxy.log", limit=10 * MAX_ITEMS))
    return Counter(int(e.doc["url"]["original"].rsplit("/", 1)[1]) for e in events)


def stored_scrapes(store: ElasticsearchStore) -> tuple[Counter[int], int]:
    """How often each counter value is stored, and how many ``up == 1`` samples."""
    values: Counter[int] = Counter()
    for series in store.select([Matcher("__name__", "=", "outage_test_scrapes_total")], 0, 4e9):
        values.update(int(v) for _, v in series.points)
    up = sum(
        1
        for series in store.select(
            [Matcher("__name__", "=", "up"), Matcher("job", "=", "outage")], 0, 4e9
        )
        for _, v in series.points
        if v == 1
    )
    return values, up


def missing(found: Counter[int], sent: int) -> list[int]:
    return sorted(set(range(sent)) - set(found))[:100]


def count(store: ElasticsearchStore, dataset: str) -> int:
    from siem.aggregations import Count, CountResult

    result = store.aggregate(EventQuery(dataset=dataset), Count())
    assert isinstance(result, CountResult)
    return result.count


def wait_caught_up(
    store: ElasticsearchStore, collector: CollectorProcess, load: Load, timeout: float
) -> None:
    """Until the store holds every line and datagram ``load`` sent and the spool is empty."""
    progress: dict[str, float] = {}

    def caught_up() -> bool:
        assert collector.proc.poll() is None, "the collector exited"
        progress.update(
            lines=count(store, "outage.app"),
            datagrams=count(store, "haproxy.log"),
            spool_bytes=collector.metrics().get("vigil_collector_spool_bytes", -1),
        )
        return (
            progress["lines"] >= load.lines
            and progress["datagrams"] >= load.datagrams
            and progress["spool_bytes"] == 0
        )

    deadline = time.monotonic() + timeout
    while not caught_up():
        assert time.monotonic() < deadline, (
            f"no catching up: {load.lines} lines, {load.datagrams} datagrams"
            f" sent; the store has {progress}; lines missing"
            f" {missing(stored_lines(store), load.lines)}, datagrams missing"
            f" {missing(stored_datagrams(store), load.datagrams)}"
        )
        time.sleep(1.0)


DROPPED = (
    "vigil_collector_spool_dropped_items_total",
    "vigil_collector_spool_corrupt_records_total",
    "vigil_collector_dead_letter_items_total",
    "vigil_collector_lost_bytes_total",  # per file
    "vigil_collector_syslog_datagrams_total{result=dropped}",
)
"""The collector's metrics of items lost or set aside: all 0 after an outage."""


def assert_each_item_once(
    store: ElasticsearchStore, load: Load, served: int, metrics: dict[str, float]
) -> int:
    """Every line, datagram and scrape of the run is stored exactly once, nothing was
    dropped, the spool is empty; the number of duplicates the collector counted (409s)."""
    lines, datagrams = stored_lines(store), stored_datagrams(store)
    scrapes, up = stored_scrapes(store)
    assert sorted(lines) == list(range(load.lines)), "log lines lost"
    assert sorted(datagrams) == list(range(load.datagrams)), "syslog datagrams lost"
    assert sorted(scrapes) == list(range(1, served + 1)), "scrapes lost"
    assert up == served, "up samples lost or duplicated"
    duplicates = sum(c - 1 for c in [*lines.values(), *datagrams.values(), *scrapes.values()])
    assert duplicates == 0, "items stored twice"
    assert metrics["vigil_collector_spool_bytes"] == 0
    assert metrics["vigil_collector_spool_oldest_seconds"] == 0
    assert metrics["vigil_collector_syslog_datagrams_total{result=received}"] == load.datagrams
    for dropped in DROPPED:
        assert sum(v for k, v in metrics.items() if k.startswith(dropped)) == 0, dropped
    return int(metrics["vigil_collector_duplicate_events_total"])


@contextlib.contextmanager
def proxy_to(es_url: str) -> Iterator[Proxy]:
    """A :class:`Proxy` to the server at ``es_url``, forwarding; closed afterwards."""
    host, port = es_url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    rv = Proxy((host, int(port)))
    try:
        yield rv
    finally:
        rv.close()
