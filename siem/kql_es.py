"""KQL to the Elasticsearch query DSL: the second compiler over ``siem.kql``'s AST.

An ECS document's fields change type between events (a status code is a
number in one, a string in the next), which a dynamic Elasticsearch mapping
turns into rejected documents. So the store indexes, beside the document,
a few keyword arrays computed here with ``siem.kql``'s own rules
(``index_terms``), and KQL compiles to exact term, wildcard and range
queries on them (``to_query``):

- ``vigil.path``: every dotted path whose value is not null (``field:*``),
  resolved as ``siem.model.get_field`` resolves it (a flat ``"source.ip"``
  key wins over nesting);
- ``vigil.text``: ``path␟text`` for every scalar (list elements included),
  the text as ``kql.text_of`` gives it (``field:value``);
- ``vigil.ltext``: the same, ASCII-lower-cased (wildcards and bare terms
  ignore ASCII case, like SQLite's LIKE);
- ``vigil.num``: ``path␟key`` for every numeric scalar, the key a fixed-width
  hex encoding of the float that sorts like the number, so numeric equality
  and ranges are keyword ``term``/``range`` queries;
- ``vigil.over``: paths whose terms were too long for Lucene (32 KiB per
  term) and so were not indexed, or ``ALL`` when a document had more terms
  than ``MAX_TERMS``.

For a document in ``vigil.over`` a condition on that path cannot be decided by
the index; each node therefore compiles to a pair: ``maybe`` (a superset of
the matches: undecided documents included) and ``sure`` (a subset), with
``not`` swapping them. The store filters with ``maybe`` and checks every hit
with ``kql.matches``, so an answer is exactly the reference semantics'.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any

from siem import kql

SEP = "\x1f"
"""Between a path and its value in a term; no field name can contain it."""
ALL = "\x00all"
"""``vigil.over`` value: this document's terms were cut short, any path may be undecided."""
MAX_TERM_BYTES = 8191
"""Longest term indexed (Lucene refuses terms over 32,766 bytes); longer ones go to ``over``."""
MAX_TERMS = 4096
"""Terms per document; beyond them the document is marked ``ALL`` (undecided everywhere)."""
MAX_DEPTH = 32
"""Nesting levels of objects walked for paths."""

_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
_MATCH_NONE: dict[str, Any] = {"bool": {"must_not": [{"match_all": {}}]}}
_MATCH_ALL: dict[str, Any] = {"match_all": {}}


def ascii_lower(text: str) -> str:
    """Lower-case A–Z only, as ``re.IGNORECASE | re.ASCII`` and SQLite's LIKE do."""
    return text.translate(_ASCII_LOWER)


def number_key(value: float) -> str:
    """16 hex digits that sort (as text) like the float does (-0.0 and 0.0 are one key)."""
    bits: int = struct.unpack(">Q", struct.pack(">d", value + 0.0))[0]
    bits = bits ^ 0xFFFFFFFFFFFFFFFF if bits >> 63 else bits | (1 << 63)
    return f"{bits:016x}"


def _paths(doc: Mapping[str, Any]) -> list[str]:
    """Every dotted path ``get_field`` can resolve in ``doc``: top-level keys, and
    nested walks through keys without dots (``get_field`` splits on dots)."""
    rv: list[str] = list(doc.keys())
    stack: list[tuple[str, Any, int]] = [
        (k, v, 1) for k, v in doc.items() if isinstance(k, str) and "." not in k
    ]
    while stack:
        prefix, node, depth = stack.pop()
        if not isinstance(node, Mapping) or depth >= MAX_DEPTH:
            continue
        for key, value in node.items():
            if isinstance(key, str) and "." not in key:
                path = f"{prefix}.{key}"
                rv.append(path)
                stack.append((path, value, depth + 1))
    return [p for p in rv if isinstance(p, str)]


def _float(value: Any) -> float | None:
    """A JSON number as a float (what ``kql`` compares); ``None`` for NaN and non-numbers."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except OverflowError:  # an integer beyond a double: kql cannot compare it either
        return None
    return None if math.isnan(number) else number


def index_terms(doc: Mapping[str, Any]) -> dict[str, list[str]]:
    """The keyword arrays ``to_query`` searches, for one document."""
    from siem.model import get_field

    paths: list[str] = []
    text: list[str] = []
    ltext: list[str] = []
    num: list[str] = []
    over: list[str] = []
    count = 0
    for path in dict.fromkeys(_paths(doc)):
        value = get_field(doc, path)
        if value is None:
            continue
        if len(path.encode("utf-8", "surrogatepass")) > MAX_TERM_BYTES or count >= MAX_TERMS:
            over = [ALL]
            break
        paths.append(path)
        count += 1
        for scalar in _scalars(value):
            if count >= MAX_TERMS:
                over = [ALL]
                break
            term = f"{path}{SEP}{kql.text_of(scalar)}"
            if len(term.encode("utf-8", "surrogatepass")) > MAX_TERM_BYTES:
                over.append(path)
            else:
                text.append(term)
                ltext.append(f"{path}{SEP}{ascii_lower(kql.text_of(scalar))}")
                count += 2
            number = _float(scalar)
            if number is not None:
                num.append(f"{path}{SEP}{number_key(number)}")
                count += 1
        if over == [ALL]:
            break
    return {
        "path": paths,
        "text": list(dict.fromkeys(text)),
        "ltext": list(dict.fromkeys(ltext)),
        "num": list(dict.fromkeys(num)),
        "over": list(dict.fromkeys(over)),
    }


def _scalars(value: Any) -> list[Any]:
    # kql._scalars: a list matches when any element does; objects never match.
    items = value if isinstance(value, list) else [value]
    return [v for v in items if v is not None and not isinstance(v, dict | list)]


def _wildcard_escape(chunk: str) -> str:
    return chunk.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")


def _undecided(field: str, prefix: str) -> dict[str, Any]:
    return {"terms": {f"{prefix}.over": [field, ALL]}}


def _leaf(node: kql.Equals | kql.Like | kql.Range | kql.Exists, prefix: str) -> dict[str, Any]:
    """The exact query of a condition over the indexed terms."""
    key = f"{node.field}{SEP}"
    if isinstance(node, kql.Exists):
        return {"term": {f"{prefix}.path": node.field}}
    if isinstance(node, kql.Range):
        bound = key + number_key(node.number)
        end = f"{node.field}\x20"  # just after every "field␟…" key
        ranges = {
            "<": {"gte": key, "lt": bound},
            "<=": {"gte": key, "lte": bound},
            ">": {"gt": bound, "lt": end},
            ">=": {"gte": bound, "lt": end},
        }
        return {"range": {f"{prefix}.num": ranges[node.op]}}
    if isinstance(node, kql.Like):
        # The field name keeps its case (lookups are case-sensitive); only values fold.
        pattern = "*".join(_wildcard_escape(ascii_lower(c)) for c in node.chunks)
        return {"wildcard": {f"{prefix}.ltext": {"value": _wildcard_escape(key) + pattern}}}
    exact: dict[str, Any] = {"term": {f"{prefix}.text": key + node.value}}
    number = _as_number(node.value)
    if number is None:
        return exact
    numeric = {"term": {f"{prefix}.num": key + number_key(number)}}
    return {"bool": {"should": [exact, numeric], "minimum_should_match": 1}}


def _as_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return None if math.isnan(number) else number


def _any(items: list[dict[str, Any]]) -> dict[str, Any]:
    if not items:
        return _MATCH_NONE
    return items[0] if len(items) == 1 else {"bool": {"should": items, "minimum_should_match": 1}}


def _all(items: list[dict[str, Any]]) -> dict[str, Any]:
    if not items:
        return _MATCH_ALL
    return items[0] if len(items) == 1 else {"bool": {"filter": items}}


def compile_pair(node: kql.Node, prefix: str = "vigil") -> tuple[dict[str, Any], dict[str, Any]]:
    """(maybe, sure): a superset and a subset of the documents ``node`` matches."""
    if isinstance(node, kql.And | kql.Or):
        pairs = [compile_pair(item, prefix) for item in node.items]
        join = _all if isinstance(node, kql.And) else _any
        return join([p[0] for p in pairs]), join([p[1] for p in pairs])
    if isinstance(node, kql.Not):
        maybe, sure = compile_pair(node.item, prefix)
        return {"bool": {"must_not": [sure]}}, {"bool": {"must_not": [maybe]}}
    exact = _leaf(node, prefix)
    return _any([exact, _undecided(node.field, prefix)]), exact


def to_query(node: kql.Node, prefix: str = "vigil") -> dict[str, Any]:
    """A query DSL filter matching every document ``node`` matches (and, only for
    documents in ``vigil.over``, possibly more: check hits with ``kql.matches``)."""
    return compile_pair(node, prefix)[0]
