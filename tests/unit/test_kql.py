"""The KQL subset: parsing, errors, and the Python predicate agreeing with the SQL."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from siem import SiemError
from siem.kql import (
    And,
    Equals,
    Exists,
    KqlError,
    Like,
    Node,
    Not,
    Or,
    Range,
    matches,
    parse,
    to_sql,
    value_sql,
)
from siem.model import EventQuery, get_field


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("status:200", Equals("status", "200")),
        ('url.original:"/a b:c (d)"', Equals("url.original", "/a b:c (d)")),
        ('msg:"say \\"hi\\""', Equals("msg", 'say "hi"')),
        ("source.ip:10.0.0.*", Like("source.ip", ("10.0.0.", ""))),
        ("user.name:*min*", Like("user.name", ("", "min", ""))),
        ("user.name:a\\*b", Equals("user.name", "a*b")),
        ("error.message:*", Exists("error.message")),
        ("@timestamp:*", Exists("@timestamp")),
        ("code >= 500", Range("code", ">=", 500.0)),
        ("code>500", Range("code", ">", 500.0)),
        ("duration <= 1.5e3", Range("duration", "<=", 1500.0)),
        ("code < -1", Range("code", "<", -1.0)),
        ("status : 200", Equals("status", "200")),
        ("timeout", Like("message", ("", "timeout", ""))),
        ('"connection refused"', Like("message", ("", "connection refused", ""))),
        ("a:1 and b:2", And((Equals("a", "1"), Equals("b", "2")))),
        ("a:1 AND b:2 Or c:3", Or((And((Equals("a", "1"), Equals("b", "2"))), Equals("c", "3")))),
        ("a:1 or b:2 and c:3", Or((Equals("a", "1"), And((Equals("b", "2"), Equals("c", "3")))))),
        ("(a:1 or b:2) and c:3", And((Or((Equals("a", "1"), Equals("b", "2"))), Equals("c", "3")))),
        ("not a:1", Not(Equals("a", "1"))),
        ("not not a:1", Not(Not(Equals("a", "1")))),
        ("a:(x or y)", Or((Equals("a", "x"), Equals("a", "y")))),
        ("a:(x and not y*)", And((Equals("a", "x"), Not(Like("a", ("y", "")))))),
        (
            'tags:(x or (y and "z z"))',
            Or((Equals("tags", "x"), And((Equals("tags", "y"), Equals("tags", "z z"))))),
        ),
        ("", And(())),
        ("   ", And(())),
    ],
)
def test_kql_parse(text: str, expected: Node) -> None:
    assert parse(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "source.ip:",
            "KQL: expected a value after ':' but found the end of the query at column 11",
        ),
        (
            "a:1 and",
            "KQL: expected a field, a term or '\\(' but found the end of the query at column 8",
        ),
        ("a:1 b:2", "KQL: expected 'and', 'or' or the end of the query but found 'b' at column 5"),
        ("(a:1", "KQL: expected '\\)' but found the end of the query at column 5"),
        ("a:(x y)", "KQL: expected '\\)' but found 'y' at column 6"),
        ("a:1)", "found '\\)' at column 4"),
        ("code >= high", "KQL: expected a number after '>=', got 'high' at column 9"),
        ("code >", "KQL: expected a number after '>' at column 7"),
        ("code > nan", "got 'nan' at column 8"),
        ('msg:"open', 'KQL: unterminated quoted string at column 5; add the closing "'),
        ("so*rce:x", "KQL: invalid field name 'so\\*rce' at column 1; use letters"),
        ("a:and", "KQL: expected a value after ':' but found 'and' at column 3"),
        ("a:1 or or", "found 'or' at column 8"),
        ("x\\", "KQL: expected a character after '\\\\' at column 2"),
        ("a::b", "expected a value after ':' but found ':' at column 3"),
    ],
)
def test_kql_parse_error_names_column_and_expectation(text: str, message: str) -> None:
    with pytest.raises(KqlError, match=message) as info:
        parse(text)
    assert isinstance(info.value, SiemError)


def test_kql_event_query_rejects_bad_kql_when_built() -> None:
    with pytest.raises(KqlError, match="column 3"):
        EventQuery(kql="a:")


def test_kql_to_sql_binds_values_as_parameters() -> None:
    evil = "x' OR 1=1; DROP TABLE events; --"
    sql, args = to_sql(parse(f'user.name:"{evil}" or user.name:{evil[:2]}*'))
    assert "DROP" not in sql and "'x" not in sql
    assert evil in args


def test_kql_sql_rejects_field_that_cannot_be_a_json_path() -> None:
    with pytest.raises(SiemError, match="invalid field name"):
        to_sql(Equals('a"b', "x"))


DOC = {
    "message": "Payment DECLINED: card 4242",
    "event": {"dataset": "shop.payment", "outcome": "failure", "duration": 1.5e9},
    "http": {"response": {"status_code": 502}},
    "labels": {"gateway": "stripe", "retry": True, "attempt": "3"},
    "tags": ["checkout", "v2", 7],
    "source.ip": "10.0.0.9",
    "nothing": None,
    "nested": [["inner"], {"k": "v"}],
}


DOC_CASES = [
    ("labels.gateway:stripe", True),
    ("labels.gateway:STRIPE", False),  # exact values are case-sensitive
    ("labels.gateway:STR*", True),  # wildcards ignore ASCII case
    ("labels.retry:true", True),
    ("labels.retry:True", False),
    ("labels.attempt:3", True),
    ("labels.attempt >= 3", False),  # ranges only match numbers
    ("http.response.status_code:502", True),
    ("http.response.status_code:502.0", True),  # numbers compare as numbers
    ("http.response.status_code > 501.5", True),
    ("event.duration >= 1500000000", True),
    ("tags:v2 and tags:7 and tags >= 7", True),
    ("tags:check*", True),
    ("source.ip:10.0.0.9", True),  # flat key
    ("nothing:*", False),
    ("missing:*", False),
    ("labels:*", True),
    ("labels:stripe", False),
    ("nested:inner", False),
    ("nested:v", False),
    ("declined", True),
    ("card and 4242", True),
    ('"card 4242"', True),
    ("payment and not refund", True),
    ("message:Payment*4242", True),
    ("message:Payment_DECLINED*", False),  # '_' is no wildcard
]


@pytest.mark.parametrize(("text", "expected"), DOC_CASES)
def test_kql_python_and_sql_agree_on_document(text: str, expected: Any) -> None:
    assert _python(text, DOC) is expected
    assert _sql(text, DOC) is expected


def _python(text: str, doc: dict[str, Any]) -> bool:
    return matches(parse(text), lambda name: get_field(doc, name))


_DB = sqlite3.connect(":memory:")


def _sql(text: str, doc: dict[str, Any]) -> bool:
    where, args = to_sql(parse(text))
    row = _DB.execute(f"SELECT {where} FROM (SELECT ? AS doc)", [*args, json.dumps(doc)]).fetchone()
    return bool(row[0])


_values = st.one_of(
    st.sampled_from(["a", "A", "ab", "b%", "a_b", "10.0.0.1", "7", ""]),
    st.integers(-3, 3),
    st.sampled_from([0.5, 2.0, True, False, None]),
)
_docs = st.fixed_dictionaries(
    {},
    optional={
        "message": st.sampled_from(["a b", "AB c", "x%y", ""]),
        "f": st.one_of(
            _values, st.lists(_values, max_size=3), st.dictionaries(st.just("g"), _values)
        ),
        "g": st.fixed_dictionaries({}, optional={"h": _values}),
        "f.g": _values,
    },
)
_fields = st.sampled_from(["f", "g.h", "g", "message", "f.g"])
_words = st.sampled_from(["a", "A", "ab", "b%", "a_b", "7", "2", "0.5", "true", "10.0.0.1", "-3"])
_leaves = st.one_of(
    st.builds(Equals, _fields, _words),
    st.builds(
        Like,
        _fields,
        st.lists(st.sampled_from(["", "a", "b", "%", "_", "1"]), min_size=2, max_size=3).map(tuple),
    ),
    st.builds(
        Range,
        _fields,
        st.sampled_from(["<", "<=", ">", ">="]),
        st.sampled_from([-1.0, 0.5, 2.0, 7.0]),
    ),
    st.builds(Exists, _fields),
)
_nodes = st.recursive(
    _leaves,
    lambda inner: st.one_of(
        st.builds(Not, inner),
        st.lists(inner, max_size=3).map(lambda items: And(tuple(items))),
        st.lists(inner, max_size=3).map(lambda items: Or(tuple(items))),
    ),
    max_leaves=6,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(node=_nodes, doc=_docs)
def test_kql_python_and_sql_agree_on_random_queries(node: Node, doc: dict[str, Any]) -> None:
    where, args = to_sql(node)
    row = _DB.execute(f"SELECT {where} FROM (SELECT ? AS doc)", [*args, json.dumps(doc)]).fetchone()
    assert bool(row[0]) is matches(node, lambda name: get_field(doc, name))


# The SQLite store keeps generated columns (value_sql) for hot fields and compiles
# conditions on them to column comparisons: the same answers as walking the JSON.
def _hot_sql(node: Node, doc: dict[str, Any], fields: list[str]) -> bool:
    columns = {name: f"c{i}" for i, name in enumerate(fields)}
    db = sqlite3.connect(":memory:")
    try:
        generated = ", ".join(
            f"{col} AS {value_sql(name)} VIRTUAL" for name, col in columns.items()
        )
        db.execute(f"CREATE TABLE t (doc TEXT, {generated})")
        db.execute("INSERT INTO t (doc) VALUES (?)", [json.dumps(doc)])
        where, args = to_sql(node, columns=columns)
        (row,) = db.execute(f"SELECT {where} FROM t", args).fetchall()
    finally:
        db.close()
    return bool(row[0])


@pytest.mark.parametrize(("text", "expected"), DOC_CASES)
def test_kql_hot_columns_agree_on_document(text: str, expected: Any) -> None:
    fields = ["labels.gateway", "labels.retry", "labels.attempt", "http.response.status_code"]
    fields += ["event.duration", "tags", "source.ip", "nothing", "missing", "labels", "nested"]
    assert _hot_sql(parse(text), DOC, [*fields, "message"]) is expected


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(node=_nodes, doc=_docs)
def test_kql_hot_columns_agree_with_python_on_random_queries(
    node: Node, doc: dict[str, Any]
) -> None:
    expected = matches(node, lambda name: get_field(doc, name))
    assert _hot_sql(node, doc, ["f", "g.h", "g", "message", "f.g"]) is expected
