"""The Elasticsearch (or OpenSearch) Store, through the official ``elasticsearch`` client.

Layout:

- events go to one index per dataset, ``<prefix>-events-<dataset>`` (the
  dataset lower-cased, characters an index name cannot hold replaced, plus a
  short hash when anything was replaced, so two datasets never share an
  index); the document id is the event id and every write is a bulk
  ``create``, so a re-delivered event answers 409 and is counted as a
  duplicate, never stored twice;
- samples go to ``<prefix>-samples`` with the id derived from the series and
  the timestamp, so sample writes are idempotent too; the value is kept as text
  (``siem.model.value_text``: ``"0.25"``, ``"inf"``, ``"nan"``, and the stale
  marker as ``"nan:7ff0000000000002"``), which JSON can carry for every double and
  which reads back bit for bit;
- an index template (``<prefix>-events-*``) maps the fields the store filters
  and sorts on (``vigil.id``/``vigil.dataset``/``event.dataset`` keyword,
  ``vigil.ts`` double, ``@timestamp`` date) and keeps the ECS document as
  text in ``vigil.doc`` (not indexed): reads give back exactly what was
  written (NaN included). Beside it, the ECS fields the parsers produce
  (``ECS_FIELDS``: ``source.ip`` ip, ``http.response.status_code`` long,
  ``url.path`` keyword, ...) are written typed, for Kibana and the cluster's
  own aggregations; a value that does not fit its type (a status code once a
  number, once a string) is left out of them, so no event is ever rejected by
  a mapping conflict.

Reads push the dataset, the time range, KQL (compiled by ``siem.kql_es`` to
term/wildcard/range queries on keyword arrays indexed beside the document),
the order and the ``search_after`` cursor to the server; every hit is checked
again with ``EventQuery.matches`` (the reference semantics: it also applies
the field equalities, and decides the rare documents whose terms were too long
to index), so every answer is the memory and SQLite stores'. A count is the
server's; the other aggregations are computed from the matching events with
the arithmetic of ``siem.aggregations`` (exact, where Elasticsearch's
percentiles and cardinality approximate).

The index template and the samples index are set up lazily, by the first
operation, so a process starts while the cluster is down: until the setup
succeeds every operation raises ``StoreUnavailable`` (the collector retries
and spools, the web API answers 503, the alert engine counts a failed
evaluation). A failed setup is tried again after a backoff (0.5 s doubling
to ``SETUP_BACKOFF_MAX_S``), not by every call; one WARNING says the store
is unavailable and one INFO line when it is ready, and the metrics
``vigil_store_setup_failures_total`` and ``vigil_store_ready`` show it.

Servers that refuse the 8.x client's ``compatible-with`` media types
(OpenSearch, osmem-server) need ``compat_headers=False``: requests then carry
plain ``application/json`` / ``application/x-ndjson``.
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime as dt
import hashlib
import ipaddress
import json
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

from elastic_transport import ApiError, ConnectionTimeout, HttpHeaders, Urllib3HttpNode
from elastic_transport import TransportError as _TransportError
from elastic_transport._node import NodeApiResponse
from elastic_transport.client_utils import DEFAULT, DefaultType
from prometheus_client import Counter, Gauge

from siem import SiemError, StoreUnavailable, kql, kql_es, limits, lookups
from siem import aggregations as agg
from siem import retention as ret
from siem.model import (
    METRIC_NAME,
    Event,
    EventQuery,
    Labels,
    Matcher,
    MetricMetadata,
    Sample,
    Series,
    WriteResult,
    get_field,
    value_from_text,
    value_text,
)

log = logging.getLogger("vigil.store")

SETUP_FAILURES = Counter(
    "vigil_store_setup_failures_total",
    "Failed attempts to set up the Elasticsearch store (index template, samples index):"
    " the cluster was unreachable or refused; every operation answered unavailable meanwhile",
)
SETUP_READY = Gauge(
    "vigil_store_ready",
    "1 once the Elasticsearch store is set up on the cluster, 0 until then (its setup failing)",
)
SETUP_BACKOFF_INITIAL_S = 0.5
SETUP_BACKOFF_MAX_S = 10.0
"""A failed setup is tried again after 0.5 s, doubling up to this."""

PAGE_SIZE = 1000
"""Documents per search request while reading matching events or samples."""
BULK_CHUNK = 500
"""Actions per bulk request."""
_MAX_DATASETS = 10_000
"""Datasets one terms aggregation lists (retention and stats)."""
DEFAULT_PREFIX = "vigil"
_INDEX_BAD = re.compile(r"[^a-z0-9._-]")
_COMPAT_MEDIA_TYPE = re.compile(
    r"application/vnd\.elasticsearch\+([a-z-]+)(?:;\s*compatible-with=\d+)?"
)

ECS_FIELDS: dict[str, str] = {
    # field → Elasticsearch type; written beside vigil.doc when the value fits the type.
    "client.ip": "ip",
    "destination.ip": "ip",
    "error.code": "keyword",
    "error.type": "keyword",
    "event.action": "keyword",
    "event.category": "keyword",
    "event.dataset": "keyword",
    "event.duration": "long",
    "event.kind": "keyword",
    "event.module": "keyword",
    "event.outcome": "keyword",
    "event.type": "keyword",
    "host.name": "keyword",
    "http.request.id": "keyword",
    "http.request.method": "keyword",
    "http.request.referrer": "keyword",
    "http.response.body.bytes": "long",
    "http.response.bytes": "long",
    "http.response.status_code": "long",
    "http.version": "keyword",
    "log.file.path": "keyword",
    "log.level": "keyword",
    "log.logger": "keyword",
    "log.offset": "long",
    "log.syslog.facility.code": "long",
    "log.syslog.priority": "long",
    "log.syslog.severity.code": "long",
    "process.name": "keyword",
    "process.pid": "long",
    "process.thread.id": "long",
    "service.name": "keyword",
    "source.address": "keyword",
    "source.ip": "ip",
    "source.port": "long",
    "trace.id": "keyword",
    "transaction.id": "keyword",
    "url.domain": "keyword",
    "url.original": "keyword",
    "url.path": "keyword",
    "url.query": "keyword",
    "user.name": "keyword",
    "user_agent.original": "keyword",
}
"""The ECS fields the parsers produce, typed in the events mapping (for Kibana and
aggregations on the cluster). Free text (``message``, ``event.original``,
``error.message``, ``error.stack_trace``) and vendor fields (``haproxy.*``,
``nginx.*``, ``postgresql.*``) are only in ``vigil.doc``, searched through KQL."""
KEYWORD_MAX = 1024
"""Longer keyword values are kept in ``_source`` but not indexed (``ignore_above``)."""


def _ecs_mapping() -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for path, kind in ECS_FIELDS.items():
        node = properties
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {"properties": {}})["properties"]
        node[leaf] = {"type": kind, **({"ignore_above": KEYWORD_MAX} if kind == "keyword" else {})}
    return properties


def _fits(kind: str, value: Any) -> bool:
    """True when ``value`` can go into a field of type ``kind`` without a mapping error."""
    if isinstance(value, list):
        return kind == "keyword" and all(isinstance(v, str) for v in value)
    if kind == "keyword":
        return isinstance(value, str)
    if kind == "long":
        return isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    if kind == "ip" and isinstance(value, str) and "%" not in value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return False
        return True
    return False


def ecs_source(doc: Mapping[str, Any]) -> dict[str, Any]:
    """The ``ECS_FIELDS`` of ``doc`` (nested or dotted keys) whose values fit their type, nested.

    A value of another type (a status code sent as text) is left out here, never
    refused by the cluster; the event keeps it in ``vigil.doc``.
    """
    rv: dict[str, Any] = {}
    for path, kind in ECS_FIELDS.items():
        value = get_field(doc, path)
        if value is None or not _fits(kind, value):
            continue
        node = rv
        *parents, leaf = path.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return rv


_EVENTS_TEMPLATE: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        **_ecs_mapping(),
        "@timestamp": {"type": "date", "format": "epoch_millis||strict_date_optional_time"},
        "vigil": {
            "properties": {
                "id": {"type": "keyword"},
                "ts": {"type": "double"},
                "dataset": {"type": "keyword"},
                "doc": {"type": "keyword", "index": False, "doc_values": False},
                # Written by siem.kql_es.index_terms, searched by siem.kql_es.to_query.
                "path": {"type": "keyword"},
                "text": {"type": "keyword"},
                "ltext": {"type": "keyword"},
                "num": {"type": "keyword"},
                "over": {"type": "keyword"},
            }
        },
    },
}
_SAMPLES_MAPPING: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "name": {"type": "keyword"},
        "series": {"type": "keyword"},
        "ts": {"type": "double"},
        "value": {"type": "keyword", "index": False, "doc_values": False},
    },
}

_METADATA_MAPPING: dict[str, Any] = {
    "dynamic": False,
    "properties": {
        "metric": {"type": "keyword"},
        "type": {"type": "keyword", "index": False, "doc_values": False},
        "help": {"type": "keyword", "index": False, "doc_values": False},
        "unit": {"type": "keyword", "index": False, "doc_values": False},
    },
}


class _PlainJsonNode(Urllib3HttpNode):
    """A node sending plain ``application/json`` instead of the 8.x compatibility media types.

    The client rewrites ``Accept``/``Content-Type`` to
    ``application/vnd.elasticsearch+json; compatible-with=8`` after every
    header hook it offers, so the last place to undo it is the node. Servers
    that are not Elasticsearch (OpenSearch, osmem-server) answer 406 otherwise.
    """

    def perform_request(
        self,
        method: str,
        target: str,
        body: bytes | None = None,
        headers: HttpHeaders | None = None,
        request_timeout: DefaultType | float | None = DEFAULT,
    ) -> NodeApiResponse:
        if headers is not None:
            headers = headers.copy()
            for name in ("accept", "content-type"):
                value = headers.get(name)
                if value:
                    headers[name] = _COMPAT_MEDIA_TYPE.sub(r"application/\1", value)
        meta, raw = super().perform_request(
            method, target, body=body, headers=headers, request_timeout=request_timeout
        )
        if "x-elastic-product" not in meta.headers:
            # The client refuses answers without this header (its product check);
            # an OpenSearch cluster does not send it (osmem-server does).
            answer_headers = meta.headers.copy()
            answer_headers["x-elastic-product"] = "Elasticsearch"
            meta = dataclasses.replace(meta, headers=answer_headers)
        return NodeApiResponse(meta, raw)


def index_for(prefix: str, dataset: str) -> str:
    """The events index of ``dataset``: lower-case, safe characters, a hash when changed."""
    slug = _INDEX_BAD.sub("_", dataset.lower()).lstrip("-_+.") or "_"
    if slug != dataset:
        slug = f"{slug[:80]}-{hashlib.sha256(dataset.encode()).hexdigest()[:8]}"
    return f"{prefix}-events-{slug}"


def _labels_key(labels: Labels) -> str:
    return json.dumps(labels, separators=(",", ":"), ensure_ascii=False)


def sample_id(labels: Labels, timestamp: float) -> str:
    """The document id of a sample: the same series at the same time is the same document."""
    raw = f"{_labels_key(labels)}\x00{timestamp!r}"
    return hashlib.sha256(raw.encode("utf-8", "surrogatepass")).hexdigest()[:40]


def _iso(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).isoformat(timespec="milliseconds")


class ElasticsearchStore(lookups.SeriesLookups):
    """``Store`` on an Elasticsearch or OpenSearch-compatible cluster.

    ``refresh`` is the ``refresh`` parameter of each bulk write: ``"true"``
    makes a write searchable before it returns (what a test reading right
    after writing needs; costly on a real cluster), ``"wait_for"`` waits for
    the next periodic refresh, ``"false"`` does not wait (``store.refresh``,
    default false, for ``vigil`` processes).

    Opening the store sends no request: the first operation sets it up, and a
    cluster that is down then makes it raise ``StoreUnavailable`` (see the
    module's docstring). ``clock`` times the setup's backoff (tests pass their own).

    >>> store = ElasticsearchStore("http://127.0.0.1:9200", compat_headers=False)
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        compat_headers: bool = True,
        request_timeout_s: float = 30.0,
        refresh: str = "false",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from elasticsearch import Elasticsearch

        if _INDEX_BAD.search(prefix) or not prefix:
            raise SiemError(f"store prefix {prefix!r}: use lower-case letters, digits, '.-_'")
        if refresh not in ("false", "wait_for", "true"):
            raise SiemError(f"store refresh {refresh!r}: use false, wait_for or true")
        self.prefix = prefix
        self._timeout = request_timeout_s
        self._refresh = refresh
        kwargs: dict[str, Any] = {"request_timeout": request_timeout_s}
        if api_key:
            kwargs["api_key"] = api_key
        if not compat_headers:
            kwargs["node_class"] = _PlainJsonNode
        try:
            self._client = Elasticsearch(url, **kwargs)
        except ValueError as exc:  # a malformed URL
            raise SiemError(f"elasticsearch: store.url {url!r}: {exc}") from exc
        self._url = url
        self._samples_index = f"{prefix}-samples"
        self._known_indices: set[str] = set()
        # Lazy setup (see the module's docstring): _ready() runs _setup once it can.
        self._clock = clock
        self._set_up = False
        self._setup_lock = threading.Lock()
        self._setup_failures = 0
        self._next_setup = 0.0
        self._setup_error = ""

    # --- setup ------------------------------------------------------------

    @property
    def _es(self) -> Any:
        """The client, for an operation: the store is set up first (``_ready``)."""
        self._ready()
        return self._client

    @property
    def ready(self) -> bool:
        """True once the index template and the samples index are set up on the cluster."""
        return self._set_up

    def _ready(self) -> None:
        """Set the store up unless it is; ``StoreUnavailable`` while that fails.

        A failed setup is tried again only after its backoff: calls before then
        fail at once, without a request, naming the last error.
        """
        if self._set_up:
            return
        with self._setup_lock:
            if self._set_up:
                return
            now = self._clock()
            if self._setup_failures and now < self._next_setup:
                raise StoreUnavailable(
                    f"elasticsearch store at {self._url} unavailable: {self._setup_error};"
                    f" next try in {self._next_setup - now:.1f} s"
                )
            try:
                self._setup()
            except SiemError as exc:
                # Any setup failure (a refused connection, a 401, a 406) leaves the data
                # blameless: unavailable, so writers retry and spool, readers answer 503.
                self._setup_failures += 1
                delay = min(
                    SETUP_BACKOFF_MAX_S, SETUP_BACKOFF_INITIAL_S * 2 ** (self._setup_failures - 1)
                )
                self._next_setup = self._clock() + delay
                self._setup_error = str(exc)
                SETUP_FAILURES.inc()
                SETUP_READY.set(0)
                if self._setup_failures == 1:
                    log.warning(
                        "elasticsearch store at %s unavailable, retrying with backoff: %s",
                        self._url,
                        exc,
                    )
                else:
                    log.debug("elasticsearch store setup failed again: %s", exc)
                raise StoreUnavailable(
                    f"elasticsearch store at {self._url} unavailable: {exc}"
                ) from exc
            self._set_up = True
            SETUP_READY.set(1)
            if self._setup_failures:
                log.info(
                    "elasticsearch store at %s ready after %d failed setup attempt(s)",
                    self._url,
                    self._setup_failures,
                )

    def _call(self, what: str, fn: Any, /, **kwargs: Any) -> Any:
        """Call the client; its errors become a ``SiemError`` naming what failed."""
        try:
            return fn(**kwargs)
        except Exception as exc:
            error = _store_error(what, exc)
            if error is exc:
                raise
            raise error from exc

    def _setup(self) -> None:
        # The template gives indices created by hand or by other tools (a restore,
        # a second Vigil) the same mapping; the store also creates each index with it.
        self._call(
            "put index template",
            self._client.indices.put_index_template,
            name=f"{self.prefix}-events",
            index_patterns=[f"{self.prefix}-events-*"],
            template={"mappings": _EVENTS_TEMPLATE},
        )
        self._ensure_index(self._samples_index, _SAMPLES_MAPPING)

    def _ensure_index(self, name: str, mappings: Mapping[str, Any]) -> None:
        if name in self._known_indices:
            return
        exists = self._call("index exists", self._client.indices.exists, index=name)
        if not exists:
            try:
                self._call(
                    f"create index {name}",
                    self._client.indices.create,
                    index=name,
                    mappings=mappings,
                )
            except SiemError as exc:
                # Another writer may have created it in between.
                if not self._call("index exists", self._client.indices.exists, index=name):
                    raise exc
        self._known_indices.add(name)

    # --- writes -----------------------------------------------------------

    def write(self, events: Iterable[Event] = (), samples: Iterable[Sample] = ()) -> WriteResult:
        event_actions: list[dict[str, Any]] = []
        events, samples = list(events), list(samples)
        for ts in [e.timestamp for e in events] + [s.timestamp for s in samples]:
            if not math.isfinite(ts):
                raise SiemError(f"timestamp {ts!r} is not a finite number")
        self._ready()  # before the events' indices: the template first
        for event in events:
            index = index_for(self.prefix, event.dataset)
            self._ensure_index(index, _EVENTS_TEMPLATE)
            text = event.text if event.text is not None else json.dumps(event.doc)
            source = ecs_source(event.doc)
            source["@timestamp"] = _iso(event.timestamp)
            # The event's dataset decides the index; the document says the same.
            source.setdefault("event", {})["dataset"] = event.dataset
            source["vigil"] = {
                "id": event.id,
                "ts": event.timestamp,
                "dataset": event.dataset,
                "doc": text,
                **kql_es.index_terms(event.doc),
            }
            event_actions.append(
                {"_op_type": "create", "_index": index, "_id": event.id, "_source": source}
            )
        sample_actions = [
            {
                "_op_type": "create",
                "_index": self._samples_index,
                "_id": sample_id(s.labels, s.timestamp),
                "_source": {
                    "name": s.name,
                    "series": _labels_key(s.labels),
                    "ts": s.timestamp,
                    "value": value_text(s.value),
                },
            }
            for s in samples
        ]
        stored, dup = self._bulk(event_actions)
        s_stored, s_dup = self._bulk(sample_actions)
        return WriteResult(stored, dup, s_stored, s_dup)

    def _bulk(self, actions: list[dict[str, Any]]) -> tuple[int, int]:
        """Send ``actions``; (created, duplicates). Any other failure raises."""
        from elasticsearch import helpers

        if not actions:
            return 0, 0
        created = duplicates = 0
        failures: list[str] = []
        busy: list[str] = []
        try:
            results = helpers.streaming_bulk(
                self._es,
                actions,
                chunk_size=BULK_CHUNK,
                raise_on_error=False,
                raise_on_exception=True,
                refresh=self._refresh,
            )
            for ok, item in results:
                info = item.get("create", {})
                if ok:
                    created += 1
                elif info.get("status") == 409:
                    duplicates += 1  # stored before: a replay after a lost answer
                elif _item_unavailable(info):
                    busy.append(f"{info.get('_id')}: {info.get('error')}")
                else:
                    failures.append(f"{info.get('_id')}: {info.get('error')}")
        except Exception as exc:
            error = _store_error("bulk write", exc)
            if error is exc:  # not the client's: a document it could not encode
                error = SiemError(f"elasticsearch: bulk write failed: {exc}")
            raise error from exc
        if busy:
            raise StoreUnavailable(
                f"elasticsearch: {len(busy)} document(s) not written now (the cluster is"
                f" busy or read-only), first: {busy[0]}"
            )
        if failures:
            raise SiemError(
                f"elasticsearch: {len(failures)} document(s) refused, first: {failures[0]}"
            )
        return created, duplicates

    # --- reads ------------------------------------------------------------

    def _events_pattern(self, dataset: str | None) -> str:
        if dataset is not None:
            return index_for(self.prefix, dataset)
        return f"{self.prefix}-events-*"

    def _hits(
        self,
        index: str,
        query: Mapping[str, Any],
        sort: list[Any],
        size: int = PAGE_SIZE,
        after: list[Any] | None = None,
    ) -> Iterator[dict[str, Any]]:
        """Every hit of ``query`` in ``sort`` order after the sort values ``after``,
        page by page (``search_after``)."""
        while True:
            limits.check()
            kwargs: dict[str, Any] = {
                "index": index,
                "query": query,
                "sort": sort,
                "size": size,
                "ignore_unavailable": True,
                "allow_no_indices": True,
            }
            if after is not None:
                kwargs["search_after"] = after
            hits = self._search(**kwargs)["hits"]["hits"]
            yield from hits
            if len(hits) < size:
                return
            after = hits[-1]["sort"]

    def _search(self, **kwargs: Any) -> Any:
        """One search request, bounded by the query's deadline (``check()`` runs between
        requests); the client's errors as ``SiemError``, a timeout as the query's."""
        budget = limits.current()
        client = self._es
        left = None if budget is None else budget.remaining_s()
        if left is not None:
            client = client.options(request_timeout=max(min(left, self._timeout), 0.001))
        try:
            return client.search(**kwargs)
        except ConnectionTimeout as exc:
            if left is not None and budget is not None:
                raise limits.QueryTimeoutError(f"query timed out in {budget.stage}") from exc
            raise StoreUnavailable(f"elasticsearch: search failed: {exc}") from exc
        except Exception as exc:
            error = _store_error("search", exc)
            if error is exc:
                raise
            raise error from exc

    def _filters(self, query: EventQuery) -> list[dict[str, Any]]:
        """The server-side part of ``query``: dataset, time range and KQL (a superset)."""
        filters: list[dict[str, Any]] = []
        if query.dataset is not None:
            filters.append({"term": {"vigil.dataset": query.dataset}})
        ts_range: dict[str, float] = {}
        if query.start is not None:
            ts_range["gte"] = query.start
        if query.end is not None:
            ts_range["lt"] = query.end
        if ts_range:
            filters.append({"range": {"vigil.ts": ts_range}})
        if query.kql is not None:
            filters.append(kql_es.to_query(kql.parse(query.kql)))
        return filters

    def _matching(
        self,
        query: EventQuery,
        limit: int | None = None,
        extra: Sequence[dict[str, Any]] = (),
    ) -> Iterator[Event]:
        """Matching events, newest first (timestamp, then id, descending); ``extra``
        filters narrow what the server returns."""
        filters = [*self._filters(query), *extra]
        es_query = {"bool": {"filter": filters}} if filters else {"match_all": {}}
        sort = [{"vigil.ts": {"order": "desc"}}, {"vigil.id": {"order": "desc"}}]
        size = PAGE_SIZE if limit is None else max(1, min(PAGE_SIZE, limit))
        # The page cursor is the sort values themselves: the server starts after it.
        after = None if query.after is None else [query.after[0], query.after[1]]
        found = 0
        pattern = self._events_pattern(query.dataset)
        for hit in self._hits(pattern, es_query, sort, size, after):
            event = _event_from(hit)
            if event is None or not query.matches(event):
                continue
            yield event
            found += 1
            if limit is not None and found >= limit:
                return

    def search(self, query: EventQuery) -> list[Event]:
        if query.limit <= 0:
            return []
        rv = list(self._matching(query, query.limit))
        limits.take(len(rv))
        return rv

    def count_by(self, query: EventQuery, field_name: str) -> dict[str, int]:
        counts = agg.value_counts(self._matching(query), field_name)
        limits.take(len(counts))
        return counts

    def _count(self, query: EventQuery) -> int:
        """How many events match, counted by the server where the index decides.

        Documents without ``vigil.over`` are decided by the compiled KQL alone,
        so the server counts them; the few with it are fetched and checked.
        Field equalities and a page cursor are applied in Python only, so such a
        query is counted from its events.
        """
        if query.equals or query.after is not None:
            return sum(1 for _ in self._matching(query))
        over = {"exists": {"field": "vigil.over"}}
        decided = {"bool": {"filter": self._filters(query), "must_not": [over]}}
        limits.check()
        rv = self._call(
            "count",
            self._es.count,
            index=self._events_pattern(query.dataset),
            query=decided,
            ignore_unavailable=True,
            allow_no_indices=True,
        )
        return int(rv["count"]) + sum(1 for _ in self._matching(query, extra=[over]))

    def aggregate(self, query: EventQuery, request: agg.Aggregation) -> agg.AggregationResult:
        if isinstance(request, agg.Count):
            return agg.CountResult(self._count(query))
        # Exact like the other backends: computed from the matches, not ES' approximations.
        return agg.aggregate_events(list(self._matching(query)), request)

    def select(self, matchers: Sequence[Matcher], start: float, end: float) -> list[Series]:
        filters: list[dict[str, Any]] = [{"range": {"ts": {"gte": start, "lte": end}}}]
        for m in matchers:
            if m.name == METRIC_NAME and m.op == "=":
                filters.append({"term": {"name": m.value}})
        sort = [{"series": {"order": "asc"}}, {"ts": {"order": "asc"}}]
        points: dict[str, list[tuple[float, float]]] = {}
        verdict: dict[str, Labels | None] = {}
        for hit in self._hits(self._samples_index, {"bool": {"filter": filters}}, sort):
            src = hit.get("_source", {})
            key = src.get("series")
            if not isinstance(key, str):
                continue
            if key not in verdict:
                labels = _labels_from_key(key)
                ok = labels is not None and all(m.matches(dict(labels)) for m in matchers)
                verdict[key] = labels if ok else None
            if verdict[key] is None:
                continue
            try:
                point = (float(src["ts"]), value_from_text(src["value"]))
            except (KeyError, TypeError, ValueError):
                continue
            limits.take(1)
            bisect.insort(points.setdefault(key, []), point)
        rv = [
            Series(labels, tuple(points[key]))
            for key, labels in verdict.items()
            if labels is not None and key in points
        ]
        rv.sort(key=lambda s: s.labels)
        return rv

    # --- retention (siem.retention) -----------------------------------------

    def prune(
        self, policy: ret.RetentionPolicy, now: float, *, dry_run: bool = False
    ) -> ret.PruneResult:
        """Remove events and samples older than their maximum age with ``_delete_by_query``
        on ``vigil.ts`` (``ts``), at most ``policy.chunk`` documents per request.

        Whole indices are never deleted: an index holds one dataset over all time, so
        deleting it would race with the collector writing that dataset's new events.
        Deleted documents free disk space when Elasticsearch merges segments.
        """
        if policy.max_bytes > 0:
            raise SiemError(
                "elasticsearch: store.max_bytes applies to the SQLite store only; "
                "size the cluster with ILM and its disk watermarks"
            )
        result = ret.PruneResult(dry_run=dry_run)
        spans = {d.dataset: d for d in self._dataset_spans()}

        def events(dataset: str, cutoff: float) -> int:
            oldest = spans[dataset].oldest
            if oldest is None or oldest >= cutoff:
                return 0
            query = {
                "bool": {
                    "filter": [
                        {"term": {"vigil.dataset": dataset}},
                        {"range": {"vigil.ts": {"lt": cutoff}}},
                    ]
                }
            }
            return self._remove(index_for(self.prefix, dataset), query, policy, dry_run)

        def samples(cutoff: float) -> int:
            query = {"range": {"ts": {"lt": cutoff}}}
            return self._remove(self._samples_index, query, policy, dry_run)

        ret.prune_with(lambda: sorted(spans), events, samples, policy, now, result)
        return result

    def _remove(
        self, index: str, query: Mapping[str, Any], policy: ret.RetentionPolicy, dry_run: bool
    ) -> int:
        """``_delete_by_query`` in requests of ``policy.chunk`` documents (``_count`` for a
        dry run); how many went. A request with failures raises, naming the first."""
        if dry_run:
            rv = self._call(
                "count",
                self._es.count,
                index=index,
                query=query,
                ignore_unavailable=True,
                allow_no_indices=True,
            )
            return int(rv["count"])
        from elasticsearch import ApiError

        total = 0
        while True:
            limits.check()
            try:
                body: Mapping[str, Any] = self._es.delete_by_query(
                    index=index,
                    query=query,
                    max_docs=policy.chunk,
                    conflicts="proceed",
                    refresh=True,
                    ignore_unavailable=True,
                    allow_no_indices=True,
                    wait_for_completion=True,
                ).body
            except ApiError as exc:
                # Failures answer 4xx/5xx with the usual body, `failures` filled in.
                if not isinstance(exc.body, Mapping) or not exc.body.get("failures"):
                    raise _store_error(f"delete by query on {index}", exc) from exc
                body = exc.body
            except Exception as exc:
                error = _store_error(f"delete by query on {index}", exc)
                if error is exc:
                    raise
                raise error from exc
            total += int(body.get("deleted") or 0)
            failures = body.get("failures") or []
            if failures or body.get("timed_out"):
                why = _failure_text(failures[0]) if failures else "timed out"
                raise SiemError(
                    f"elasticsearch: delete by query on {index} stopped after {total:,}"
                    f" deleted ({len(failures)} failure(s)): {why}"
                )
            if int(body.get("total") or 0) < policy.chunk:
                return total
            policy.pause()

    def _dataset_spans(self) -> list[ret.DatasetStats]:
        """Events, oldest and newest per dataset (one terms aggregation); bytes 0."""
        rv = self._call(
            "dataset aggregation",
            self._es.search,
            index=f"{self.prefix}-events-*",
            size=0,
            aggs={
                "datasets": {
                    "terms": {"field": "vigil.dataset", "size": _MAX_DATASETS},
                    "aggs": {
                        "oldest": {"min": {"field": "vigil.ts"}},
                        "newest": {"max": {"field": "vigil.ts"}},
                    },
                }
            },
            ignore_unavailable=True,
            allow_no_indices=True,
        )
        buckets = rv.get("aggregations", {}).get("datasets", {}).get("buckets", [])
        return [
            ret.DatasetStats(
                str(b["key"]),
                int(b["doc_count"]),
                0,
                b.get("oldest", {}).get("value"),
                b.get("newest", {}).get("value"),
            )
            for b in buckets
        ]

    def stats(self) -> ret.StoreStats:
        """Events and their span per dataset, and the size of each dataset's index
        (primary shards on disk, with deleted documents not yet merged away); the number
        of series is a ``cardinality`` count, exact up to 40,000 series."""
        sizes = self._index_sizes()
        datasets = tuple(
            dataclasses.replace(d, bytes=sizes.get(index_for(self.prefix, d.dataset), 0))
            for d in sorted(self._dataset_spans(), key=lambda d: d.dataset)
        )
        rv = self._call(
            "samples aggregation",
            self._es.search,
            index=self._samples_index,
            size=0,
            track_total_hits=True,
            aggs={
                "series": {"cardinality": {"field": "series", "precision_threshold": 40000}},
                "oldest": {"min": {"field": "ts"}},
                "newest": {"max": {"field": "ts"}},
            },
            ignore_unavailable=True,
            allow_no_indices=True,
        )
        aggs = rv.get("aggregations", {})
        samples = int(rv["hits"]["total"]["value"])
        return ret.StoreStats(
            datasets=datasets,
            series=int(aggs.get("series", {}).get("value") or 0),
            samples=samples,
            samples_bytes=sizes.get(self._samples_index, 0),
            oldest_sample=aggs.get("oldest", {}).get("value"),
            newest_sample=aggs.get("newest", {}).get("value"),
            total_bytes=sum(sizes.values()),
            bytes_exact=True,
        )

    def _index_sizes(self) -> dict[str, int]:
        """Bytes on disk of the primary shards of each of the store's indices."""
        rv = self._call(
            "index stats",
            self._es.indices.stats,
            index=f"{self.prefix}-events-*,{self._samples_index}",
            metric="store",
        )
        return {
            name: int(info.get("primaries", {}).get("store", {}).get("size_in_bytes") or 0)
            for name, info in rv.get("indices", {}).items()
        }

    # --- series look-ups and metadata ----------------------------------------

    def _in_range(
        self, matchers: Sequence[Matcher], start: float | None, end: float | None
    ) -> Iterator[Labels]:
        """The label sets of the series with a sample in [start, end], from the distinct
        ``series`` keys of the samples (by name when a matcher pins it)."""
        for key in self._distinct("series", lookups.exact_name(matchers), start, end):
            labels = _labels_from_key(key)
            if labels is not None:
                yield labels

    def _metric_names(self, start: float | None, end: float | None, limit: int) -> list[str]:
        """The distinct ``name`` keys of the samples, not every series."""
        return lookups.pick_values(
            (n for n in self._distinct("name", None, start, end) if n), limit
        )

    def _distinct(
        self, field: str, name: str | None, start: float | None, end: float | None
    ) -> Iterator[str]:
        """The distinct values of the samples' keyword ``field`` in [start, end] (of metric
        ``name`` when given): a composite ``terms`` aggregation, a page per request; no
        sample is fetched."""
        filters: list[dict[str, Any]] = []
        bounds = {op: t for op, t in (("gte", start), ("lte", end)) if t is not None}
        if bounds:
            filters.append({"range": {"ts": bounds}})
        if name is not None:
            filters.append({"term": {"name": name}})
        query = {"bool": {"filter": filters}} if filters else {"match_all": {}}
        after: Any = None
        while True:
            limits.check()
            composite: dict[str, Any] = {
                "size": PAGE_SIZE,
                "sources": [{"key": {"terms": {"field": field}}}],
            }
            if after is not None:
                composite["after"] = after
            rv = self._search(
                index=self._samples_index,
                size=0,
                query=query,
                aggs={"distinct": {"composite": composite}},
                ignore_unavailable=True,
                allow_no_indices=True,
            )
            found = (rv.get("aggregations") or {}).get("distinct") or {}
            buckets = found.get("buckets") or []
            for bucket in buckets:
                yield str(bucket.get("key", {}).get("key"))
            after = found.get("after_key")
            if len(buckets) < PAGE_SIZE or after is None:
                return

    @property
    def _metadata_index(self) -> str:
        return f"{self.prefix}-metadata"

    def write_metadata(self, items: Iterable[MetricMetadata]) -> int:
        """Index each family's metadata under an id derived from its name (replacing it)."""
        operations: list[dict[str, Any]] = []
        for item in items:
            doc_id = hashlib.sha256(item.metric.encode("utf-8", "surrogatepass")).hexdigest()[:40]
            operations.append({"index": {"_index": self._metadata_index, "_id": doc_id}})
            operations.append(dataclasses.asdict(item))
        if not operations:
            return 0
        self._ready()
        self._ensure_index(self._metadata_index, _METADATA_MAPPING)
        rv = self._call("write metadata", self._es.bulk, operations=operations, refresh=True)
        if rv.get("errors"):
            refused = [i["index"] for i in rv.get("items", []) if "error" in i.get("index", {})]
            first = refused[0].get("error") if refused else "unknown"
            raise SiemError(f"elasticsearch: {len(refused)} metadata document(s) refused: {first}")
        return len(operations) // 2

    def metadata(self, metric: str | None = None, limit: int = 0) -> list[MetricMetadata]:
        query = {"term": {"metric": metric}} if metric is not None else {"match_all": {}}
        size = PAGE_SIZE if limit <= 0 else max(1, min(PAGE_SIZE, limit))
        found: list[MetricMetadata] = []
        for hit in self._hits(self._metadata_index, query, [{"metric": {"order": "asc"}}], size):
            src = hit.get("_source", {})
            try:
                found.append(
                    MetricMetadata(
                        str(src["metric"]), str(src["type"]), str(src["help"]), str(src["unit"])
                    )
                )
            except KeyError:
                continue
            if 0 < limit <= len(found):
                break
        return lookups.pick_metadata(found, metric, limit)

    def close(self) -> None:
        """Close the client's connections."""
        self._client.close()


UNAVAILABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
"""Answers meaning "not now" (timeout, too many requests, the cluster failing): retry later."""
_UNAVAILABLE_TYPES = frozenset(
    {
        "cluster_block_exception",  # read-only: disk flood stage, or blocked by an operator
        "es_rejected_execution_exception",  # a full write queue
        "circuit_breaking_exception",
        "unavailable_shards_exception",
        "process_cluster_event_timeout_exception",
    }
)


def _item_unavailable(info: Mapping[str, Any]) -> bool:
    """True when a bulk item failed because of the cluster's state, not its document."""
    error = info.get("error")
    kind = error.get("type") if isinstance(error, Mapping) else None
    return info.get("status") in UNAVAILABLE_STATUS or kind in _UNAVAILABLE_TYPES


def _store_error(what: str, exc: Exception) -> Exception:
    """The client's errors as a ``SiemError``; others as they are.

    Transport failures (refused, reset, timed out) and "not now" answers
    (``UNAVAILABLE_STATUS``, a read-only cluster) are a ``StoreUnavailable``:
    the write is retried, not blamed on its documents.
    """
    if isinstance(exc, ApiError):  # elasticsearch.ApiError: an answer with an error status
        info = getattr(exc, "info", None)
        error = info.get("error") if isinstance(info, Mapping) else None
        kind = error.get("type") if isinstance(error, Mapping) else None
        status = getattr(exc, "status_code", None)
        if status in UNAVAILABLE_STATUS or kind in _UNAVAILABLE_TYPES:
            return StoreUnavailable(f"elasticsearch: {what} failed: {exc}")
        return SiemError(f"elasticsearch: {what} failed: {exc}")
    if isinstance(exc, _TransportError | OSError):
        return StoreUnavailable(f"elasticsearch: {what} failed: {exc}")
    if type(exc).__module__.startswith(("elasticsearch", "elastic_transport")):
        return SiemError(f"elasticsearch: {what} failed: {exc}")
    return exc


def _failure_text(failure: Any) -> str:
    """One entry of a ``_delete_by_query`` answer's ``failures``: a bulk failure names its
    document and ``cause``, a search failure its shard and ``reason``."""
    if not isinstance(failure, Mapping):
        return str(failure)[:500]
    cause = failure.get("cause", failure.get("reason"))
    if isinstance(cause, Mapping):
        cause = f"{cause.get('type')}: {cause.get('reason')}"
    where = failure.get("id", failure.get("shard"))
    status = failure.get("status")
    return f"{failure.get('index')}/{where}: {cause}" + (f" (status {status})" if status else "")


def _event_from(hit: Mapping[str, Any]) -> Event | None:
    """The event a hit holds; ``None`` for a document this store did not write."""
    vigil = hit.get("_source", {}).get("vigil")
    if not isinstance(vigil, Mapping):
        return None
    try:
        text = vigil["doc"]
        doc = json.loads(text)
        return Event(str(vigil["id"]), float(vigil["ts"]), str(vigil["dataset"]), doc, text)
    except (KeyError, TypeError, ValueError):
        return None


def _labels_from_key(key: str) -> Labels | None:
    try:
        pairs = json.loads(key)
        return tuple((str(k), str(v)) for k, v in pairs)
    except (TypeError, ValueError):
        return None
