"""The KQL subset: parse a query into an AST, run it in Python or compile it to SQL.

Supported, as in Kibana's KQL::

    event.dataset:shop.auth and event.outcome:failure
    source.ip:10.0.0.* or user.name:adm*          wildcards (ASCII case ignored)
    url.original:"/api/cart items"                quoted values are literal
    http.response.status_code >= 500              numeric ranges: < <= > >=
    not (service.name:shop or tags:(a or b))      and, or, not, parentheses, value lists
    error.message:*                               the field exists (is not null)
    timeout  or  "connection refused"             bare terms search ``message``

Matching rules, the same in both backends: a field holding a list matches when
any element does; ``field:value`` compares text exactly (booleans read as
``true``/``false``) or, when both sides are numbers, numerically; ranges only
match numbers; wildcards and bare terms ignore ASCII case, like SQLite's LIKE.
Values never reach SQL text: they are always bound parameters.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from siem import SiemError

RangeOp = Literal["<", "<=", ">", ">="]
FIELD_RE = re.compile(r"[A-Za-z0-9_@][A-Za-z0-9_@.\-]*")
MESSAGE = "message"
MAX_LENGTH = 16_384
"""Longer queries are refused before parsing (a rule's query is a line or two)."""
MAX_DEPTH = 32
"""How deeply parentheses and ``not`` may nest; keeps parsing and matching off the stack limit."""
MAX_NESTING = 16
"""How deeply ``and``/``or``/``not`` may nest in the parsed query: each level is a
parenthesis in the SQL, and SQLite's parser overflows somewhere past 24."""
MAX_TERMS = 256
"""Field conditions and search terms per query; keeps the SQL within SQLite's limits."""
_SURROGATE = re.compile("[\ud800-\udfff]")


class KqlError(SiemError):
    """A KQL query does not parse; names the 1-based column and what was expected."""

    def __init__(self, what: str, column: int, hint: str = "") -> None:
        self.column = column
        super().__init__(f"KQL: {what} at column {column}" + (f"; {hint}" if hint else ""))


@dataclass(frozen=True)
class Equals:
    """``field:value`` — exact text, or numeric equality when both are numbers."""

    field: str
    value: str


@dataclass(frozen=True)
class Like:
    """A wildcard match; ``chunks`` are the literal parts between the ``*``s."""

    field: str
    chunks: tuple[str, ...]


@dataclass(frozen=True)
class Range:
    """``field >= 500`` and friends; only numeric values match."""

    field: str
    op: RangeOp
    number: float


@dataclass(frozen=True)
class Exists:
    """``field:*`` — the field holds a value other than null."""

    field: str


@dataclass(frozen=True)
class And:
    """All of ``items``; ``And(())`` (an empty query) matches everything."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    """Any of ``items``."""

    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    """The negation of ``item``."""

    item: Node


Node = Equals | Like | Range | Exists | And | Or | Not


# --- lexer -----------------------------------------------------------------


TokenKind = Literal["(", ")", ":", "op", "word", "string", "end"]
_PUNCT: dict[str, TokenKind] = {"(": "(", ")": ")", ":": ":"}
_OPS: dict[str, RangeOp] = {"<": "<", "<=": "<=", ">": ">", ">=": ">="}


@dataclass(frozen=True)
class _Token:
    kind: TokenKind
    text: str
    column: int
    chunks: tuple[str, ...] = ()

    @property
    def keyword(self) -> str | None:
        if self.kind == "word" and len(self.chunks) == 1 and self.text.lower() in _KEYWORDS:
            return self.text.lower()
        return None


_KEYWORDS = {"and", "or", "not"}
_SPECIAL = set('()":<>') | {" ", "\t", "\n", "\r"}


def _tokenize(text: str) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        col = i + 1
        if ch.isspace():
            i += 1
        elif ch in "():":
            tokens.append(_Token(_PUNCT[ch], ch, col))
            i += 1
        elif ch in "<>":
            op = text[i : i + 2] if text[i + 1 : i + 2] == "=" else ch
            tokens.append(_Token("op", op, col))
            i += len(op)
        elif ch == '"':
            i = _quoted(text, i, tokens)
        else:
            i = _word(text, i, tokens)
    tokens.append(_Token("end", "", len(text) + 1))
    return tokens


def _quoted(text: str, start: int, tokens: list[_Token]) -> int:
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text):
            out.append(text[i + 1])
            i += 2
        elif ch == '"':
            tokens.append(_Token("string", "".join(out), start + 1))
            return i + 1
        else:
            out.append(ch)
            i += 1
    raise KqlError("unterminated quoted string", start + 1, 'add the closing "')


def _word(text: str, start: int, tokens: list[_Token]) -> int:
    chunks: list[str] = []
    current: list[str] = []
    i = start
    while i < len(text) and text[i] not in _SPECIAL:
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text):
                raise KqlError("expected a character after '\\'", i + 1)
            current.append(text[i + 1])
            i += 2
            continue
        if ch == "*":
            chunks.append("".join(current))
            current = []
        else:
            current.append(ch)
        i += 1
    chunks.append("".join(current))
    tokens.append(_Token("word", text[start:i], start + 1, tuple(chunks)))
    return i


# --- parser ----------------------------------------------------------------


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokenize(text)
        self.pos = 0
        self.depth = 0
        self.terms = 0

    def nest(self) -> None:
        """Enter a parenthesis or ``not``; refuse nesting past ``MAX_DEPTH``."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise KqlError(
                f"nested more than {MAX_DEPTH} levels deep", self.tok.column, "simplify the query"
            )

    def term(self, node: Node) -> Node:
        """Count a condition; refuse more than ``MAX_TERMS``."""
        self.terms += 1
        if self.terms > MAX_TERMS:
            raise KqlError(f"more than {MAX_TERMS} conditions", self.tok.column, "split the query")
        return node

    @property
    def tok(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def expect_close(self) -> None:
        if self.tok.kind != ")":
            raise KqlError(f"expected ')' but found {_describe(self.tok)}", self.tok.column)
        self.take()

    def query(self) -> Node:
        if self.tok.kind == "end":
            return And(())
        node = self.or_expr()
        if self.tok.kind != "end":
            raise KqlError(
                f"expected 'and', 'or' or the end of the query but found {_describe(self.tok)}",
                self.tok.column,
                "quote values that contain spaces",
            )
        return node

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.tok.keyword == "or":
            self.take()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Node:
        items = [self.not_expr()]
        while self.tok.keyword == "and":
            self.take()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self) -> Node:
        if self.tok.keyword == "not":
            self.take()
            self.nest()
            node = Not(self.not_expr())
            self.depth -= 1
            return node
        return self.primary()

    def primary(self) -> Node:
        tok = self.tok
        if tok.kind == "(":
            self.take()
            self.nest()
            node = self.or_expr()
            self.expect_close()
            self.depth -= 1
            return node
        if tok.kind == "string":
            self.take()
            return self.term(Like(MESSAGE, ("", tok.text, "")))
        if tok.kind != "word" or tok.keyword is not None:
            raise KqlError(
                f"expected a field, a term or '(' but found {_describe(tok)}", tok.column
            )
        self.take()
        if self.tok.kind == ":":
            self.take()
            return self.field_value(_field_name(tok))
        if self.tok.kind == "op":
            return self.field_range(_field_name(tok))
        return self.term(Like(MESSAGE, ("", *tok.chunks, "")))

    def field_range(self, name: str) -> Node:
        op = self.take()
        value = self.tok
        if value.kind != "word" or len(value.chunks) != 1:
            raise KqlError(f"expected a number after '{op.text}'", value.column)
        try:
            number = float(value.text)
        except ValueError:
            raise KqlError(
                f"expected a number after '{op.text}', got '{value.text}'", value.column
            ) from None
        if math.isnan(number):
            raise KqlError(f"expected a number after '{op.text}', got 'nan'", value.column)
        self.take()
        return self.term(Range(name, _OPS[op.text], number))

    def field_value(self, name: str) -> Node:
        if self.tok.kind == "(":
            self.take()
            self.nest()
            node = self.value_or(name)
            self.expect_close()
            self.depth -= 1
            return node
        return self.value(name)

    def value_or(self, name: str) -> Node:
        items = [self.value_and(name)]
        while self.tok.keyword == "or":
            self.take()
            items.append(self.value_and(name))
        return items[0] if len(items) == 1 else Or(tuple(items))

    def value_and(self, name: str) -> Node:
        items = [self.value_not(name)]
        while self.tok.keyword == "and":
            self.take()
            items.append(self.value_not(name))
        return items[0] if len(items) == 1 else And(tuple(items))

    def value_not(self, name: str) -> Node:
        if self.tok.keyword == "not":
            self.take()
            self.nest()
            node = Not(self.value_not(name))
            self.depth -= 1
            return node
        return self.field_value(name)

    def value(self, name: str) -> Node:
        tok = self.tok
        if tok.kind == "string":
            self.take()
            return self.term(Equals(name, tok.text))
        if tok.kind != "word" or tok.keyword is not None:
            raise KqlError(f"expected a value after ':' but found {_describe(tok)}", tok.column)
        self.take()
        if tok.chunks == ("", ""):
            return self.term(Exists(name))
        if len(tok.chunks) == 1:
            return self.term(Equals(name, tok.chunks[0]))
        return self.term(Like(name, tok.chunks))


def _field_name(tok: _Token) -> str:
    if len(tok.chunks) != 1 or not FIELD_RE.fullmatch(tok.text):
        raise KqlError(
            f"invalid field name '{tok.text}'",
            tok.column,
            "use letters, digits, '_', '@', '.' and '-'",
        )
    return tok.text


def _describe(tok: _Token) -> str:
    return "the end of the query" if tok.kind == "end" else f"'{tok.text}'"


@functools.lru_cache(maxsize=512)
def parse(text: str) -> Node:
    """The AST of a KQL query; a blank query matches everything.

    >>> parse("source.ip:10.0.0.* or user.name:adm*")
    Or(items=(Like(field='source.ip', chunks=('10.0.0.', '')), Like(field='user.name', ...)))
    """
    if len(text) > MAX_LENGTH:
        raise KqlError(
            f"the query is longer than {MAX_LENGTH} characters", MAX_LENGTH + 1, "shorten it"
        )
    bad = _SURROGATE.search(text)
    if bad is not None:  # SQLite and UTF-8 cannot carry a lone surrogate
        raise KqlError(
            f"character U+{ord(bad.group()):04X} is not valid Unicode text",
            bad.start() + 1,
            "remove it",
        )
    node = _Parser(text).query()
    if _nesting(node) > MAX_NESTING:
        raise KqlError(
            f"'and', 'or' and 'not' nest more than {MAX_NESTING} levels deep",
            1,
            "simplify the query (fewer nested parentheses and 'not's)",
        )
    return node


def _nesting(node: Node) -> int:
    """Levels of ``And``/``Or``/``Not`` from ``node`` down to its deepest condition."""
    if isinstance(node, (And, Or)):
        return 1 + max((_nesting(item) for item in node.items), default=0)
    if isinstance(node, Not):
        return 1 + _nesting(node.item)
    return 0


# --- Python predicate -------------------------------------------------------

Lookup = Callable[[str], Any]


def matches(node: Node, lookup: Lookup) -> bool:
    """Whether a document matches; ``lookup`` gives a dotted field's value (``Event.get``)."""
    if isinstance(node, And):
        return all(matches(item, lookup) for item in node.items)
    if isinstance(node, Or):
        return any(matches(item, lookup) for item in node.items)
    if isinstance(node, Not):
        return not matches(node.item, lookup)
    value = lookup(node.field)
    if isinstance(node, Exists):
        return value is not None
    return any(_scalar_matches(node, v) for v in _scalars(value))


def _scalars(value: Any) -> list[Any]:
    items = value if isinstance(value, list) else [value]
    return [v for v in items if v is not None and not isinstance(v, (dict, list))]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def text_of(value: Any) -> str:
    """A scalar as KQL compares it: booleans as ``true``/``false``, the rest as ``str``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _as_number(text: str) -> float | None:
    try:
        number = float(text)
    except ValueError:
        return None
    return None if math.isnan(number) else number


def _scalar_matches(node: Equals | Like | Range, value: Any) -> bool:
    if isinstance(node, Range):
        return _is_number(value) and _compare(float(value), node.op, node.number)
    if isinstance(node, Like):
        return _like_regex(node.chunks).fullmatch(text_of(value)) is not None
    if text_of(value) == node.value:
        return True
    number = _as_number(node.value)
    return number is not None and _is_number(value) and float(value) == number


def _compare(left: float, op: RangeOp, right: float) -> bool:
    if op == "<":
        return left < right
    if op == "<=":
        return left <= right
    if op == ">":
        return left > right
    return left >= right


@functools.lru_cache(maxsize=512)
def _like_regex(chunks: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile(".*".join(re.escape(c) for c in chunks), re.IGNORECASE | re.ASCII | re.DOTALL)


# --- SQL ---------------------------------------------------------------------


def json_path(dotted: str) -> str:
    """The SQLite JSON path of a nested ECS field: ``source.ip`` → ``$."source"."ip"``."""
    if not FIELD_RE.fullmatch(dotted):
        raise SiemError(
            f"invalid field name {dotted!r}: use letters, digits, '_', '@', '.' and '-'"
        )
    return "$" + "".join(f'."{part}"' for part in dotted.split("."))


def field_path_sql(dotted: str, column: str = "doc") -> tuple[str, list[Any]]:
    """SQL for the JSON path of ``dotted`` in ``column``: a flat key wins, as in ``get_field``."""
    if "." not in dotted:
        return "?", [json_path(dotted)]
    flat = f'$."{dotted}"'
    sql = f"(CASE WHEN json_type({column}, ?) IS NOT NULL THEN ? ELSE ? END)"
    return sql, [flat, flat, json_path(dotted)]


_TEXT_SQL = (
    "(CASE j.type WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' ELSE CAST(j.value AS TEXT) END)"
)
# A text key means json_each walked the members of an object: objects never match.
_SCALAR_SQL = "j.type NOT IN ('null', 'object', 'array') AND typeof(j.key) != 'text'"


def to_sql(
    node: Node, column: str = "doc", columns: Mapping[str, str] | None = None
) -> tuple[str, list[Any]]:
    """A WHERE fragment over the JSON text ``column`` and its parameters.

    ``columns`` maps field names to columns holding ``value_sql(field)`` (the
    SQLite store keeps indexed generated columns for its hot fields): a
    condition on such a field reads the column, which an index can answer,
    and walks the document only for the rare list value.
    """
    columns = columns or {}
    if isinstance(node, (And, Or)):
        if not node.items:
            return ("1" if isinstance(node, And) else "0"), []
        parts = [to_sql(item, column, columns) for item in node.items]
        joiner = " AND " if isinstance(node, And) else " OR "
        return "(" + joiner.join(p[0] for p in parts) + ")", [a for p in parts for a in p[1]]
    if isinstance(node, Not):
        sql, args = to_sql(node.item, column, columns)
        return f"(NOT {sql})", args
    hot = columns.get(node.field)
    if isinstance(node, Exists):
        if hot is not None:
            return f"({hot} IS NOT NULL)", []
        path_sql, path_args = field_path_sql(node.field, column)
        return f"(COALESCE(json_type({column}, {path_sql}), 'null') != 'null')", path_args
    walk, walk_args = _each_sql(node, column)
    if hot is None:
        return walk, walk_args
    # Never NULL (NOT must stay a negation): the column is NULL exactly when the
    # field is missing or null, and then nothing matches.
    if isinstance(node, Equals):
        # One IN over the values and the list mark: a single index lookup, where
        # an OR would make SQLite merge two.
        values = _equal_values(node)
        marks = ", ".join("?" * len(values))
        return (
            f"({hot} IS NOT NULL AND {hot} IN ({marks}, {LIST_MARK}) "
            f"AND ({hot} != {LIST_MARK} OR {walk}))",
            [*values, *walk_args],
        )
    cond, args = _column_sql(node, hot)
    return (
        f"({hot} IS NOT NULL AND ({cond} OR ({hot} = {LIST_MARK} AND {walk})))",
        [*args, *walk_args],
    )


def _each_sql(node: Equals | Like | Range, column: str) -> tuple[str, list[Any]]:
    """Any scalar (or list element) of the field satisfies ``node``: walks the JSON."""
    path_sql, path_args = field_path_sql(node.field, column)
    cond, args = _scalar_sql(node)
    sql = (
        f"EXISTS (SELECT 1 FROM json_each({column}, {path_sql}) AS j "
        f"WHERE {_SCALAR_SQL} AND {cond})"
    )
    return sql, path_args + args


def _equal_values(node: Equals) -> list[Any]:
    """The column values equal to ``node.value`` in KQL's sense.

    The column has no affinity: text '502' equals only '502', the numbers 502 and
    502.0 only the number; exactly the text-or-number rule of the JSON walk.
    """
    number = _as_number(node.value)
    return [node.value] if number is None else [node.value, number]


def _column_sql(node: Like | Range, hot: str) -> tuple[str, list[Any]]:
    """``node`` on a column holding ``value_sql()``."""
    sql, args = _compare_sql(
        node, hot, f"typeof({hot}) IN ('integer', 'real')", f"CAST({hot} AS TEXT)"
    )
    # A list's mark is a blob: CAST makes it '' and LIKE '%' would match it.
    return f"(typeof({hot}) != 'blob' AND {sql})", args


def _compare_sql(
    node: Like | Range, value: str, is_number: str, text: str
) -> tuple[str, list[Any]]:
    """A range or wildcard over ``value``, given SQL for "it is a number" and its text."""
    if isinstance(node, Range):
        return f"({is_number} AND {value} {node.op} ?)", [node.number]
    pattern = "%".join(_escape_like(c) for c in node.chunks)
    return f"{text} LIKE ? ESCAPE '\\'", [pattern]


LIST_MARK = "X''"
"""What ``value_sql`` holds for a list or an object: no scalar ever equals it."""


def value_sql(dotted: str, column: str = "doc") -> str:
    """SQL without parameters (for a generated column) of the scalar value of ``dotted``.

    Text and numbers as they are, booleans as the text ``true``/``false`` (how
    KQL compares them), NULL when missing, null or ``column`` is not JSON, and
    ``LIST_MARK`` for a list or an object (conditions then walk the document).
    """
    flat, nested = f'$."{dotted}"', json_path(dotted)  # json_path checked the name
    if "." not in dotted:
        path = f"'{nested}'"
    else:
        path = (
            f"(CASE WHEN json_type({column}, '{flat}') IS NOT NULL "
            f"THEN '{flat}' ELSE '{nested}' END)"
        )
    return (
        f"(CASE WHEN json_valid({column}) THEN CASE json_type({column}, {path}) "
        f"WHEN 'true' THEN 'true' WHEN 'false' THEN 'false' "
        f"WHEN 'array' THEN {LIST_MARK} WHEN 'object' THEN {LIST_MARK} "
        f"ELSE json_extract({column}, {path}) END END)"
    )


def _scalar_sql(node: Equals | Like | Range) -> tuple[str, list[Any]]:
    is_number = "j.type IN ('integer', 'real')"
    if not isinstance(node, Equals):
        return _compare_sql(node, "j.value", is_number, _TEXT_SQL)
    number = _as_number(node.value)
    if number is None:
        return f"{_TEXT_SQL} = ?", [node.value]
    return f"({_TEXT_SQL} = ? OR ({is_number} AND j.value = ?))", [node.value, number]


def _escape_like(chunk: str) -> str:
    return chunk.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
