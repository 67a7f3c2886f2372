"""The Elasticsearch store beyond the shared contract: KQL compiled to the query DSL,
index naming, the compatibility-headers option, settings and errors.

Runs on osmem-server (an in-memory OpenSearch-compatible server, see the
``es_server`` fixture in tests/conftest.py); the contract every backend meets
is tests/unit/test_store_contract.py.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import json
import logging
import math
import struct
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import free_port
from es_outage import proxy_to
from fuzz_inputs import FUZZ
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import REGISTRY

from collectors.sink import store_is_down
from siem import SiemError, StoreUnavailable, kql, kql_es, limits
from siem import aggregations as agg
from siem.backends import open_store
from siem.elasticsearch import (
    ECS_FIELDS,
    SETUP_BACKOFF_MAX_S,
    ElasticsearchStore,
    ecs_source,
    index_for,
)
from siem.memory import MemoryStore
from siem.model import Event, EventQuery, Matcher, Sample, get_field, make_labels
from vigil.errors import ConfigError, VigilError
from vigil.settings import from_mapping

T0 = 1_700_000_000.0
FILES = Path(__file__).resolve().parent.parent / "files"


@pytest.fixture
def es(es_url: str) -> Iterator[ElasticsearchStore]:
    store = ElasticsearchStore(es_url, compat_headers=False, refresh="true")
    yield store
    store.close()


def _event(n: int, dataset: str = "shop.app", /, **doc: Any) -> Event:
    body: dict[str, Any] = {"event": {"dataset": dataset}, **doc}
    return Event(f"e{n:03d}", T0 + n, dataset, body)


# Documents whose fields change type from one to the next, as real logs do: a
# dynamic Elasticsearch mapping would refuse some of them.
DOCS = [
    _event(1, code=500, user={"name": "Admin"}, message="Disk FULL on /var"),
    _event(2, code="500", user={"name": "admin"}, message="disk ok"),
    _event(3, code=-0.0, tags=["a", "B", 7], message="a*b?c\\d"),
    _event(4, code=math.inf, flag=True, message="über STRASSE"),
    _event(5, code=[404, "x"], flag="true", user="not an object"),
    _event(6, code=2.5e-7, **{"user.name": "flat", "user": {"name": "nested"}}),
    _event(7, code=None, deep={"a": {"b": {"c": [1, {"d": 2}]}}}, message="line1\nline2"),
    _event(8, code=10**30, flag=False, message=""),
]

QUERIES = [
    "code:500",
    "code:500.0",
    "code:0",
    "code:-0",
    "code:inf",
    "code:x",
    "code:*",
    "not code:*",
    "code > 100",
    "code >= 500",
    "code < 0.001",
    "code <= -0.0",
    "code > -inf",
    "code:4*",
    "code:*e-07",
    "user.name:admin",
    "user.name:ADM*",
    "user.name:flat",
    "user.name:nested",
    "user:*",
    "user:admin",
    "tags:b",
    "tags:B",
    "tags:7",
    "tags:(a and B)",
    "flag:true",
    "flag:false",
    "flag:t*",
    "disk",
    "DISK and not full",
    '"disk full"',
    "*strasse",
    "Über*",
    '"a*b?c\\\\d"',
    "message:a?b*",
    "message:a\\*b*",
    "message:line1*line2",
    "deep.a.b.c:1",
    "deep.a.b.c.d:*",
    "deep.a:*",
    "not (user.name:admin or code:500) and message:*",
    "",
]


@pytest.mark.parametrize("query", QUERIES)
def test_kql_es_answers_like_the_reference(es: ElasticsearchStore, query: str) -> None:
    es.write(events=DOCS)
    reference = MemoryStore()
    reference.write(events=DOCS)
    expected = [e.id for e in reference.search(EventQuery(kql=query))]
    assert [e.id for e in es.search(EventQuery(kql=query))] == expected
    assert es.aggregate(EventQuery(kql=query), agg.Count()) == agg.CountResult(len(expected))


def test_kql_es_filters_on_the_server(es: ElasticsearchStore) -> None:
    # The compiled query alone (no check in Python) selects the matching documents.
    es.write(events=DOCS)
    for query, expected in [
        ("code >= 500", {"e001", "e004", "e008"}),
        ("user.name:adm*", {"e001", "e002"}),
        ("not tags:*", {"e001", "e002", "e004", "e005", "e006", "e007", "e008"}),
    ]:
        rv = es._es.search(
            index=f"{es.prefix}-events-*",
            query=kql_es.to_query(kql.parse(query)),
            size=100,
        )
        assert {hit["_id"] for hit in rv["hits"]["hits"]} == expected, query


def test_kql_es_number_key_sorts_like_the_numbers() -> None:
    numbers = [-math.inf, -1e300, -2.5, -1.0, -5e-324, 0.0, 5e-324, 1.0, 2.5, 1e300, math.inf]
    keys = [kql_es.number_key(x) for x in numbers]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)
    assert kql_es.number_key(-0.0) == kql_es.number_key(0.0)
    assert struct.calcsize(">d") * 2 == len(keys[0])


def test_kql_es_index_terms_resolve_paths_like_get_field() -> None:
    doc = {"user.name": "flat", "user": {"name": "nested", "x.y": 1}, "n": None}
    terms = kql_es.index_terms(doc)
    # A flat key wins over nesting; a dotted key inside an object is unreachable; null is absent.
    assert f"user.name{kql_es.SEP}flat" in terms["text"]
    assert f"user.name{kql_es.SEP}nested" not in terms["text"]
    assert sorted(terms["path"]) == ["user", "user.name"]
    assert terms["over"] == []


def test_kql_es_too_long_values_are_checked_not_lost(es: ElasticsearchStore) -> None:
    long_text = "x" * 9000 + " needle"
    es.write(events=[_event(1, message=long_text), _event(2, message="needle")])
    assert kql_es.index_terms({"message": long_text})["over"] == ["message"]
    assert [e.id for e in es.search(EventQuery(kql="needle"))] == ["e002", "e001"]
    assert [e.id for e in es.search(EventQuery(kql="not message:needle"))] == ["e001"]
    assert es.search(EventQuery(kql="message:*needle"))[-1].doc["message"] == long_text
    # Counted by the server for decided documents, checked in Python for the long one.
    assert es.aggregate(EventQuery(kql="needle"), agg.Count()) == agg.CountResult(2)
    assert es.aggregate(EventQuery(kql="not needle"), agg.Count()) == agg.CountResult(0)
    assert es.aggregate(EventQuery(kql="message:needle"), agg.Count()) == agg.CountResult(1)


def test_kql_es_too_many_terms_mark_the_document_undecided(es: ElasticsearchStore) -> None:
    many = {f"f{i}": i for i in range(kql_es.MAX_TERMS)}
    assert kql_es.index_terms(many)["over"] == [kql_es.ALL]
    es.write(events=[_event(1, **many), _event(2, f1=5)])
    last = f"f{kql_es.MAX_TERMS - 1}"
    assert [e.id for e in es.search(EventQuery(kql=f"{last} >= 0"))] == ["e001"]
    assert [e.id for e in es.search(EventQuery(kql=f"not {last}:*"))] == ["e002"]


def test_elasticsearch_store_index_per_dataset(es: ElasticsearchStore) -> None:
    assert index_for("vigil", "shop.auth") == "vigil-events-shop.auth"
    odd = [index_for("vigil", d) for d in ("Shop Auth", "shop auth", "shop_auth", "_x")]
    assert len(set(odd)) == len(odd)
    assert all(name == name.lower() and " " not in name for name in odd)
    es.write(events=[_event(1, "Shop Auth"), _event(2, "shop auth"), _event(3, "shop.auth")])
    assert [e.id for e in es.search(EventQuery(dataset="Shop Auth"))] == ["e001"]
    assert [e.id for e in es.search(EventQuery(dataset="shop auth"))] == ["e002"]
    indices = es._es.indices.get(index="vigil-events-*")
    assert len(indices) == 3


def test_elasticsearch_store_keeps_documents_with_nan(es: ElasticsearchStore) -> None:
    es.write(events=[_event(1, value=math.nan), _event(2, value=1)])
    (doc,) = es.search(EventQuery(kql="value:*", limit=1, end=T0 + 2))
    assert math.isnan(doc.doc["value"])
    assert [e.id for e in es.search(EventQuery(kql="value >= 0"))] == ["e002"]


def test_elasticsearch_store_samples_have_deterministic_ids(
    es: ElasticsearchStore, es_url: str
) -> None:
    labels = make_labels("up", job="shop")
    assert es.write(samples=[Sample(labels, T0, 1.0)]).samples == 1
    # A second store (another collector process) writing the same sample: a duplicate.
    other = ElasticsearchStore(es_url, compat_headers=False, refresh="true")
    try:
        rv = other.write(samples=[Sample(labels, T0, 0.0), Sample(labels, T0 + 1, 0.0)])
        assert (rv.samples, rv.duplicate_samples) == (1, 1)
        (series,) = other.select([Matcher("job", "=", "shop")], 0, T0 + 10)
        assert series.points == ((T0, 1.0), (T0 + 1, 0.0))
    finally:
        other.close()


def test_elasticsearch_store_compat_headers_option(es_url: str) -> None:
    # osmem-server, like OpenSearch, answers 406 to the 8.x/9.x compatibility media types.
    # The setup fails at the first operation: unavailable (the data is not at fault).
    refused = ElasticsearchStore(es_url, compat_headers=True)
    with pytest.raises(StoreUnavailable, match="406"):
        refused.write(events=[_event(1)])
    refused.close()
    store = ElasticsearchStore(es_url, compat_headers=False)
    try:
        assert store.write(events=[_event(1)]).events == 1
    finally:
        store.close()


def test_elasticsearch_store_unreachable_server_is_unavailable() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    store = ElasticsearchStore(url, compat_headers=False, request_timeout_s=2.0)  # no request
    assert not store.ready
    with pytest.raises(StoreUnavailable, match=r"elasticsearch: .* failed") as raised:
        store.write(events=[_event(1)])
    assert store_is_down(raised.value)
    store.close()


def _setup_failures() -> float:
    return REGISTRY.get_sample_value("vigil_store_setup_failures_total") or 0.0


def test_elasticsearch_store_sets_up_lazily_with_backoff(
    es_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    now = [100.0]
    with proxy_to(es_url) as proxy, caplog.at_level(logging.DEBUG, logger="vigil.store"):
        proxy.set_mode("refuse")
        store = ElasticsearchStore(
            proxy.url, compat_headers=False, request_timeout_s=2.0, clock=lambda: now[0]
        )
        before = _setup_failures()
        operations = {
            "write": lambda: store.write(events=[_event(1)]),
            "search": lambda: store.search(EventQuery()),
            "count": lambda: store.aggregate(EventQuery(), agg.Count()),
            "select": lambda: store.select([Matcher("__name__", "=", "up")], 0, T0),
            "metadata": lambda: store.metadata(),
            "stats": lambda: store.stats(),
        }
        # Every operation fails as unavailable; only the first tries the cluster, the
        # others wait for the backoff (0.5 s) and name the last error.
        for name, operation in operations.items():
            with pytest.raises(StoreUnavailable, match=f"elasticsearch store at {proxy.url}"):
                operation()
            assert _setup_failures() == before + 1, name
        with pytest.raises(StoreUnavailable, match=r"next try in 0\.5 s"):
            store.search(EventQuery())
        # The backoff doubles, up to SETUP_BACKOFF_MAX_S.
        delays = []
        for _ in range(7):
            now[0] += 60
            with pytest.raises(StoreUnavailable):
                store.write(events=[_event(1)])
            with pytest.raises(StoreUnavailable, match="next try in") as raised:
                store.write(events=[_event(1)])
            delays.append(float(str(raised.value).rsplit("next try in ", 1)[1].split()[0]))
        assert delays == [1, 2, 4, 8, SETUP_BACKOFF_MAX_S, SETUP_BACKOFF_MAX_S, SETUP_BACKOFF_MAX_S]
        assert _setup_failures() == before + 8
        assert REGISTRY.get_sample_value("vigil_store_ready") == 0
        # The cluster is back: nothing happens before the backoff ends, then all proceeds.
        proxy.set_mode("forward")
        with pytest.raises(StoreUnavailable, match="next try in"):
            store.write(events=[_event(1)])
        now[0] += SETUP_BACKOFF_MAX_S
        assert store.write(events=[_event(1)]).events == 1
        assert store.ready
        assert REGISTRY.get_sample_value("vigil_store_ready") == 1
        assert _setup_failures() == before + 8
        store.close()
    records = [r for r in caplog.records if r.name == "vigil.store"]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unavailable, retrying with backoff" in warnings[0]
    assert [r.getMessage() for r in records if r.levelno == logging.INFO] == [
        f"elasticsearch store at {proxy.url} ready after 8 failed setup attempt(s)"
    ]
    # The template was put when the setup succeeded: the event is typed, its index there.
    direct = ElasticsearchStore(es_url, compat_headers=False, refresh="true")
    try:
        assert [e.id for e in direct.search(EventQuery())] == ["e001"]
    finally:
        direct.close()


def test_elasticsearch_store_opened_from_settings_with_key_from_env(
    es_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VIGIL_STORE_API_KEY", "c2VjcmV0")
    settings = from_mapping(
        {"store": {"backend": "elasticsearch", "url": es_url, "es_compat_headers": False}}
    )
    store = open_store(settings)
    try:
        assert isinstance(store, ElasticsearchStore)
        assert store._es._headers["authorization"] == "ApiKey c2VjcmV0"
        assert store.write(events=[_event(1)]).events == 1
    finally:
        store.close()


@pytest.mark.parametrize(
    ("store", "message"),
    [
        ({"backend": "elasticsearch"}, "store.url: is required"),
        (
            {"backend": "elasticsearch", "url": "http://u:pw@127.0.0.1:9200"},
            "store.url: must not contain a password",
        ),
        ({"request_timeout_s": 0}, "store.request_timeout_s: must be positive"),
        ({"index_prefix": "Vigil"}, "store.index_prefix: use lower-case"),
    ],
)
def test_settings_store_elasticsearch_checks(store: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        from_mapping({"store": store})


def test_elasticsearch_store_rejects_non_finite_timestamp(es: ElasticsearchStore) -> None:
    with pytest.raises(SiemError, match="not a finite number"):
        es.write(events=[_event(1)], samples=[Sample(make_labels("up"), math.nan, 1.0)])
    # The batch is refused whole: nothing of it was stored.
    assert es.search(EventQuery()) == []
    assert es.write(samples=[Sample(make_labels("up"), T0, 1.0)]).samples == 1


class _StallingCluster(http.server.BaseHTTPRequestHandler):
    """Answers the store's setup like a cluster, then never answers a search in time."""

    def _answer(self, body: bytes = b'{"acknowledged": true}') -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Elastic-Product", "Elasticsearch")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self) -> None:
        self._answer(b"")

    def do_PUT(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self._answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.stalled.wait(10)  # type: ignore[attr-defined]
        self._answer()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


def test_elasticsearch_store_search_stops_at_the_query_deadline() -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _StallingCluster)
    server.daemon_threads = True
    server.stalled = threading.Event()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        store = ElasticsearchStore(url, compat_headers=False, request_timeout_s=30.0)
        budget = limits.QueryBudget(max_samples=0, timeout_s=0.5)
        with budget.active(), pytest.raises(limits.QueryTimeoutError, match="timed out"):
            store.search(EventQuery(kql="message:x"))
        store.close()
    finally:
        server.stalled.set()  # type: ignore[attr-defined]
        server.shutdown()
        server.server_close()


class _BusyCluster(_StallingCluster):
    """Answers the store's setup like a cluster, and every bulk write with ``server.bulk``."""

    def _bulk(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        status, body = self.server.bulk  # type: ignore[attr-defined]
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("X-Elastic-Product", "Elasticsearch")
        data = json.dumps(body).encode()
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:
        if self.path.startswith("/_bulk"):
            self._bulk()
        else:
            super().do_PUT()

    def do_POST(self) -> None:
        self._bulk()


def _item(status: int, kind: str) -> dict[str, Any]:
    error = {"type": kind, "reason": "test"}
    return {
        "took": 1,
        "errors": True,
        "items": [{"create": {"_id": "e1", "status": status, "error": error}}],
    }


@pytest.mark.parametrize(
    ("status", "body", "unavailable"),
    [
        (503, {"error": {"type": "unavailable_shards_exception"}, "status": 503}, True),
        (429, {"error": {"type": "circuit_breaking_exception"}, "status": 429}, True),
        (200, _item(429, "es_rejected_execution_exception"), True),
        (200, _item(403, "cluster_block_exception"), True),  # flood stage: read-only
        (200, _item(400, "mapper_parsing_exception"), False),
        (400, {"error": {"type": "illegal_argument_exception"}, "status": 400}, False),
    ],
)
def test_elasticsearch_store_busy_cluster_is_unavailable_not_bad_data(
    status: int, body: dict[str, Any], unavailable: bool
) -> None:
    # "Not now" answers make the collector retry the write (and spool); a document the
    # cluster refuses is the data's fault (the collector isolates it, dead-letters it).
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _BusyCluster)
    server.daemon_threads = True
    server.stalled = threading.Event()  # type: ignore[attr-defined]
    server.bulk = (status, body)  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        store = ElasticsearchStore(url, compat_headers=False, request_timeout_s=5.0)
        with pytest.raises(SiemError) as raised:
            store.write(events=[_event(1)])
        store.close()
    finally:
        server.shutdown()
        server.server_close()
    assert isinstance(raised.value, StoreUnavailable) is unavailable
    assert store_is_down(raised.value) is unavailable


def test_elasticsearch_store_refresh_setting(es_url: str, caplog: pytest.LogCaptureFixture) -> None:
    settings = from_mapping(
        {
            "store": {
                "backend": "elasticsearch",
                "url": es_url,
                "es_compat_headers": False,
                "refresh": "wait_for",
            }
        }
    )
    assert from_mapping({}).store.refresh == "false"  # no forced refresh on a real cluster
    store = open_store(settings)
    try:
        with caplog.at_level(logging.INFO, logger="elastic_transport.transport"):
            assert store.write(events=[_event(1)]).events == 1
    finally:
        store.close()
    bulks = [r.getMessage() for r in caplog.records if "/_bulk" in r.getMessage()]
    assert bulks and all("refresh=wait_for" in m for m in bulks)
    with pytest.raises(ConfigError, match=r"store\.refresh: use one of false, wait_for, true"):
        from_mapping({"store": {"refresh": "sometimes"}})
    with pytest.raises(ConfigError, match="quote it"):
        from_mapping({"store": {"refresh": False}})


# Parser samples in tests/files, and the parser of each.
_PARSED_FILES = {
    "haproxy-httplog-syslog.log": "haproxy",
    "haproxy-httplog-edge.log": "haproxy",
    "nginx-access-combined.log": "nginx",
    "nginx-access-json.log": "nginx",
    "nginx-error.log": "nginx_error",
    "postgresql-jsonlog.json": "postgresql",
    "postgresql-stderr.log": "postgresql_stderr",
    "gunicorn-error.log": "python",
}
# Free text and vendor fields stay in vigil.doc only (searched with KQL); @timestamp is
# mapped on its own (a date).
_UNMAPPED = ("@timestamp", "message", "event.original", "error.message", "error.stack_trace")
_VENDOR = ("haproxy.", "nginx.", "postgresql.")


def _leaves(doc: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    for key, value in doc.items():
        if isinstance(value, dict):
            yield from _leaves(value, f"{prefix}{key}.")
        else:
            yield prefix + key, value


def _mapped_type(mapping: dict[str, Any], path: str) -> str | None:
    node: Any = {"properties": mapping}
    for part in path.split("."):
        node = node.get("properties", {}).get(part)
        if node is None:
            return None
    return node.get("type")


def _parsed_events() -> list[Event]:
    from collectors.parsers import get_parser

    events = []
    for name, parser_name in _PARSED_FILES.items():
        parse = get_parser(parser_name)
        lines = (FILES / name).read_bytes().splitlines()[:40]
        for offset, line in enumerate(lines):
            with contextlib.suppress(VigilError):  # a sample of a bad line
                events.append(parse(line, source=name, position=offset, offset=offset, now=T0))
    return events


def test_elasticsearch_store_maps_the_ecs_fields_the_parsers_produce(
    es: ElasticsearchStore, es_url: str
) -> None:
    events = _parsed_events()
    produced = {
        path
        for e in events
        for path, _ in _leaves(e.doc)
        if path not in _UNMAPPED and not path.startswith(_VENDOR)
    }
    assert {"source.ip", "http.response.status_code", "event.duration"} <= produced
    assert produced <= set(ECS_FIELDS), "a parser field the index template does not map"
    assert es.write(events=events).events == len(events)
    # The mapping as the server has it, read back from each events index.
    with urllib.request.urlopen(f"{es_url}/{es.prefix}-events-*/_mapping", timeout=10) as resp:
        indices = json.load(resp)
    assert len(indices) >= 4
    for index, body in indices.items():
        properties = body["mappings"]["properties"]
        for path, kind in [
            *ECS_FIELDS.items(),
            ("source.ip", "ip"),
            ("client.ip", "ip"),
            ("http.response.status_code", "long"),
            ("event.duration", "long"),
            ("url.path", "keyword"),
            ("@timestamp", "date"),
        ]:
            assert _mapped_type(properties, path) == kind, (index, path)

    def server_ids(query: dict[str, Any]) -> set[str]:
        request = urllib.request.Request(
            f"{es_url}/{es.prefix}-events-*/_search",
            data=json.dumps({"query": query, "size": 1000}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            return {hit["_id"] for hit in json.load(resp)["hits"]["hits"]}

    # The cluster itself filters on the typed fields: a range on a number, a CIDR on an ip.
    errors = {e.id for e in events if (get_field(e.doc, "http.response.status_code") or 0) >= 500}
    local = {e.id for e in events if str(get_field(e.doc, "source.ip") or "").startswith("127.")}
    assert errors and local
    assert server_ids({"range": {"http.response.status_code": {"gte": 500}}}) == errors
    assert server_ids({"term": {"source.ip": "127.0.0.0/8"}}) == local


def test_elasticsearch_store_ecs_value_of_another_type_is_left_out(
    es: ElasticsearchStore,
) -> None:
    odd = _event(
        1,
        **{"source.ip": "not-an-ip", "url": {"path": {"nested": 1}}},
        http={"response": {"status_code": "200"}},
        event={"dataset": "shop.app", "duration": True},
    )
    assert ecs_source(odd.doc) == {"event": {"dataset": "shop.app"}}
    assert es.write(events=[odd]).events == 1  # no mapping conflict: stored
    (back,) = es.search(EventQuery())
    assert back.doc == odd.doc


_ecs_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.sampled_from(["127.0.0.1", "::1", "fe80::1%eth0", "10.0.0.300", "GET", "/cart"])
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
_ecs_paths = st.sampled_from(sorted({*ECS_FIELDS, "source", "http.response", "url", "event"}))


@FUZZ
@given(st.dictionaries(_ecs_paths, _ecs_values, max_size=8), st.booleans())
def test_fuzz_ecs_source_keeps_only_values_that_fit(doc: dict[str, Any], nest: bool) -> None:
    # Dotted keys, or the same nested: any value, of any type, never a mapping conflict.
    if nest:
        nested: dict[str, Any] = {}
        for path, value in doc.items():
            *parents, leaf = path.split(".")
            node = nested
            for part in parents:
                child = node.setdefault(part, {})
                if not isinstance(child, dict):
                    break
                node = child
            else:
                node[leaf] = value
        doc = nested
    out = ecs_source(doc)
    for path, value in _leaves(out):
        kind = ECS_FIELDS[path]
        values = value if isinstance(value, list) else [value]
        for v in values:
            if kind == "keyword":
                assert isinstance(v, str)
            elif kind == "long":
                assert type(v) is int and -(2**63) <= v < 2**63
            else:
                assert isinstance(v, str) and str(ipaddress.ip_address(v)) and "%" not in v
        assert get_field(doc, path) == value
