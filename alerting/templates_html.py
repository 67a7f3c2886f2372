"""Go's html/template escaping for the template engine of ``alerting.templates``.

Go escapes each action by the HTML context it prints into: text and
attribute values are HTML-escaped, a value starting a URL attribute
(``href``, ``src``, ``*url*`` …) is filtered (only ``http``, ``https`` and
``mailto`` schemes; others become ``#ZgotmplZ``) and normalised, a value in a
URL's query or fragment is percent-encoded, comments are dropped, and
``safeHtml`` values pass unescaped in text. Go works the contexts out when
parsing; ``HtmlRun`` follows them while running (the template's text moves the
context, printed values never do), which gives the same output for templates
whose branches end in the same context — the ones Go accepts. Actions inside
``<script>``, ``<style>``, ``on*`` and ``style`` attributes are refused (Go
escapes them as JavaScript and CSS; notification mails do not use them).

>>> from alerting.templates import TemplateSet, FUNCTIONS
>>> TemplateSet(FUNCTIONS).execute('<a href="{{ . }}">{{ . }}</a>', "javascript:x<", run=HtmlRun)
'<a href="#ZgotmplZ">javascript:x&lt;</a>'
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from alerting.templates import TemplateError, _Node, _Parsed, _Pipe, _Run, show


class HTML(str):
    """Text known to be safe HTML (``safeHtml``): printed unescaped in HTML text."""


_HTML_TABLE = {
    "\0": "\ufffd",
    '"': "&#34;",
    "&": "&amp;",
    "'": "&#39;",
    "+": "&#43;",
    "<": "&lt;",
    ">": "&gt;",
}
_HTML_NORM_TABLE = {k: v for k, v in _HTML_TABLE.items() if k != "&"}
_HTML_NOSPACE_TABLE = {
    **_HTML_TABLE,
    "\0": "&#xfffd;",
    "\t": "&#9;",
    "\n": "&#10;",
    "\v": "&#11;",
    "\f": "&#12;",
    "\r": "&#13;",
    " ": "&#32;",
    "=": "&#61;",
    "`": "&#96;",
}
_HTML_NOSPACE_NORM_TABLE = {k: v for k, v in _HTML_NOSPACE_TABLE.items() if k != "&"}
_EQUIVALENT = {
    "attrescaper": "html",
    "htmlescaper": "html",
    "rcdataescaper": "html",
    "urlescaper": "urlquery",
    "urlnormalizer": "urlquery",
}
"""Go's ``equivEscapers``: the predefined escaper each context escaper may be replaced by."""
_URL_RESERVED = frozenset("!#$&*+,/:;=?@[]")
_URL_UNRESERVED = frozenset("-._~")
_URL_ATTRS = frozenset(
    [
        "action",
        "archive",
        "background",
        "cite",
        "classid",
        "codebase",
        "data",
        "formaction",
        "href",
        "icon",
        "longdesc",
        "manifest",
        "poster",
        "profile",
        "src",
        "usemap",
        "xmlns",
    ]
)
_TAG = re.compile(r"<(/?)([A-Za-z][A-Za-z0-9:-]*)")
_ATTR_NAME = re.compile(r"[^\s=>/]+")
_SPACE = " \t\n\r\f"
_RAW_ELEMENTS = {"script": "script", "style": "style", "title": "rcdata", "textarea": "rcdata"}
_PREDEFINED_ESCAPERS = ("html", "urlquery")


def _replace(text: str, table: Mapping[str, str]) -> str:
    return "".join(table.get(c, c) for c in text)


def _strip_tags(text: str) -> str:
    return re.sub(r"<[^>]*>?", "", text)


def _process_url(text: str, norm: bool) -> str:
    """Go's ``processURLOnto``: percent-encode (lower-case hex) what a URL may not hold
    as is; ``norm`` keeps reserved characters and valid escapes."""
    raw = text.encode("utf-8")
    out: list[str] = []
    for i, byte in enumerate(raw):
        c = chr(byte)
        if (
            (c.isascii() and (c.isalnum() or c in _URL_UNRESERVED))
            or (norm and c in _URL_RESERVED)
            or (
                norm
                and c == "%"
                and i + 2 < len(raw)
                and all(chr(b) in "0123456789abcdefABCDEF" for b in raw[i + 1 : i + 3])
            )
        ):
            out.append(c)
        else:
            out.append(f"%{byte:02x}")
    return "".join(out)


def _safe_url(text: str) -> bool:
    protocol, sep, _ = text.partition(":")
    if sep and "/" not in protocol:
        return protocol.lower() in ("http", "https", "mailto")
    return True


def _attr_type(name: str) -> str:
    name = name.lower()
    if name.startswith("data-"):
        name = name[5:]
    elif ":" in name:
        prefix, _, local = name.partition(":")
        if prefix == "xmlns":
            return "url"
        name = local
    if name.startswith("on"):
        return "js"
    if name == "style":
        return "css"
    if name in _URL_ATTRS or "src" in name or "uri" in name or "url" in name:
        return "url"
    return "plain"


class HtmlRun(_Run):
    """An expansion that escapes printed values by their HTML context, as html/template."""

    def __init__(
        self, parsed: _Parsed, funcs: Mapping[str, Callable[..., Any]], max_output: int
    ) -> None:
        super().__init__(parsed, funcs, max_output)
        self.state = "text"
        self.element = ""
        self.attr = "plain"
        self.delim = '"'
        self.url_part = "none"

    # -- the template's text moves the context ----------------------------------------------

    def emit_text(self, text: str) -> None:
        out: list[str] = []
        i, n = 0, len(text)
        while i < n:
            i = self._step(text, i, out)
        self.emit("".join(out))

    def _step(self, text: str, i: int, out: list[str]) -> int:
        state = self.state
        if state == "text":
            j = text.find("<", i)
            if j < 0:
                out.append(text[i:])
                return len(text)
            out.append(text[i:j])
            if text.startswith("<!--", j):
                self.state = "comment"
                return j + 4
            m = _TAG.match(text, j)
            if m is None:
                out.append("<")
                return j + 1
            out.append(m.group(0))
            self.state = "tag"
            self.element = "" if m.group(1) else m.group(2).lower()
            return m.end()
        if state == "comment":
            j = text.find("-->", i)
            if j < 0:
                return len(text)
            self.state = "text"
            return j + 3
        if state in ("rcdata", "script", "style"):
            m = re.compile(r"</" + re.escape(self.element) + r"(?=[\s/>])", re.I).search(text, i)
            end = len(text) if m is None else m.start()
            out.append(text[i:end])
            if m is not None:
                self.state = "text"
            return end
        c = text[i]
        if state == "tag":
            if c in _SPACE or c == "/":
                out.append(c)
                return i + 1
            if c == ">":
                out.append(c)
                self.state = _RAW_ELEMENTS.get(self.element, "text")
                return i + 1
            m = _ATTR_NAME.match(text, i)
            assert m is not None
            out.append(m.group(0))
            self.attr = _attr_type(m.group(0))
            self.state = "after_name"
            return m.end()
        if state == "after_name":
            if c in _SPACE:
                out.append(c)
                return i + 1
            if c == "=":
                out.append(c)
                self.state = "before_value"
                return i + 1
            self.state = "tag"
            return i
        if state == "before_value":
            if c in _SPACE:
                out.append(c)
                return i + 1
            self.state, self.url_part = "attr", "none"
            if c in "\"'":
                self.delim = c
                out.append(c)
                return i + 1
            self.delim = " "
            return i
        # inside an attribute value
        if self.delim == " ":
            m = re.compile(r"[\s>]").search(text, i)
            end = len(text) if m is None else m.start()
            bad = re.search(r"[\"'<=`]", text[i:end])
            if bad is not None:
                raise TemplateError(f"{bad.group(0)!r} in unquoted attr: {text[i:end]!r}")
        else:
            found = text.find(self.delim, i)
            end = len(text) if found < 0 else found
        chunk = text[i:end]
        out.append(chunk)
        if self.attr == "url":
            if "#" in chunk or "?" in chunk:
                self.url_part = "query"
            elif chunk.strip(_SPACE) and self.url_part == "none":
                self.url_part = "pre"
        if end == len(text):
            return end
        self.state = "tag"
        if self.delim != " ":
            out.append(self.delim)
            return end + 1
        return end

    # -- printed values are escaped for it --------------------------------------------------

    def emit_value(self, node: _Node, dot: Any, scope: list[tuple[str, Any]]) -> None:
        assert node.pipe is not None
        commands = node.pipe.commands
        for command in commands[:-1]:
            head = command[0]
            if head.kind == "func" and head.value in _PREDEFINED_ESCAPERS:
                raise TemplateError(f'predefined escaper "{head.value}" disallowed in template')
        last = commands[-1][0]
        chain = self.escapers()
        if last.kind == "func" and last.value in _PREDEFINED_ESCAPERS:
            # Go's ensurePipelineContains: a trailing html/urlquery takes the place of the
            # context's equivalent escaper, or runs before the context's escapers.
            esc = str(last.value)
            if len(commands) == 1:
                value: Any = "".join(show(self.operand(a, dot, scope)) for a in commands[0][1:])
            else:
                value = self.pipe(_Pipe((), False, commands[:-1]), dot, scope)
            same = [_EQUIVALENT.get(name) == esc for name in chain]
            chain = [esc if eq else name for name, eq in zip(chain, same, strict=True)]
            if not any(same):
                chain.insert(0, esc)
        else:
            value = self.pipe(node.pipe, dot, scope)
        for name in chain:
            value = self.escaper(name, value)
        self.emit(show(value))

    def escapers(self) -> list[str]:
        """The escapers Go's html/template puts after an action in the current context."""
        state = self.state
        if state in ("text", "rcdata", "comment"):
            return {"text": ["htmlescaper"], "rcdata": ["rcdataescaper"]}.get(state, ["comment"])
        if state in ("script", "style"):
            raise TemplateError(f"Vigil does not print values inside <{self.element}>")
        if state in ("tag", "after_name"):
            self.state = "after_name"
            return ["namefilter"]
        if state == "before_value":  # Go nudges to an unquoted attribute value
            self.state, self.delim, self.url_part = "attr", " ", "none"
        if self.attr in ("js", "css"):
            raise TemplateError("Vigil does not print values inside on* or style attributes")
        chain = []
        if self.attr == "url":
            chain = {
                "none": ["urlfilter", "urlnormalizer"],
                "pre": ["urlnormalizer"],
                "query": ["urlescaper"],
            }[self.url_part]
        return [*chain, "nospaceescaper" if self.delim == " " else "attrescaper"]

    def escaper(self, name: str, value: Any) -> str:
        safe = isinstance(value, HTML)
        text = show(value)
        if name == "htmlescaper":
            return text if safe else _replace(text, _HTML_TABLE)
        if name == "rcdataescaper":
            return _replace(text, _HTML_NORM_TABLE if safe else _HTML_TABLE)
        if name == "attrescaper":
            if safe:
                return _replace(_strip_tags(text), _HTML_NORM_TABLE)
            return _replace(text, _HTML_TABLE)
        if name == "nospaceescaper":
            if safe:
                return _replace(_strip_tags(text), _HTML_NOSPACE_NORM_TABLE)
            return _replace(text, _HTML_NOSPACE_TABLE)
        if name == "urlfilter":
            return text if _safe_url(text) else "#ZgotmplZ"
        if name in ("urlnormalizer", "urlescaper"):
            return _process_url(text, norm=name == "urlnormalizer")
        if name == "namefilter":
            lowered = text.lower()
            if not re.fullmatch(r"[a-z0-9-]+", lowered) or _attr_type(lowered) != "plain":
                return "ZgotmplZ"
            return lowered
        if name in _PREDEFINED_ESCAPERS:
            return str(self.funcs[name](value))
        return ""  # inside an HTML comment: dropped
