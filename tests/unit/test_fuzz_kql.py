"""KQL takes any text: an AST, or a ``KqlError`` with the column; what parses also runs.

Every query ``parse`` accepts must compile with ``to_sql`` to SQL that SQLite
executes, and match in Python with ``matches`` — and both backends must pick
the same events, so a rule's event query means the same on either store. The
query DSL ``kql_es`` compiles must select, on the server alone, the same events
in Elasticsearch (osmem-server).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fuzz_inputs import FUZZ
from hypothesis import given
from hypothesis import strategies as st

from siem import kql, kql_es
from siem.elasticsearch import ElasticsearchStore
from siem.memory import MemoryStore
from siem.model import Event, EventQuery
from siem.sqlite import SqliteStore

DOCS: list[dict[str, Any]] = [
    {"message": "Login failed for admin", "user": {"name": "admin"}, "n": 500, "ok": True},
    {"message": "timeout", "event": {"dataset": "shop.auth"}, "tags": ["a", "b", 7], "n": 1.5},
    {"message": "é😀 \x00 x", "source.ip": "10.0.0.1", "n": None, "user": {"name": "Adm"}},
    {"message": 'say "hi" (now)', "n": "500", "a": {"b": {"c": 1}}},
]
EVENTS = [Event(f"e{i}", 1000.0 + i, "fuzz", doc) for i, doc in enumerate(DOCS)]

WORDS = [
    "a:1",
    "n >= 500",
    "n<2",
    "user.name:adm*",
    "tags:(a or 7)",
    "message:*",
    "source.ip:10.0.*",
    "not",
    "and",
    "or",
    "(",
    ")",
    ":",
    ">=",
    "<",
    '"say \\"hi\\""',
    "*",
    "\\",
    "\\*",
    "x*y",
    "@timestamp",
    "\ud800",
    "\udfff",
    "\x00",
    "😀",
    "é",
    "ok:true",
    "n:1.5",
    "a.b.c:1",
    "-",
    "1e999",
    "nan",
    "a:(",
    " ",
]
queries = st.one_of(
    st.text(st.one_of(st.characters(), st.characters(categories=["Cs", "Cc"])), max_size=80),
    st.lists(st.sampled_from(WORDS), max_size=25).map(" ".join),
    st.integers(1, 3000).map(lambda n: "(" * n + "a:1" + ")" * n),
    st.integers(1, 3000).map(lambda n: "not " * n + "a:1"),
    st.integers(1, 3000).map(lambda n: "n:" + "(" * n + "1" + ")" * n),
    st.integers(1, 400).map(lambda n: " or ".join(["message:x*"] * n)),
)


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[SqliteStore, MemoryStore]]:
    sqlite = SqliteStore(Path(tmp_path_factory.mktemp("kql")) / "siem.db")
    memory = MemoryStore()
    for store in (sqlite, memory):
        store.write(events=EVENTS)
    yield sqlite, memory
    sqlite.close()


@FUZZ
@given(queries)
def test_fuzz_kql_parses_or_raises_kql_error_and_both_backends_agree(
    stores: tuple[SqliteStore, MemoryStore], text: str
) -> None:
    try:
        node = kql.parse(text)
    except kql.KqlError as exc:
        assert 1 <= exc.column <= len(text) + 1
        return
    kql.to_sql(node)
    assert all(isinstance(kql.matches(node, e.get), bool) for e in EVENTS)
    sqlite, memory = stores
    query = EventQuery(dataset="fuzz", kql=text, limit=100)
    found = {e.id for e in sqlite.search(query)}
    assert found == {e.id for e in memory.search(query)}
    assert found == {e.id for e in EVENTS if kql.matches(node, e.get)}


@pytest.fixture(scope="module")
def es_store(es_server: Any) -> Iterator[ElasticsearchStore]:
    clone = es_server.clone()
    store = ElasticsearchStore(clone.url, compat_headers=False, refresh="true")
    store.write(events=EVENTS)
    yield store
    store.close()
    clone.close()


@FUZZ
@given(queries)
def test_fuzz_kql_elasticsearch_dsl_selects_what_python_matches(
    es_store: ElasticsearchStore, text: str
) -> None:
    try:
        node = kql.parse(text)
    except kql.KqlError:
        return
    expected = {e.id for e in EVENTS if kql.matches(node, e.get)}
    # No document here has terms too long to index: the DSL alone decides, exactly.
    rv = es_store._es.search(
        index=f"{es_store.prefix}-events-*", query=kql_es.to_query(node), size=100
    )
    assert {hit["_id"] for hit in rv["hits"]["hits"]} == expected
    assert {e.id for e in es_store.search(EventQuery(kql=text, limit=100))} == expected


@pytest.mark.parametrize(
    ("text", "column"),
    [("\ud800", 1), ("user.name:adm\udc80*", 14), ('"a\\\ud83d"', 4)],
)
def test_kql_lone_surrogate_is_a_kql_error_at_its_column(text: str, column: int) -> None:
    with pytest.raises(kql.KqlError, match="not valid Unicode text") as info:
        kql.parse(text)
    assert info.value.column == column


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("(" * 5000 + "a:1" + ")" * 5000, "nested more than 32 levels"),
        ("not " * 3000 + "a:1", "nested more than 32 levels"),
        ("a:" + "(" * 100 + "1" + ")" * 100, "nested more than 32 levels"),
        ("(a:1 or (b:1 and " * 9 + "c:1" + "))" * 9, "nest more than 16 levels"),
        (" or ".join(["a:1"] * 257), "more than 256 conditions"),
        ("a:" + "x" * kql.MAX_LENGTH, "longer than 16384 characters"),
    ],
)
def test_kql_limits_are_kql_errors(text: str, message: str) -> None:
    with pytest.raises(kql.KqlError, match=message):
        kql.parse(text)


def test_kql_deepest_and_widest_accepted_queries_run_on_sqlite(
    stores: tuple[SqliteStore, MemoryStore],
) -> None:
    deepest = "(n >= 500 and (b:0 or " * 8 + "ok:true" + "))" * 8
    widest = " or ".join(["user.name:adm*"] * kql.MAX_TERMS)
    sqlite, _ = stores
    assert {e.id for e in sqlite.search(EventQuery(kql=deepest))} == {"e0"}
    assert {e.id for e in sqlite.search(EventQuery(kql=widest))} == {"e0", "e2"}


def test_kql_deepest_and_widest_accepted_queries_run_on_elasticsearch(
    es_store: ElasticsearchStore,
) -> None:
    deepest = "(n >= 500 and (b:0 or " * 8 + "ok:true" + "))" * 8
    widest = " or ".join(["user.name:adm*"] * kql.MAX_TERMS)
    assert {e.id for e in es_store.search(EventQuery(kql=deepest))} == {"e0"}
    assert {e.id for e in es_store.search(EventQuery(kql=widest))} == {"e0", "e2"}
