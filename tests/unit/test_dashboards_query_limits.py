"""The JSON API runs every query under ``query.*`` limits and answers like Prometheus."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from alerting.promql import InstantSample
from dashboards.app import create_app
from siem import limits
from siem.memory import MemoryStore
from siem.model import Event, Sample, Series, make_labels
from vigil.auth import UserStore
from vigil.settings import from_mapping

NOW = 1_700_000_000.0


class SlowEngine:
    """A QueryEngine whose instant query runs until its budget stops it (or ``release``)."""

    def __init__(self, *, obeys_budget: bool = True) -> None:
        self.obeys_budget = obeys_budget
        self.running = threading.Event()
        self.release = threading.Event()
        self.budgets: list[limits.QueryBudget | None] = []

    def instant(self, expr: str, at: float) -> Sequence[InstantSample] | float:
        self.budgets.append(limits.current())
        self.running.set()
        while not self.release.wait(0.01):
            if self.obeys_budget:
                limits.check()
        return 1.0

    def range(self, expr: str, start: float, end: float, step: float) -> list[Series]:
        return []


def _app(tmp_path: Path, query: dict[str, Any], **kwargs: Any) -> Flask:
    settings = from_mapping({"data_dir": str(tmp_path), "query": query})
    store = kwargs.pop("store", None) or MemoryStore()
    app = create_app(settings, store=store, **kwargs)
    app.config["TESTING"] = True
    # The query API is for viewers: every test client carries a viewer's token.
    _, token = UserStore(tmp_path / "users.db").create_token("reader", "viewer")
    app.test_client_class = _viewer_client(token)
    return app


def _viewer_client(token: str) -> type[FlaskClient]:
    class ViewerClient(FlaskClient):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {token}"

    return ViewerClient


def test_api_query_timeout_is_503_timeout(tmp_path: Path) -> None:
    engine = SlowEngine()
    client = _app(tmp_path, {"timeout_s": 0.2}, engine=engine).test_client()
    rv = client.get("/api/query", query_string={"query": "up", "time": NOW})
    assert rv.status_code == 503
    assert rv.get_json()["errorType"] == "timeout"
    assert rv.get_json()["error"].startswith("query timed out in")
    budget = engine.budgets[0]
    assert budget is not None and budget.timeout_s == 0.2


def test_api_query_waits_for_a_slot_within_its_timeout(tmp_path: Path) -> None:
    engine = SlowEngine()
    app = _app(tmp_path, {"timeout_s": 30, "max_concurrency": 1}, engine=engine)
    statuses: list[int] = []

    def ask() -> None:
        rv = app.test_client().get("/api/query", query_string={"query": "up"})
        statuses.append(rv.status_code)

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    assert engine.running.wait(10)
    threads[1].join(0.3)  # give the second one time to reach the engine if it could
    assert len(engine.budgets) == 1  # one runs, the other waits for the slot
    engine.release.set()
    for thread in threads:
        thread.join(10)
    assert statuses == [200, 200]
    assert len(engine.budgets) == 2


def test_api_query_queue_timeout_is_503(tmp_path: Path) -> None:
    engine = SlowEngine(obeys_budget=False)  # holds the only slot until released
    app = _app(tmp_path, {"timeout_s": 0.5, "max_concurrency": 1}, engine=engine)
    statuses: list[int] = []
    holder = threading.Thread(
        target=lambda: statuses.append(
            app.test_client().get("/api/query", query_string={"query": "up"}).status_code
        )
    )
    holder.start()
    assert engine.running.wait(10)
    rv = app.test_client().get("/api/query", query_string={"query": "up"})
    engine.release.set()
    holder.join(10)
    assert rv.status_code == 503
    assert rv.get_json() == {
        "status": "error",
        "errorType": "timeout",
        "error": "query timed out in query queue",
    }
    assert statuses == [200]
    assert len(engine.budgets) == 1  # the queued query never reached the engine


def test_api_sample_limit_is_422_execution(tmp_path: Path) -> None:
    store = MemoryStore()
    store.write(
        samples=[
            Sample(make_labels("up", pod=str(p)), NOW - i, 1.0) for p in range(5) for i in range(60)
        ]
    )
    client = _app(tmp_path, {"max_samples": 100}, store=store).test_client()
    rv = client.get(
        "/api/query_range", query_string={"query": "up", "start": NOW - 60, "end": NOW, "step": 1}
    )
    assert rv.status_code == 422
    assert rv.get_json()["errorType"] == "execution"
    ok = _app(tmp_path, {"max_samples": 10_000}, store=store).test_client()
    rv = ok.get(
        "/api/query_range", query_string={"query": "up", "start": NOW - 60, "end": NOW, "step": 1}
    )
    assert rv.status_code == 200
    assert len(rv.get_json()["data"]["result"]) == 5


def test_api_events_search_runs_under_the_budget(tmp_path: Path) -> None:
    store = MemoryStore()
    store.write(
        events=[
            Event.from_doc(
                {"@timestamp": "2023-11-14T22:13:20Z", "event": {"dataset": "shop.access"}},
                source="t",
                position=i,
            )
            for i in range(20)
        ]
    )
    client = _app(tmp_path, {"max_samples": 10}, store=store).test_client()
    rv = client.get("/api/events", query_string={"limit": 50})
    assert rv.status_code == 422
    assert rv.get_json()["errorType"] == "execution"
    assert client.get("/api/events", query_string={"limit": 5}).status_code == 200


def test_api_query_range_streams_valid_json(tmp_path: Path) -> None:
    store = MemoryStore()
    store.write(samples=[Sample(make_labels("up", pod=str(p)), NOW, float(p)) for p in range(3)])
    client = _app(tmp_path, {}, store=store).test_client()
    rv = client.get(
        "/api/query_range", query_string={"query": "up", "start": NOW - 10, "end": NOW, "step": 5}
    )
    body = rv.get_json()
    assert body["status"] == "success"
    assert [r["metric"]["pod"] for r in body["data"]["result"]] == ["0", "1", "2"]
    assert body["data"]["result"][2]["values"] == [[NOW, "2"]]
