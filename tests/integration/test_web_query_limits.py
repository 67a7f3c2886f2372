"""A real threaded ``vigil web`` server stays responsive while a pathological query runs,
and stops the query when its client hangs up."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from werkzeug.serving import BaseWSGIServer, make_server

from alerting.promql import Engine
from dashboards.app import create_app
from siem.limits import QueryCancelledError
from siem.memory import MemoryStore
from siem.model import Sample, Series, make_labels
from vigil.auth import UserStore
from vigil.settings import from_mapping

NOW = 1_700_000_000.0
DAY = 86_400.0


class RecordingEngine(Engine):
    """The real engine, telling the test when a range query starts and how it ended."""

    def __init__(self, store: MemoryStore) -> None:
        super().__init__(store)
        self.started = threading.Event()
        self.ended = threading.Event()
        self.error: BaseException | None = None

    def range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        self.started.set()
        try:
            return super().range(expr, start, end, step)
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self.ended.set()


@dataclass
class Web:
    url: str
    port: int
    engine: RecordingEngine
    token: str


def _store() -> MemoryStore:
    # A day of 10 s scrapes for 20 series: a sum_over_time(x[1d]) every 8 s
    # slices ~8,600 points per series per step, which runs for minutes.
    store = MemoryStore()
    points = int(DAY / 10)
    for s in range(20):
        labels = make_labels("req_total", pod=str(s))
        store.write(samples=[Sample(labels, NOW - DAY + i * 10, float(i)) for i in range(points)])
    return store


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    tmp: Path = tmp_path_factory.mktemp("web")
    store = _store()
    engine = RecordingEngine(store)
    settings = from_mapping(
        {"data_dir": str(tmp), "query": {"max_samples": 500_000, "max_concurrency": 2}}
    )
    app = create_app(settings, store=store, engine=engine)
    _, token = UserStore(tmp / "users.db").create_token("reader", "viewer")
    server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield Web(f"http://127.0.0.1:{server.server_port}", server.server_port, engine, token)
    server.shutdown()
    server.server_close()


def _get(web: Web, path: str, timeout: float = 10.0) -> tuple[int, dict[str, object]]:
    try:
        request = urllib.request.Request(
            web.url + path, headers={"Authorization": f"Bearer {web.token}"}
        )
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def test_web_answers_healthz_during_a_heavy_query_and_cancels_it_on_hangup(web: Web) -> None:
    query = urllib.parse.urlencode(
        {"query": "sum_over_time(req_total[1d])", "start": NOW - DAY, "end": NOW, "step": 8}
    )
    client = socket.create_connection(("127.0.0.1", web.port))
    client.sendall(
        f"GET /api/query_range?{query} HTTP/1.1\r\nHost: x\r\n"
        f"Authorization: Bearer {web.token}\r\n\r\n".encode()
    )
    assert web.engine.started.wait(10), "the heavy query never started"
    for _ in range(3):
        began = time.monotonic()
        status, body = _get(web, "/healthz", timeout=5)
        # The requirement: /healthz within 1 s while the query runs.
        assert (status, body) == (200, {"status": "ok"})
        assert time.monotonic() - began < 1.0
    assert not web.engine.ended.is_set(), "the query finished before the client left"
    client.close()
    assert web.engine.ended.wait(30), "the query kept running after its client left"
    assert isinstance(web.engine.error, QueryCancelledError)


def test_web_backtracking_regex_answers(web: Web) -> None:
    expr = urllib.parse.quote(r'{__name__=~"(\\w+)+x", pod=~"(\\d+)+x"}')
    status, body = _get(web, f"/api/query?query={expr}&time={NOW}")
    assert status == 200
    assert body["data"] == {"resultType": "vector", "result": []}


def test_web_sample_limit_is_422_execution(web: Web) -> None:
    # Three selectors of 172,800 samples each: over the 500,000 limit while loading.
    expr = "req_total + req_total offset 1h + req_total offset 2h"
    query = urllib.parse.urlencode({"query": expr, "start": NOW - DAY, "end": NOW, "step": 60})
    status, body = _get(web, f"/api/query_range?{query}")
    assert status == 422
    assert body["errorType"] == "execution"
    assert "would load too many samples into memory" in str(body["error"])


def test_web_deep_expression_is_400_with_position(web: Web) -> None:
    expr = urllib.parse.quote("(" * 5000 + "1" + ")" * 5000)
    status, body = _get(web, f"/api/query?query={expr}&time={NOW}")
    assert status == 400
    assert body["errorType"] == "bad_data"
    assert "column 129" in str(body["error"])
