"""PromQL syntax checks around ``promql_parser``: limits before parsing, errors with positions.

``check_shape`` runs before the parser sees any text: promql_parser is a Rust
extension whose recursion overflows the thread's stack on deeply nested input
(measured: ~10,000 levels of ``(`` or a ``1+1+...`` chain kill the process with
SIGSEGV; 3,000 do not), so no expression deeper than ``MAX_DEPTH`` reaches it.
The parser's messages carry no position; ``locate_parse_error`` finds one.
"""

from __future__ import annotations

import re

import promql_parser as pp

from alerting.promql_functions import PromQLError

MAX_LENGTH = 16_384
"""Longest expression accepted (characters); checked before parsing."""
MAX_DEPTH = 128
"""Deepest expression accepted, as estimated by ``check_shape`` before parsing.

promql_parser (Rust) overflows its stack, killing the process, on deeply
nested input, and the evaluator recurses once per level; 128 is far below
both (tests/unit/test_promql_limits.py runs the parser on deeper input in a
subprocess) and far above any real rule or panel.
"""


_OPEN = "([{"
_CLOSE = ")]}"
_OPERATOR_CHARS = frozenset("+-*/%^<>=!")
_OPERATOR_WORDS = frozenset({"and", "or", "unless", "atan2"})


def check_shape(text: str) -> None:
    """Reject ``text`` that is too long or too deep, without parsing it.

    One linear scan; the depth estimate is an upper bound on the syntax tree's
    depth: each bracket adds a level, and so does each operator (binary or
    unary) before a point at the same bracket level, since a chain
    ``a + b + ... + z`` nests one level per operator. Strings and comments are
    skipped; label matchers inside ``{}`` do not nest.
    """
    if len(text) > MAX_LENGTH:
        raise PromQLError(
            f"expression of {len(text):,} characters is longer than the limit of {MAX_LENGTH:,}",
            expr=text,
        )
    saved: list[int] = []  # depth before each open bracket
    braces = 0
    depth = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c in "\"'`":
            i = _skip_string(text, i)
            continue
        if c == "#":
            end = text.find("\n", i)
            i = n if end < 0 else end
            continue
        if c in _OPEN:
            saved.append(depth)
            braces += c == "{"
            depth += 1
        elif c in _CLOSE:
            if saved:
                depth = saved.pop()
            braces -= c == "}" and braces > 0
        elif c in _OPERATOR_CHARS and not braces:
            depth += 1
        elif c.isalpha() or c == "_":
            start = i
            while i < n and (text[i].isalnum() or text[i] in "_:"):
                i += 1
            if text[start:i].lower() in _OPERATOR_WORDS and not braces:
                depth += 1
            continue
        if depth > MAX_DEPTH:
            raise PromQLError(
                f"expression nests deeper than the limit of {MAX_DEPTH} "
                "(brackets and operators); split it into recording rules",
                expr=text,
                offset=i,
            )
        i += 1


def _skip_string(text: str, i: int) -> int:
    """Offset after the string literal starting at ``i`` (or the end of text)."""
    quote, i = text[i], i + 1
    while i < len(text):
        c = text[i]
        if c == "\\" and quote != "`":
            i += 2
            continue
        if c == quote:
            return i + 1
        i += 1
    return i


_TOKEN = re.compile(
    r"""(?P<space>\s+|\#[^\n]*)
    |(?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*'|`[^`]*`)
    |(?P<open_quote>["'`])
    |(?P<word>[A-Za-z_:][\w:]*)
    |(?P<number>[0-9.](?:[eE][+-]|[\w.])*)
    |(?P<op>==|!=|>=|<=|=~|!~|.)""",
    re.VERBOSE | re.DOTALL,
)
_PROBES = ("", " 1", " x", "[1m])", ")", "]", "}", " (x)", ' "x"', "1m]", " by (x)", '="x"')
_OPENERS = {"(": ")", "{": "}", "[": "]"}


def tokens(text: str) -> list[tuple[str, str, int]]:
    """(kind, text, offset) of each token, enough to point at an error."""
    return [
        (m.lastgroup or "op", m.group(), m.start())
        for m in _TOKEN.finditer(text)
        if m.lastgroup != "space"
    ]


def locate_parse_error(text: str, message: str) -> int:
    """Best offset in ``text`` for the parser's ``message`` (which carries no position)."""
    found = tokens(text)
    lower = message.lower()
    stack: list[tuple[str, int]] = []
    stray: int | None = None
    for kind, tok, offset in found:
        if kind == "open_quote" and "unterminated" in lower:
            return offset
        if tok in _OPENERS:
            stack.append((tok, offset))
        elif tok in _OPENERS.values():
            if stack and _OPENERS[stack[-1][0]] == tok:
                stack.pop()
            elif stray is None:
                stray = offset
    if "unexpected right" in lower and stray is not None:
        return stray
    if "unclosed" in lower or "end of input inside" in lower:
        wanted = "(" if "paren" in lower else "{" if "brace" in lower else "["
        for opener, offset in reversed(stack):
            if opener == wanted:
                return offset
    if "end of input" in lower:
        return len(text.rstrip())
    quoted = re.search(r"'([^']+)'|: (\S+)$|regex for (.+)$", message)
    if quoted:
        needle = next(group for group in quoted.groups() if group).strip("'")
        for _, tok, offset in found:
            if tok == needle or tok[1:-1] == needle:
                return offset
    return _first_bad_token(text, found)


_MAX_PROBES = 2000
"""Parser calls spent locating an error; past it the error points at the end."""


def _first_bad_token(text: str, found: list[tuple[str, str, int]]) -> int:
    """The token after which no continuation can make the expression parse."""
    spent = 0
    for _, tok, offset in found:
        prefix = text[: offset + len(tok)]
        for a in _PROBES:
            for b in _PROBES:
                spent += 1
                if _parses(prefix + a + b):
                    break
            else:
                continue
            break
        else:
            return offset
        if spent > _MAX_PROBES:
            break
    return len(text.rstrip())


def find_regex(text: str, pattern: str) -> int | None:
    """Offset of the string literal holding ``pattern`` in ``text``, if found."""
    for kind, tok, offset in tokens(text):
        if kind == "string" and (tok[1:-1] == pattern or pattern in tok):
            return offset
    return None


def parse(text: str) -> pp.Expr:
    """``promql_parser.parse``, with its Rust panics (e.g. ``offset NaN``) as ValueError."""
    try:
        return pp.parse(text)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:  # pyo3's PanicException derives from BaseException
        raise ValueError(str(exc)) from None


def _parses(text: str) -> bool:
    try:
        parse(text)
    except ValueError:
        return False
    return True
