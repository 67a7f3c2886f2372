"""Alertmanager's label matchers: ``severity="critical"``, ``job=~"a|b"``, ``{a!="b", c!~d}``.

The syntax is Alertmanager's classic one (``labels.ParseMatchers``): a label name,
one of ``=``, ``!=``, ``=~``, ``!~`` and a value, double-quoted with Go escapes
(``\\"``, ``\\\\``, ``\\n``) or bare up to the next comma; a list may be wrapped in
braces. Regexes are RE2, anchored at both ends, as ``siem.model.Matcher`` runs them.

>>> [format_matcher(m) for m in parse_matchers('{severity="critical", service=~foo|bar}')]
['severity="critical"', 'service=~"foo|bar"']
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from siem.model import Matcher, MatcherError
from vigil.errors import VigilError

MAX_MATCHER_TEXT = 4096
"""Longest matcher list accepted in one string (a CLI argument or a config entry)."""

_NAME = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*|\"(?:[^\"\\]|\\.)*\")\s*(=~|!~|!=|=)\s*")
_ESCAPES = {"n": "\n", "t": "\t", "\\": "\\", '"': '"', "r": "\r"}


class MatcherSyntaxError(VigilError):
    """A matcher that is not ``name op value``; the message says which part and why."""


def _unquote(text: str, start: int) -> tuple[str, int]:
    """The Go-quoted string starting at ``text[start] == '"'``, and the index after it."""
    out: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            if i + 1 >= len(text):
                break
            nxt = text[i + 1]
            if nxt not in _ESCAPES:
                raise MatcherSyntaxError(f"unknown escape \\{nxt} in {text!r}")
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        if ch == '"':
            return "".join(out), i + 1
        out.append(ch)
        i += 1
    raise MatcherSyntaxError(f"unterminated quoted value in {text!r}")


def parse_matchers(text: str) -> list[Matcher]:
    """Every matcher of ``text``; raises ``MatcherSyntaxError`` naming what is wrong."""
    if len(text) > MAX_MATCHER_TEXT:
        raise MatcherSyntaxError(f"matcher text longer than {MAX_MATCHER_TEXT} characters")
    body = text.strip()
    if body.startswith("{"):
        if not body.endswith("}"):
            raise MatcherSyntaxError(f"missing closing '}}' in {text!r}")
        body = body[1:-1]
    rv: list[Matcher] = []
    i = 0
    while i < len(body):
        m = _NAME.match(body, i)
        if m is None:
            rest = body[i:].strip()
            if not rest:
                break
            raise MatcherSyntaxError(
                f'bad matcher {rest[:60]!r}; write it as name="value" (or !=, =~, !~)'
            )
        name = m.group(1)
        if name.startswith('"'):
            name, _ = _unquote(name, 0)
        op = m.group(2)
        i = m.end()
        if i < len(body) and body[i] == '"':
            value, i = _unquote(body, i)
            while i < len(body) and body[i].isspace():
                i += 1
        else:
            end = body.find(",", i)
            end = len(body) if end < 0 else end
            value = body[i:end].strip()
            i = end
        if i < len(body):
            if body[i] != ",":
                raise MatcherSyntaxError(f"expected ',' after {name}{op}{value!r} in {text!r}")
            i += 1
        try:
            rv.append(Matcher(name, op, value))  # type: ignore[arg-type]
        except MatcherError as exc:
            raise MatcherSyntaxError(str(exc)) from None
    if not rv:
        raise MatcherSyntaxError(f"no matcher in {text!r}")
    return rv


def format_matcher(m: Matcher) -> str:
    """``name op "value"`` with the value Go-quoted, as amtool prints it."""
    value = m.value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'{m.name}{m.op}"{value}"'


def matches_all(matchers: Sequence[Matcher], labels: Mapping[str, str]) -> bool:
    """True when every matcher matches ``labels`` (an empty list matches everything)."""
    return all(m.matches(labels) for m in matchers)
