"""A five-minute Elasticsearch outage under load: nothing lost, nothing stored twice.

A real ``vigil collect`` process writes to osmem-server (the Elasticsearch
stand-in) through a TCP proxy this test controls, while three kinds of load
run steadily, each item carrying a unique number:

- ECS log lines appended to a tailed file (``"n": k``);
- haproxy syslog datagrams sent to ``collect.syslog_udp`` (``GET /outage/k``);
- a scrape target whose counter ``outage_test_scrapes_total`` is the number
  of scrapes it answered, so the store must hold the values 1..N (and
  ``up == 1`` N times).

The outage is real from the client's side while the server keeps its data
(restarting osmem-server would lose it): for its first half the proxy
refuses connections (a node down), for its second half it accepts them,
forwards the requests and never answers (a partition, or a node too busy to
answer), so bulk requests time out after ``store.request_timeout_s`` although
the server may have stored them, and their replay must not duplicate.

Afterwards every line, datagram and scrape is in the store exactly once, the
spool (``vigil_collector_spool_bytes``) went up and back to 0, and nothing was
dropped or dead-lettered.

``VIGIL_TEST_ES_OUTAGE_S`` sets the outage length: 300 s (the issue's five
minutes) by default, so the test takes about six minutes (one xdist worker);
``VIGIL_TEST_ES_OUTAGE_S=20`` is a quick local run.
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

import pytest
from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families
from scrape_target import Target

from siem.elasticsearch import ElasticsearchStore
from siem.model import EventQuery, Matcher

REPO = Path(__file__).resolve().parents[2]
OUTAGE_S = float(os.environ.get("VIGIL_TEST_ES_OUTAGE_S", "300"))
REQUEST_TIMEOUT_S = 10.0  # store.request_timeout_s: how long a bulk without an answer blocks
CATCH_UP_S = 180.0  # an upper bound for replaying the outage, never reached when things work
# Steady load. osmem-server stores some 500-2,000 documents/s on a shared CI machine, so
# higher rates make the catching up, not Vigil, the length of the test.
LINES_PER_S = 25
DATAGRAMS_PER_S = 10
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
    """Numbered log lines and syslog datagrams at a steady rate, from one thread."""

    def __init__(self, log_file: Path, syslog: tuple[str, int]) -> None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self.log_file = log_file
        self.syslog = syslog
        self.lines = 0
        self.datagrams = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        tick = 0.2  # LINES_PER_S and DATAGRAMS_PER_S are multiples of 1 / tick
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with sock, self.log_file.open("a", encoding="utf-8") as fh:
            while not self._stop.wait(tick) and self.lines < MAX_ITEMS:
                for _ in range(int(LINES_PER_S * tick)):
                    doc = {
                        "@timestamp": "2026-11-30T01:00:00.000Z",
                        "event": {"dataset": "outage.app"},
                        "message": f"line {self.lines}",
                        "n": self.lines,
                    }
                    fh.write(json.dumps(doc) + "\n")
                    self.lines += 1
                fh.flush()
                for _ in range(int(DATAGRAMS_PER_S * tick)):
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
    """The collector's own /metrics: ``name{labels}`` → value (0 while it does not answer)."""
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


@pytest.fixture
def target() -> Iterator[Target]:
    served = Target("outage_test_scrapes", wait_s=CATCH_UP_S)
    try:
        yield served
    finally:
        served.close()


@pytest.fixture
def proxy(es_url: str) -> Iterator[Proxy]:
    host, port = es_url.removeprefix("http://").rstrip("/").rsplit(":", 1)
    rv = Proxy((host, int(port)))
    try:
        yield rv
    finally:
        rv.close()


def test_es_outage_loses_and_duplicates_nothing(
    tmp_path: Path, es_url: str, proxy: Proxy, target: Target, record_property: Callable[..., None]
) -> None:
    data = tmp_path / "data"
    syslog_port, metrics_port = free_port(), free_port()
    config = tmp_path / "vigil.yaml"
    config.write_text(
        textwrap.dedent(
            f"""\
            store:
              backend: elasticsearch
              url: "http://127.0.0.1:{proxy.port}"
              es_compat_headers: false
              request_timeout_s: {REQUEST_TIMEOUT_S}
            collect:
              interval_s: 1
              scrape_stack: false
              tail: ["logs/*.log"]
              syslog_udp: "127.0.0.1:{syslog_port}"
              scrape:
                outage:
                  targets: ["{target.address}"]
                  timeout_s: 2
            """
        )
    )
    env = dict(os.environ, VIGIL_DATA_DIR=str(data), VIGIL_COLLECT_PORT=str(metrics_port))
    stderr = tmp_path / "collector.stderr"
    with stderr.open("wb") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", "vigil.cli", "--config", str(config), "collect"],
            env=env,
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    store = ElasticsearchStore(es_url, compat_headers=False)  # the server itself, no proxy
    peak: Counter[str] = Counter()

    def watch(seconds: float) -> None:
        """Sleep ``seconds`` while noting the highest spool figures the collector shows."""
        until = time.monotonic() + seconds
        while time.monotonic() < until:
            assert proc.poll() is None, "the collector exited"
            metrics = collector_metrics(metrics_port)
            for name in ("vigil_collector_spool_bytes", "vigil_collector_spool_oldest_seconds"):
                peak[name] = max(peak[name], int(metrics.get(name, 0)))
            time.sleep(min(1.0, max(0.0, until - time.monotonic())))

    try:
        # The syslog socket is bound before /metrics answers: no datagram is sent to nobody.
        wait_for("the collector's /metrics", lambda: bool(collector_metrics(metrics_port)), 60)
        with Load(data / "logs" / "app.log", ("127.0.0.1", syslog_port)) as load:
            wait_for(
                "the first items in the store",
                lambda: count(store, "outage.app") > 0 and count(store, "haproxy.log") > 0,
                60,
            )
            before = (load.lines, load.datagrams, target.served)
            started = time.monotonic()
            proxy.set_mode("refuse")
            watch(OUTAGE_S / 2)
            proxy.set_mode("swallow")
            watch(OUTAGE_S / 2)
            proxy.set_mode("forward")
            outage = time.monotonic() - started
            during = (load.lines, load.datagrams, target.served)
            watch(5)  # load goes on while the collector catches up
        served = target.hold()  # no more scrapes are answered (nor counted)
        assert all(d > b for d, b in zip(during, before, strict=True)), "the load stopped"
        expected_lines, expected_datagrams = load.lines, load.datagrams
        recovered = time.monotonic()

        def store_caught_up() -> bool:
            progress.update(
                lines=count(store, "outage.app"),
                datagrams=count(store, "haproxy.log"),
                spool_bytes=collector_metrics(metrics_port).get("vigil_collector_spool_bytes", -1),
            )
            return (
                progress["lines"] >= expected_lines
                and progress["datagrams"] >= expected_datagrams
                and progress["spool_bytes"] == 0
            )

        progress: dict[str, float] = {}
        deadline = recovered + CATCH_UP_S
        while not store_caught_up():
            assert time.monotonic() < deadline, (
                f"no catching up: {expected_lines} lines, {expected_datagrams} datagrams"
                f" sent; the store has {progress}; lines missing"
                f" {missing(stored_lines(store), expected_lines)}, datagrams missing"
                f" {missing(stored_datagrams(store), expected_datagrams)}"
            )
            time.sleep(1.0)
        caught_up_s = time.monotonic() - recovered
        metrics = collector_metrics(metrics_port)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, "the collector stopped with unwritten data"
        lines, datagrams = stored_lines(store), stored_datagrams(store)
        scrapes, up = stored_scrapes(store)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        store.close()
    log = stderr.read_text(errors="replace")
    assert "Traceback" not in log, log[-5000:]
    assert sorted(lines) == list(range(expected_lines)), "log lines lost"
    assert sorted(datagrams) == list(range(expected_datagrams)), "syslog datagrams lost"
    assert sorted(scrapes) == list(range(1, served + 1)), "scrapes lost"
    assert up == served, "up samples lost or duplicated"
    duplicates = sum(c - 1 for c in [*lines.values(), *datagrams.values(), *scrapes.values()])
    assert duplicates == 0, "items stored twice"
    assert peak["vigil_collector_spool_bytes"] > 0, "nothing was spooled"
    assert peak["vigil_collector_spool_oldest_seconds"] > 0
    assert proxy.swallowed > 0, "no answer was lost: the second half tested nothing"
    if OUTAGE_S / 2 >= 3 * REQUEST_TIMEOUT_S:  # time for several bulks without an answer
        # Bulks the cluster stored but whose answers were lost were sent again: 409, counted.
        assert metrics["vigil_collector_duplicate_events_total"] > 0
    assert metrics["vigil_collector_spool_bytes"] == 0
    assert metrics["vigil_collector_spool_oldest_seconds"] == 0
    assert metrics["vigil_collector_write_errors_total"] > 0
    assert metrics["vigil_collector_syslog_datagrams_total{result=received}"] == expected_datagrams
    for dropped in (
        "vigil_collector_spool_dropped_items_total",
        "vigil_collector_spool_corrupt_records_total",
        "vigil_collector_dead_letter_items_total",
        "vigil_collector_lost_bytes_total",  # per file
        "vigil_collector_syslog_datagrams_total{result=dropped}",
    ):
        assert sum(v for k, v in metrics.items() if k.startswith(dropped)) == 0, dropped
    record_property(
        "measured",
        f"{outage:.0f} s outage: {expected_lines} lines, {expected_datagrams} datagrams,"
        f" {served} scrapes stored once; spool peak {peak['vigil_collector_spool_bytes']} bytes;"
        f" caught up {caught_up_s:.0f} s after the outage (+5 s of load)",
    )
