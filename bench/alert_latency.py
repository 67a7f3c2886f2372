"""Alert latency: from a sample written to the store to the Slack API call that pages.

Builds what a large installation evaluates every second and times the whole
path through the real components:

- a ``SqliteStore`` (what ``vigil up`` uses) that a scraper process (as
  ``vigil collect`` runs beside ``vigil alert``) fills with 10 000 series every
  second: 5 000 counters ``bench_requests_total`` and 5 000 gauges
  ``bench_queue_depth``, 10 instances for each of 500 services;
- 1 000 alerting rules in 10 groups at a 1 s evaluation interval: 500
  ``sum by (service) (rate(bench_requests_total{service="sN"}[30s])) > 20`` and
  500 ``max by (service) (bench_queue_depth{service="sN"}) > 100``, no ``for``;
- the real ``AlertEngine`` loop with the real ``SlackNotifier`` (no grouping, so
  ``group_wait: 0s``), posting to a Slack-compatible HTTP server in this process
  that stamps the time each ``chat.postMessage`` arrives.

Every ``--spacing`` seconds the scraper writes the first bad sample for a service
no other trigger used (a counter jump, or a queue that stays deep from then on);
the latency of that trigger is the time from the write's commit to the arrival
of its Slack message. Prints
p50, p99 and max over ``--triggers`` triggers, the duration of every evaluation
pass (all 10 groups, and bringing the sample cache up to date) against the 1 s
interval, and two baselines measured in the
same run: whole passes with the sample cache off (``cache_max_samples=0``: the
shared reads read the store's windows every pass), and one group evaluated with
the shared reads off too (``AlertEngine(share_fetches=False)``: every rule reads
the store itself; a whole pass that way takes minutes). The engine's first pass
loads the cache from the store; the triggers start after it.
Goal: p99 under 2 s and every pass within the interval.

    .venv/bin/python bench/alert_latency.py [--triggers 20] [--spacing 1.3]
"""

from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import queue
import random
import re
import statistics
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from alerting.engine import AlertEngine
from alerting.notify.slack import SlackNotifier
from alerting.rules import RuleGroup, load_rules
from alerting.state import AlertBook, AlertDB
from siem.model import Sample, labels_from
from siem.sqlite import SqliteStore

SERVICES = 500
INSTANCES = 10
GROUPS = 10
INTERVAL = 1.0
GOAL_P99 = 2.0
TOKEN = "xoxb-bench"
ALERTNAME = re.compile(r"Bench(?:Rate|Queue)\d{3}")


class SlackFarEnd:
    """A Slack-compatible ``chat.postMessage``/``chat.update`` that stamps each arrival."""

    def __init__(self) -> None:
        self.arrivals: dict[str, float] = {}
        self.lock = threading.Lock()
        far = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                arrived = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with far.lock:
                    for name in ALERTNAME.findall(body.decode(errors="replace")):
                        far.arrivals.setdefault(name, arrived)
                answer = json.dumps(
                    {"ok": True, "channel": "C1", "ts": f"{arrived:.6f}", "message": {}}
                ).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/api/"

    def __enter__(self) -> SlackFarEnd:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def rules_file(path: Path) -> Path:
    q = '"'
    groups = []
    per_group = SERVICES * 2 // GROUPS
    rules = []
    for s in range(SERVICES):
        rules.append(
            {
                "alert": f"BenchRate{s:03d}",
                "expr": f"sum by (service) (rate(bench_requests_total{{service={q}s{s}{q}}}[30s]))"
                " > 20",
                "labels": {"severity": "critical"},
                "annotations": {"summary": "{{ $labels.service }}: {{ $value }} req/s"},
            }
        )
        rules.append(
            {
                "alert": f"BenchQueue{s:03d}",
                "expr": f'max by (service) (bench_queue_depth{{service="s{s}"}}) > 100',
                "labels": {"severity": "critical"},
                "annotations": {"summary": "{{ $labels.service }}: queue {{ $value }}"},
            }
        )
    for g in range(GROUPS):
        groups.append({"name": f"bench-{g}", "rules": rules[g * per_group : (g + 1) * per_group]})
    path.write_text(json.dumps({"groups": groups}), encoding="utf-8")
    return path


class Scraper:
    """Writes every series once a second, plus the bad samples it is told to add."""

    def __init__(self, store: SqliteStore) -> None:
        self.store = store
        self.counters = {(s, i): 0.0 for s in range(SERVICES) for i in range(INSTANCES)}
        self.labels = {
            (s, i, name): labels_from({"service": f"s{s}", "instance": f"i{i}", "__name__": name})
            for s, i in self.counters
            for name in ("bench_requests_total", "bench_queue_depth")
        }
        self.bad: list[tuple[str, int]] = []
        self.deep: set[int] = set()  # services whose queue stays deep once triggered
        self.written: dict[str, float] = {}
        self.lock = threading.Lock()
        self.write_s: list[float] = []

    def scrape(self, t: float) -> None:
        with self.lock:
            bad, self.bad = self.bad, []
        for kind, s in bad:
            if kind == "rate":
                self.counters[(s, 0)] += 10_000.0
            else:
                self.deep.add(s)
        samples = []
        for (s, i), value in self.counters.items():
            value += 1.0
            self.counters[(s, i)] = value
            samples.append(Sample(self.labels[(s, i, "bench_requests_total")], t, value))
            depth = 1000.0 if s in self.deep and i == 0 else 10.0
            samples.append(Sample(self.labels[(s, i, "bench_queue_depth")], t, depth))
        started = time.perf_counter()
        self.store.write(samples=samples)
        self.write_s.append(time.perf_counter() - started)
        done = time.time()
        for kind, s in bad:
            self.written[f"Bench{'Rate' if kind == 'rate' else 'Queue'}{s:03d}"] = done


def scrape_process(path: Path, commands: Any, results: Any, stop: Any) -> None:
    """The scraper in its own process: takes ``(kind, service)`` triggers from
    ``commands``, reports ``("written", alertname, time)`` and ``("write_s", seconds)``."""
    scraper = Scraper(SqliteStore(path))
    while not stop.is_set():
        started = time.time()
        while True:
            try:
                scraper.bad.append(commands.get_nowait())
            except queue.Empty:
                break
        seen = set(scraper.written)
        scraper.scrape(started)
        for name in set(scraper.written) - seen:
            results.put(("written", name, scraper.written[name]))
        results.put(("write_s", "", scraper.write_s[-1]))
        stop.wait(max(0.0, INTERVAL - (time.time() - started)))
    scraper.store.close()


class ScraperProcess:
    """The parent's side of ``scrape_process``: sends triggers, collects what it reports."""

    def __init__(self, path: Path) -> None:
        context = multiprocessing.get_context("spawn")
        self.commands = context.Queue()
        self.results = context.Queue()
        self.stop = context.Event()
        self.process = context.Process(
            target=scrape_process, args=(path, self.commands, self.results, self.stop)
        )
        self.written: dict[str, float] = {}
        self.write_s: list[float] = []
        self.reader = threading.Thread(target=self._read, daemon=True)

    def _read(self) -> None:
        while True:
            kind, name, value = self.results.get()
            if kind == "written":
                self.written[name] = value
            elif kind == "write_s":
                self.write_s.append(value)
            else:
                return

    def start(self) -> None:
        self.process.start()
        self.reader.start()

    def trigger(self, kind: str, service: int) -> None:
        self.commands.put((kind, service))

    def close(self) -> None:
        self.stop.set()
        self.process.join(30)
        self.results.put(("done", "", 0.0))
        self.reader.join(30)


class TimedEngine(AlertEngine):
    """The engine as it is, noting how long each pass (every group at one ``at``) took."""

    passes: dict[float, float]
    refreshes: list[float]
    evaluated: set[float]

    def evaluate_group(self, group: RuleGroup, at: float) -> Any:
        started = time.perf_counter()
        try:
            return super().evaluate_group(group, at)
        finally:
            self.passes[at] = self.passes.get(at, 0.0) + time.perf_counter() - started
            self.evaluated.add(at)


def engine(
    store: SqliteStore,
    groups: list[RuleGroup],
    data: Path,
    slack_url: str,
    *,
    share: bool,
    cache: bool = True,
) -> TimedEngine:
    slack = SlackNotifier(TOKEN, "#bench", api_url=slack_url, backoff_s=0.05)
    rv = TimedEngine(
        store,
        groups,
        AlertBook(AlertDB(data / f"alerts-{share}-{cache}.db")),
        [slack],
        registry=CollectorRegistry(),
        share_fetches=share,
        cache_max_samples=5_000_000 if cache else 0,
    )
    rv.passes = {}
    rv.refreshes = []
    rv.evaluated = set()
    kept = rv.cache
    if kept is not None:  # a pass includes bringing the sample cache up to date
        refresh = kept.refresh

        def timed(now: float) -> None:
            started = time.perf_counter()
            refresh(now)
            took = time.perf_counter() - started
            rv.refreshes.append(took)
            rv.passes[now] = rv.passes.get(now, 0.0) + took

        kept.refresh = timed  # type: ignore[method-assign]
    return rv


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triggers", type=int, default=20)
    parser.add_argument("--spacing", type=float, default=1.3, help="seconds between triggers")
    parser.add_argument("--baseline-passes", type=int, default=2)
    parser.add_argument("--warmup", type=float, default=35.0, help="seconds of samples first")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory() as tmp, SlackFarEnd() as far:
        data = Path(tmp)
        store = SqliteStore(data / "siem.db")
        groups = load_rules([rules_file(data / "bench.yaml")], default_interval=INTERVAL)
        scraper = ScraperProcess(data / "siem.db")
        scraper.start()
        time.sleep(args.warmup)  # a full 30 s rate window of healthy samples first

        # Baseline: one group (100 of the rules) with every rule reading the store on its
        # own; a whole pass that way takes minutes, so one group stands for a tenth.
        base = engine(store, groups, data, far.api_url, share=False)
        for _ in range(args.baseline_passes):
            base.evaluate_group(base.groups[0], time.time())

        # Baseline: whole passes with the shared reads but without the sample cache.
        uncached = engine(store, groups, data, far.api_url, share=True, cache=False)
        for _ in range(args.baseline_passes):
            uncached.run_once(time.time())

        shared = engine(store, groups, data, far.api_url, share=True)
        loop_stop = threading.Event()
        loop = threading.Thread(target=shared.run, args=(loop_stop,), daemon=True)
        loop.start()
        while not shared.evaluated:  # the first pass loads the cache
            time.sleep(0.1)
        first = time.time()
        while time.time() < first + 3 or len(shared.passes) < 2:
            time.sleep(0.1)
        load_s = shared.passes[min(shared.passes)]
        del shared.passes[min(shared.passes)]
        picks = random.Random(7).sample(range(SERVICES), args.triggers)
        for n, s in enumerate(picks):
            scraper.trigger("rate" if n % 2 else "queue", s)
            time.sleep(args.spacing)
        deadline = time.time() + 90  # the last triggers' passes and deliveries
        while time.time() < deadline and not set(scraper.written) <= set(far.arrivals):
            time.sleep(0.5)
        loop_stop.set()
        loop.join(30)
        scraper.close()
        store.close()

    latencies = [far.arrivals[k] - t for k, t in scraper.written.items() if k in far.arrivals]
    missing = sorted(set(scraper.written) - set(far.arrivals))
    passes = sorted(v for at, v in shared.passes.items() if at in shared.evaluated)
    baseline = sorted(base.passes.values())
    no_cache = sorted(uncached.passes.values())
    over = sum(1 for p in passes if p > INTERVAL)
    print(
        f"alert latency (sample written → Slack call), {SERVICES * INSTANCES * 2:,} series, "
        f"{SERVICES * 2:,} rules, {INTERVAL:.0f} s interval, group_wait 0s"
    )
    if latencies:
        p50, p99 = quantile(latencies, 0.5), quantile(latencies, 0.99)
        print(
            f"  {len(latencies)} alerts: p50 {p50:.2f} s, p99 {p99:.2f} s, "
            f"max {max(latencies):.2f} s"
            f"  (goal p99 < {GOAL_P99:.0f} s: {'met' if p99 < GOAL_P99 else 'MISSED'})"
        )
    if missing:
        print(f"  {len(missing)} triggers never reached Slack: {', '.join(missing[:5])}")
    print(
        f"  evaluation pass (1 000 rules): median {statistics.median(passes):.3f} s, "
        f"max {passes[-1]:.3f} s, {over} of {len(passes)} over the {INTERVAL:.0f} s interval"
    )
    print(
        f"  first pass, loading the sample cache: {load_s:.2f} s; later catch-ups with "
        f"the store: median {statistics.median(shared.refreshes[1:]):.3f} s (in the passes)"
    )
    print(
        f"  baseline, sample cache off (shared reads of the store): pass median "
        f"{statistics.median(no_cache):.2f} s, max {no_cache[-1]:.2f} s "
        f"(cache {statistics.median(no_cache) / statistics.median(passes):.0f}x faster)"
    )
    whole = statistics.median(baseline) * GROUPS
    print(
        f"  baseline, every rule reading the store itself: {statistics.median(baseline):.2f} s "
        f"per group of {SERVICES * 2 // GROUPS} rules, about {whole:.0f} s a pass "
        f"({whole / statistics.median(passes):.0f}x slower than with the cache)"
    )
    print(f"  scraper write of 10 000 samples: median {statistics.median(scraper.write_s):.3f} s")


if __name__ == "__main__":
    main()
