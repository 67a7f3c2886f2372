"""Annotation and label templates: Go's text/template with Prometheus' functions.

Rule labels and annotations are Go templates, as in Prometheus. This module
parses and runs that language itself (no Go, no ``eval``): text and actions
``{{ ... }}`` with ``{{-``/``-}}`` trimming and ``{{/* comments */}}``;
pipelines ``x | f``; calls ``f a b``; parenthesised pipelines; ``.Field``
chains; variables (``$x := ...``, ``$x = ...``); ``if``/``else if``/``else``,
``with``/``else``, ``range`` (with ``$i, $v :=``, over lists and maps) and
``define``/``template``. The data and variables are Prometheus': ``.Labels``,
``.Value``, ``.ExternalLabels``, ``.ExternalURL`` and ``$labels``, ``$value``,
``$externalLabels``, ``$externalURL``, ``$``.

Functions: Go's built-ins (``and or not len index print printf println eq
ne lt le gt ge html js urlquery slice``) and Prometheus' (``query first label
value strvalue sortByLabel args safeHtml match reReplaceAll title toUpper
toLower humanize humanize1024 humanizeDuration humanizePercentage
humanizeTimestamp toTime parseDuration stripPort stripDomain externalURL
pathPrefix graphLink tableLink``). Regexes are RE2, as in Go. ``tmpl`` is
refused, as Prometheus refuses it outside console templates.

A template that does not parse is a ``TemplateError`` at load time (with the
``line`` where parsing stopped); one that fails while running expands to
``<error expanding template: ...>``, as in Prometheus. Work is bounded: nesting
depth, output size and range iterations.

``TemplateSet`` is the same engine as Alertmanager uses it: named templates
gathered from files, a function set of the caller's choosing, data whose Go
methods are called from templates (a value's ``go_method(name)``, with arguments
as in ``.KV.Remove .Names``; ``go_string`` prints it), and an escaping run for
html/template (``alerting.templates_html``). ``alerting.am.templates`` builds
Alertmanager's notification templates on it.

>>> render("{{ $labels.job }} at {{ $value | humanizePercentage }}", {"job": "shop"}, 0.0712)
'shop at 7.12%'
"""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import re2

from vigil.errors import VigilError


class TemplateError(VigilError):
    """A template that does not parse, or an error while running one; ``line`` is the line
    of the template where parsing stopped, when known."""

    def __init__(self, message: str, *, line: int | None = None) -> None:
        super().__init__(message)
        self.reason = message
        self.line = line


MAX_DEPTH = 100
"""Deepest nesting of ``template`` calls and parentheses at run time."""
MAX_OUTPUT = 1 << 20
"""Most characters one expansion may produce."""
MAX_STEPS = 100_000
"""Most actions and range iterations one expansion may run."""

_SI_BIG = ("k", "M", "G", "T", "P", "E", "Z", "Y")
_SI_SMALL = ("m", "u", "n", "p", "f", "a", "z", "y")


# --- values as Go prints them -------------------------------------------------------------


def go_float(value: float) -> str:
    """A float as Prometheus prints a sample value: ``1`` not ``1.0``, ``0.25``, ``1e+21``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" in text:
        mantissa, exp = text.split("e")
        sign = "-" if exp.startswith("-") else "+"
        text = f"{mantissa}e{sign}{exp.lstrip('+-').rjust(2, '0')}"
    return text


def shortest_digits(value: float) -> tuple[str, str, int]:
    """A finite non-zero float's sign (``-`` or empty), its shortest round-tripping digits
    and the decimal exponent of the first digit: ``-1250.0`` → ``("-", "125", 3)``."""
    sign, digit_tuple, exponent = Decimal(repr(value)).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    return ("-" if sign else ""), digits, len(digit_tuple) + exponent - 1


def go_g(value: float) -> str:
    """A float as Go's ``%v``/``%g`` prints it: shortest digits, exponent from 1e+06 on."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1, value) < 0 else "0"
    prefix, digits, exp10 = shortest_digits(value)
    if exp10 < -4 or exp10 >= 6:  # Go's rule for the shortest %g
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if exp10 < 0 else '+'}{abs(exp10):02d}"
    if exp10 < 0:
        return f"{prefix}0.{'0' * (-exp10 - 1)}{digits}"
    whole = digits[: exp10 + 1].ljust(exp10 + 1, "0")
    frac = digits[exp10 + 1 :]
    return prefix + whole + ("." + frac if frac else "")


def _go_time(moment: dt.datetime) -> str:
    """``time.Time.String``: ``2024-01-02 03:04:05.5 +0000 UTC``, in the time's own zone."""
    text = f"{moment.year:04d}-" + moment.strftime("%m-%d %H:%M:%S")
    if moment.microsecond:
        text += f".{moment.microsecond:06d}".rstrip("0")
    minutes = int((moment.utcoffset() or dt.timedelta()).total_seconds()) // 60
    offset = f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    return f"{text} {offset} {moment.tzname() or offset}"


def show(value: Any) -> str:
    """``value`` as ``fmt.Sprint`` prints it (a value with ``go_string`` is a Go Stringer)."""
    stringer = getattr(value, "go_string", None)
    if callable(stringer):
        return str(stringer())
    if value is None:
        return "<no value>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return go_g(value)
    if isinstance(value, dt.datetime):
        return _go_time(value)
    if isinstance(value, Mapping):
        return "map[" + " ".join(f"{k}:{show(v)}" for k, v in sorted(value.items())) + "]"
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(show(v) for v in value) + "]"
    if isinstance(value, QuerySample):
        return "{" + show(value.labels) + " " + show(value.value) + "}"
    return str(value)


def _truth(value: Any) -> bool:
    if isinstance(value, QuerySample):
        return True
    return bool(value)


def _number(value: Any) -> float:
    if isinstance(value, bool):
        raise TemplateError(f"expected a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    try:
        return float(str(value))
    except ValueError:
        raise TemplateError(f"expected a number, got {value!r}") from None


def _g4(value: float) -> str:
    if math.isnan(value) or math.isinf(value):
        return go_float(value)
    return f"{value:.4g}"


# --- Prometheus' functions --------------------------------------------------------------


def humanize(value: Any) -> str:
    """SI prefixes, four significant digits: ``1234567`` → ``1.235M``."""
    v = _number(value)
    if v == 0 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    if abs(v) >= 1:
        for p in _SI_BIG:
            if abs(v) < 1000:
                break
            prefix, v = p, v / 1000
        return _g4(v) + prefix
    for p in _SI_SMALL:
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return _g4(v) + prefix


def humanize1024(value: Any) -> str:
    """Binary prefixes: ``2048`` → ``2ki``."""
    v = _number(value)
    if abs(v) <= 1 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    prefix = ""
    for p in ("ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"):
        if abs(v) < 1024:
            break
        prefix, v = p, v / 1024
    return _g4(v) + prefix


def humanize_percentage(value: Any) -> str:
    """A ratio as a percentage: ``0.0712`` → ``7.12%``."""
    return _g4(_number(value) * 100) + "%"


def humanize_duration(value: Any) -> str:
    """Seconds as ``1d 2h 3m 4s`` (or ``250ms`` below a second)."""
    v = _number(value)
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    if v == 0:
        return "0s"
    if abs(v) >= 1:
        sign = "-" if v < 0 else ""
        v = abs(v)
        seconds = int(v)
        days, seconds = divmod(seconds, 86400)
        hours, seconds = divmod(seconds, 3600)
        minutes, seconds = divmod(seconds, 60)
        if days:
            return f"{sign}{days}d {hours}h {minutes}m {seconds}s"
        if hours:
            return f"{sign}{hours}h {minutes}m {seconds}s"
        if minutes:
            return f"{sign}{minutes}m {seconds}s"
        return f"{sign}{_g4(v)}s"
    prefix = ""
    for p in _SI_SMALL:
        if abs(v) >= 1:
            break
        prefix, v = p, v * 1000
    return f"{_g4(v)}{prefix}s"


def to_time(value: Any) -> dt.datetime:
    """Seconds since the epoch as a UTC time."""
    try:
        return dt.datetime.fromtimestamp(_number(value), tz=dt.UTC)
    except (OverflowError, OSError, ValueError) as exc:
        raise TemplateError(f"out of range: {exc}") from None


def humanize_timestamp(value: Any) -> str:
    """Seconds since the epoch as Go prints a UTC time (``2024-01-02 03:04:05 +0000 UTC``)."""
    v = _number(value)
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    return _go_time(to_time(v))


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d*))?([a-zA-Z%])")


def printf(fmt: Any, *args: Any) -> str:
    """Go's ``fmt.Sprintf`` for the verbs templates use (``%s %v %d %f %e %g %x %q %t %%``)."""
    pending = list(args)
    out: list[str] = []
    pos = 0
    text = str(fmt)
    for match in _VERB.finditer(text):
        out.append(text[pos : match.start()])
        pos = match.end()
        flags, width, prec, verb = match.groups()
        if verb == "%":
            out.append("%")
            continue
        if not pending:
            out.append(f"%!{verb}(MISSING)")
            continue
        out.append(_pad(_verb(verb, prec, flags, pending.pop(0)), flags, width))
    out.append(text[pos:])
    if pending:
        out.append("%!(EXTRA " + ", ".join(f"{type(a).__name__}={show(a)}" for a in pending) + ")")
    return "".join(out)


def _pad(text: str, flags: str, width: str | None) -> str:
    if not width:
        return text
    n = int(width)
    if "-" in flags:
        return text.ljust(n)
    if "0" in flags and text[:1] in "-+0123456789":
        sign = text[0] if text[0] in "-+" else ""
        return sign + text[len(sign) :].rjust(n - len(sign), "0")
    return text.rjust(n)


def _verb(verb: str, prec: str | None, flags: str, arg: Any) -> str:
    plus = "+" if "+" in flags else ""
    if verb in "eEfFgG":
        if isinstance(arg, bool) or not isinstance(arg, (int, float)):
            return f"%!{verb}({type(arg).__name__}={show(arg)})"
        v = float(arg)
        if math.isnan(v) or math.isinf(v):
            return go_float(v)
        if verb in "gG" and prec in (None, ""):
            text = go_g(v)
            return (plus if v >= 0 else "") + (text.upper() if verb == "G" else text)
        digits = 6 if prec is None else int(prec or 0)
        return f"{v:{plus}.{digits}{verb}}"
    if verb == "d":
        if isinstance(arg, int) and not isinstance(arg, bool):
            return f"{arg:{plus}d}"
        return f"%!d({type(arg).__name__}={show(arg)})"
    if verb in "xX":
        if isinstance(arg, int) and not isinstance(arg, bool):
            return f"{arg:{verb.lower() if verb == 'x' else 'X'}}"
        raw = str(arg).encode().hex()
        return raw.upper() if verb == "X" else raw
    if verb == "q":
        return json.dumps(str(arg), ensure_ascii=False)
    if verb == "t":
        return show(arg) if isinstance(arg, bool) else f"%!t({show(arg)})"
    if verb in "sv":
        text = show(arg)
        return text[: int(prec)] if prec and verb == "s" else text
    return f"%!{verb}({show(arg)})"


def _go_title(text: Any) -> str:
    """``strings.Title``: the first letter of every word upper-cased, the rest kept."""
    return re.sub(r"(^|\W)(\w)", lambda m: m.group(1) + m.group(2).upper(), str(text))


@dataclass(frozen=True)
class QuerySample:
    """One element of a ``query`` result: ``.Labels`` (with ``__name__``) and ``.Value``."""

    labels: Mapping[str, str]
    value: float


QueryFunc = Callable[[str], Sequence[QuerySample]]
"""Runs a PromQL instant query at the evaluation time (``query`` in templates)."""


def _regexp(pattern: Any) -> Any:
    options = re2.Options()
    options.log_errors = False
    try:
        return re2.compile(str(pattern), options)
    except (re2.error, TypeError, ValueError) as exc:
        reason = exc.args[0] if exc.args else exc
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise TemplateError(f"invalid regex {pattern!r}: {reason}") from None


_EXPAND = re.compile(r"\$(?:\{(\w+)\}|(\w+)|(\$))")


def re_replace_all(pattern: Any, replacement: Any, text: Any) -> str:
    """Go's ``Regexp.ReplaceAllString``: ``$1``, ``${1}``, ``${name}`` and ``$$`` expand."""
    regex = _regexp(pattern)
    source, template = str(text), str(replacement)

    def expand(match: Any) -> str:
        def group(ref: re.Match[str]) -> str:
            if ref.group(3):
                return "$"
            name = ref.group(1) or ref.group(2)
            try:
                found = match.group(int(name) if name.isdigit() else name)
            except (IndexError, KeyError, re2.error):
                return ""
            return found or ""

        return _EXPAND.sub(group, template)

    out: list[str] = []
    pos = 0
    last_empty_end = -1
    for match in regex.finditer(source):
        if match.start() == match.end() == last_empty_end:
            continue
        out.append(source[pos : match.start()])
        out.append(expand(match))
        pos = match.end()
        last_empty_end = match.end() if match.start() == match.end() else -1
    out.append(source[pos:])
    return "".join(out)


def _match(pattern: Any, text: Any) -> bool:
    return _regexp(pattern).search(str(text)) is not None


def _split_host_port(text: str) -> tuple[str, str] | None:
    if text.startswith("["):
        end = text.find("]")
        if end < 0 or not text[end + 1 :].startswith(":"):
            return None
        return text[1:end], text[end + 2 :]
    if text.count(":") != 1:
        return None
    host, port = text.split(":")
    return host, port


def strip_port(host_port: Any) -> str:
    """The host of ``host:port`` (``[::1]:9090`` → ``::1``); other text unchanged."""
    parts = _split_host_port(str(host_port))
    return str(host_port) if parts is None else parts[0]


def strip_domain(host_port: Any) -> str:
    """``node.example.com:9100`` → ``node:9100``; IP addresses unchanged."""
    text = str(host_port)
    parts = _split_host_port(text)
    host, port = (text, None) if parts is None else parts
    if re.fullmatch(r"[\d.]+|.*:.*", host):
        return text
    short = host.split(".", 1)[0]
    return short if port is None else f"{short}:{port}"


def parse_duration(text: Any) -> float:
    """A Prometheus duration (``1h30m``) in seconds."""
    from alerting.rules import parse_duration as parse

    try:
        return parse(str(text))
    except ValueError as exc:
        raise TemplateError(str(exc)) from None


def _first(values: Any) -> Any:
    if not isinstance(values, (list, tuple)) or not values:
        raise TemplateError("first() called on vector with no elements")
    return values[0]


def _sample(value: Any, what: str) -> QuerySample:
    if not isinstance(value, QuerySample):
        raise TemplateError(f"{what}() needs a sample from query, got {show(value)}")
    return value


def _sort_by_label(label: Any, values: Any) -> list[Any]:
    if not isinstance(values, (list, tuple)):
        raise TemplateError("sortByLabel() needs a query result")
    return sorted(values, key=lambda s: _sample(s, "sortByLabel").labels.get(str(label), ""))


def _go_html(text: Any) -> str:
    escapes = {"<": "&lt;", ">": "&gt;", "&": "&amp;", "'": "&#39;", '"': "&#34;", "\0": "\ufffd"}
    return "".join(escapes.get(c, c) for c in show(text))


def _sprint(*args: Any) -> str:
    out: list[str] = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(show(arg))
    return "".join(out)


def _comparable(a: Any, b: Any) -> tuple[Any, Any]:
    numbers = (int, float)
    if isinstance(a, bool) != isinstance(b, bool) or (
        isinstance(a, numbers) != isinstance(b, numbers)
    ):
        raise TemplateError(f"incompatible types for comparison: {show(a)} and {show(b)}")
    if not isinstance(a, (str, int, float, bool)) or not isinstance(b, (str, int, float, bool)):
        raise TemplateError("invalid type for comparison")
    return a, b


def _eq(a: Any, *others: Any) -> bool:
    if not others:
        raise TemplateError("missing argument for comparison")
    return any(x == y for x, y in (_comparable(a, b) for b in others))


def _lt(a: Any, b: Any) -> bool:
    x, y = _comparable(a, b)
    return bool(x < y)


def _index(item: Any, *keys: Any) -> Any:
    for key in keys:
        if isinstance(item, Mapping):
            item = item.get(key, "")
        elif isinstance(item, (list, tuple, str)) and isinstance(key, int):
            if not 0 <= key < len(item):
                raise TemplateError(f"index out of range: {key}")
            item = item[key]
        else:
            raise TemplateError(f"can't index item of type {type(item).__name__}")
    return item


def _len(item: Any) -> int:
    if isinstance(item, (str, list, tuple, Mapping)):
        return len(item)
    raise TemplateError(f"len of type {type(item).__name__}")


def _and(*args: Any) -> Any:
    for arg in args:
        if not _truth(arg):
            return arg
    return args[-1]


def _or(*args: Any) -> Any:
    for arg in args:
        if _truth(arg):
            return arg
    return args[-1]


FUNCTIONS: dict[str, Callable[..., Any]] = {
    # Go's text/template built-ins
    "and": _and,
    "or": _or,
    "not": lambda x: not _truth(x),
    "len": _len,
    "index": _index,
    "print": _sprint,
    "println": lambda *a: " ".join(show(x) for x in a) + "\n",
    "printf": printf,
    "eq": _eq,
    "ne": lambda a, b: not _eq(a, b),
    "lt": _lt,
    "le": lambda a, b: _lt(a, b) or _eq(a, b),
    "gt": lambda a, b: not (_lt(a, b) or _eq(a, b)),
    "ge": lambda a, b: not _lt(a, b),
    "html": _go_html,
    "urlquery": lambda *a: urllib.parse.quote_plus(_sprint(*a)),
    # Prometheus' functions
    "first": _first,
    "label": lambda name, s: _sample(s, "label").labels.get(str(name), ""),
    "value": lambda s: _sample(s, "value").value,
    "strvalue": lambda s: _sample(s, "strvalue").labels.get("__value__", ""),
    "sortByLabel": _sort_by_label,
    "args": lambda *a: {f"arg{i}": v for i, v in enumerate(a)},
    "safeHtml": lambda s: str(s),
    "match": _match,
    "reReplaceAll": re_replace_all,
    "title": _go_title,
    "toUpper": lambda s: str(s).upper(),
    "toLower": lambda s: str(s).lower(),
    "humanize": humanize,
    "humanize1024": humanize1024,
    "humanizeDuration": humanize_duration,
    "humanizePercentage": humanize_percentage,
    "humanizeTimestamp": humanize_timestamp,
    "toTime": to_time,
    "parseDuration": parse_duration,
    "stripPort": strip_port,
    "stripDomain": strip_domain,
    "graphLink": lambda e: f"/graph?g0.expr={urllib.parse.quote_plus(str(e))}&g0.tab=0",
    "tableLink": lambda e: f"/graph?g0.expr={urllib.parse.quote_plus(str(e))}&g0.tab=1",
}
CONTEXT_FUNCTIONS = ("query", "externalURL", "pathPrefix")
"""Functions that need the rule's context; bound per expansion."""
_KNOWN = frozenset(FUNCTIONS) | frozenset(CONTEXT_FUNCTIONS)
_PREDEFINED = ("$", "$labels", "$externalLabels", "$externalURL", "$value")


# --- lexing ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tok:
    kind: str  # str num bool nil var field ident | ( ) , := =
    value: Any
    spaced: bool  # white space before it (a field right after ")" chains onto it)


_TOKEN = re.compile(
    r"""(?P<str>"(?:[^"\\\n]|\\.)*")|(?P<raw>`[^`]*`)|(?P<char>'(?:[^'\\\n]|\\.)+')
    |(?P<op>:=|[|(),=])
    |(?P<num>[+-]?(?:0[xX][0-9a-fA-F]+|\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)(?![\w.]))
    |(?P<var>\$\w*(?:\.\w+)*)|(?P<field>(?:\.\w+)+|\.)|(?P<ident>[A-Za-z_]\w*(?:\.\w+)*)""",
    re.X,
)
_ESCAPE = re.compile(
    r"\\(?:([abfnrtv\\\"'])|x([0-9A-Fa-f]{2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8}))"
)
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _unquote(text: str) -> str:
    """A Go double-quoted string's content with its escapes (``\\n``, ``\\x41``, ``\\u00e9``)."""
    out: list[str] = []
    pos = 0
    for match in [*_ESCAPE.finditer(text), None]:
        gap = text[pos : match.start() if match is not None else len(text)]
        if "\\" in gap:
            bad = gap[gap.index("\\") :][:2]
            raise TemplateError(
                f'unknown escape {bad!r} in a string; use \\n, \\t, \\\\, \\", \\xHH or \\uHHHH'
            )
        out.append(gap)
        if match is None:
            break
        simple, hex2, hex4, hex8 = match.groups()
        if simple is not None:
            out.append(_SIMPLE_ESCAPES.get(simple, simple))
        else:
            code = int(hex2 or hex4 or hex8, 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise TemplateError(f"{match.group(0)} is not a character")
            out.append(chr(code))
        pos = match.end()
    return "".join(out)


def _number_token(text: str) -> int | float:
    try:
        return int(text, 0)
    except ValueError:
        return float(text)


def _lex(template: str) -> list[tuple[str, Any, int]]:
    """Text and actions in order, each with the line it starts on: ``("text", str, line)``
    or ``("action", [_Tok], line)``."""
    items: list[tuple[str, Any, int]] = []
    pos = 0
    line = 1
    trim_next = False
    while True:
        start = template.find("{{", pos)
        text = template[pos : start if start >= 0 else len(template)]
        text_line = line
        line += text.count("\n")
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if start < 0:
            items.append(("text", text, text_line))
            return items
        i = start + 2
        if template[i : i + 1] == "-" and template[i + 1 : i + 2] in (" ", "\t", "\r", "\n"):
            text = text.rstrip(" \t\r\n")
            i += 2
        items.append(("text", text, text_line))
        try:
            toks, pos, trim_next = _lex_action(template, i)
        except TemplateError as exc:
            raise TemplateError(exc.reason, line=line) from None
        if toks is not None:
            items.append(("action", toks, line))
        line += template.count("\n", start, pos)


def _lex_action(template: str, pos: int) -> tuple[list[_Tok] | None, int, bool]:
    """The tokens of one action from ``pos``; the position after ``}}``; right trim."""
    rest = template[pos:].lstrip(" \t\r\n")
    if rest.startswith("/*"):
        end = template.find("*/", pos)
        if end < 0:
            raise TemplateError("unclosed comment")
        close = re.compile(r"\*/(\s+-)?\}\}").match(template, end)
        if close is None:
            raise TemplateError("comment ends before closing delimiter")
        return None, close.end(), bool(close.group(1))
    toks: list[_Tok] = []
    while True:
        stripped = len(template) - pos - len(template[pos:].lstrip(" \t\r\n"))
        spaced = stripped > 0
        pos += stripped
        if pos >= len(template):
            raise TemplateError("unclosed action: '{{' without '}}'")
        if template.startswith("}}", pos):
            return toks, pos + 2, False
        if spaced and template.startswith("-}}", pos):
            return toks, pos + 3, True
        match = _TOKEN.match(template, pos)
        if match is None:
            raise TemplateError(f"unexpected {template[pos : pos + 10]!r} in action")
        pos = match.end()
        kind = match.lastgroup or ""
        text = match.group(0)
        if kind == "str":
            toks.append(_Tok("str", _unquote(text[1:-1]), spaced))
        elif kind == "raw":
            toks.append(_Tok("str", text[1:-1], spaced))
        elif kind == "char":
            char = _unquote(text[1:-1].replace('"', '\\"'))
            if len(char) != 1:
                raise TemplateError(f"bad character constant {text}")
            toks.append(_Tok("num", ord(char), spaced))
        elif kind == "op":
            toks.append(_Tok(text, text, spaced))
        elif kind == "num":
            toks.append(_Tok("num", _number_token(text), spaced))
        elif kind == "ident" and text in ("true", "false"):
            toks.append(_Tok("bool", text == "true", spaced))
        elif kind == "ident" and text == "nil":
            toks.append(_Tok("nil", None, spaced))
        elif kind == "ident" and "." in text:
            raise TemplateError(f"unexpected {text!r}: a function has no fields")
        else:
            toks.append(_Tok(kind, text, spaced))


# --- parsing -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Operand:
    kind: str  # lit field var func pipe
    value: Any
    fields: tuple[str, ...] = ()


@dataclass(frozen=True)
class _Pipe:
    decl: tuple[str, ...]
    assign: bool  # "=" rather than ":="
    commands: tuple[tuple[_Operand, ...], ...]


@dataclass(frozen=True)
class _Node:
    kind: str  # text action if with range template
    text: str = ""
    pipe: _Pipe | None = None
    body: tuple[_Node, ...] = ()
    orelse: tuple[_Node, ...] = ()


@dataclass
class _Parsed:
    root: tuple[_Node, ...]
    defines: dict[str, tuple[_Node, ...]] = field(default_factory=dict)


class _Parser:
    def __init__(
        self,
        items: list[tuple[str, Any, int]],
        known: frozenset[str],
        predefined: Sequence[str],
        methods: bool = False,
    ) -> None:
        self.items = items
        self.known = known
        self.methods = methods
        self.pos = 0
        self.line = 1
        self.scopes: list[list[str]] = [list(predefined)]
        self.defines: dict[str, tuple[_Node, ...]] = {}

    def parse(self) -> _Parsed:
        nodes, end = self.list_until()
        if end is not None:
            raise TemplateError(f"unexpected {{{{{end[0].value}}}}}")
        return _Parsed(nodes, self.defines)

    def list_until(self) -> tuple[tuple[_Node, ...], list[_Tok] | None]:
        """Nodes up to an ``else`` or ``end`` action (returned) or the end of the text."""
        nodes: list[_Node] = []
        while self.pos < len(self.items):
            kind, payload, self.line = self.items[self.pos]
            self.pos += 1
            if kind == "text":
                if payload:
                    nodes.append(_Node("text", payload))
                continue
            toks: list[_Tok] = payload
            if not toks:
                raise TemplateError("missing value for command")
            head = toks[0]
            if head.kind == "ident" and head.value in ("else", "end"):
                return tuple(nodes), toks
            if head.kind == "ident" and head.value in ("if", "with", "range"):
                nodes.append(self.control(head.value, toks[1:]))
            elif head.kind == "ident" and head.value == "define":
                self.define(toks[1:])
            elif head.kind == "ident" and head.value == "template":
                nodes.append(self.template(toks[1:]))
            elif head.kind == "ident" and head.value in ("block", "break", "continue"):
                raise TemplateError(f"{{{{{head.value}}}}} is not supported in alert templates")
            else:
                nodes.append(_Node("action", pipe=self.pipeline(toks, decl_ok=True)))
        return tuple(nodes), None

    def control(self, keyword: str, toks: list[_Tok]) -> _Node:
        self.scopes.append([])
        try:
            pipe = self.pipeline(toks, decl_ok=True, two_vars=keyword == "range")
            body, end = self.list_until()
            orelse: tuple[_Node, ...] = ()
            if end is None:
                raise TemplateError(f"unexpected EOF: {{{{{keyword}}}}} without {{{{end}}}}")
            if end[0].value == "else":
                if len(end) > 1 and end[1].kind == "ident" and end[1].value in ("if", "with"):
                    orelse = (self.control(end[1].value, end[2:]),)
                    return _Node(keyword, pipe=pipe, body=body, orelse=orelse)
                if len(end) > 1:
                    raise TemplateError("unexpected words after {{else}}")
                orelse, end = self.list_until()
                if end is None or end[0].value != "end":
                    raise TemplateError(f"{{{{{keyword}}}}} ... {{{{else}}}} without {{{{end}}}}")
            if len(end) > 1:
                raise TemplateError("unexpected words after {{end}}")
            return _Node(keyword, pipe=pipe, body=body, orelse=orelse)
        finally:
            self.scopes.pop()

    def define(self, toks: list[_Tok]) -> None:
        if len(toks) != 1 or toks[0].kind != "str":
            raise TemplateError('{{define}} needs a quoted name: {{define "name"}}')
        saved, self.scopes = self.scopes, [["$"]]
        try:
            body, end = self.list_until()
        finally:
            self.scopes = saved
        if end is None or end[0].value != "end":
            raise TemplateError("{{define}} without {{end}}")
        self.defines[toks[0].value] = body

    def template(self, toks: list[_Tok]) -> _Node:
        if not toks or toks[0].kind != "str":
            raise TemplateError('{{template}} needs a quoted name: {{template "name" .}}')
        pipe = self.pipeline(toks[1:], decl_ok=False) if len(toks) > 1 else None
        return _Node("template", text=toks[0].value, pipe=pipe)

    def pipeline(self, toks: list[_Tok], *, decl_ok: bool, two_vars: bool = False) -> _Pipe:
        decl: list[str] = []
        assign = False
        i = 0
        if decl_ok and len(toks) > 1 and toks[0].kind == "var" and "." not in toks[0].value:
            if toks[1].kind in (":=", "="):
                decl, assign, i = [toks[0].value], toks[1].kind == "=", 2
            elif (
                two_vars
                and len(toks) > 3
                and toks[1].kind == ","
                and toks[2].kind == "var"
                and toks[3].kind == ":="
            ):
                decl, i = [toks[0].value, toks[2].value], 4
        pipe, i = self.commands(toks, i, decl, assign)
        if i != len(toks):
            raise TemplateError(f"unexpected {toks[i].value!r} in command")
        return pipe

    def commands(
        self, toks: list[_Tok], i: int, decl: list[str], assign: bool
    ) -> tuple[_Pipe, int]:
        if assign:
            self.lookup(decl[0])
        commands: list[tuple[_Operand, ...]] = []
        while True:
            command: list[_Operand] = []
            while i < len(toks) and toks[i].kind not in ("|", ")"):
                operand, i = self.operand(toks, i)
                command.append(operand)
            if not command:
                raise TemplateError("missing value for command")
            method = (  # ``.KV.Remove .X``, ``(index .Alerts 0).StartsAt.Format "15:04"``
                self.methods
                and command[0].kind in ("field", "var", "pipe")
                and bool(command[0].fields)
            )
            if len(command) > 1 and command[0].kind != "func" and not method:
                what = "(pipeline)" if command[0].kind == "pipe" else repr(command[0].value)
                raise TemplateError(f"can't give argument to non-function {what}")
            if commands and command[0].kind != "func" and not method:
                raise TemplateError(f"non-function {command[0].value!r} in a pipeline")
            commands.append(tuple(command))
            if i < len(toks) and toks[i].kind == "|":
                i += 1
                continue
            break
        if not assign:
            self.scopes[-1].extend(decl)
        return _Pipe(tuple(decl), assign, tuple(commands)), i

    def lookup(self, name: str) -> None:
        if not any(name in scope for scope in self.scopes):
            raise TemplateError(f"undefined variable {name!r}")

    def operand(self, toks: list[_Tok], i: int) -> tuple[_Operand, int]:
        tok = toks[i]
        i += 1
        if tok.kind in ("str", "num", "bool", "nil"):
            operand = _Operand("lit", tok.value)
        elif tok.kind == "field":
            operand = _Operand("field", tok.value, tuple(f for f in tok.value.split(".") if f))
        elif tok.kind == "var":
            name, *fields = tok.value.split(".")
            self.lookup(name)
            operand = _Operand("var", name, tuple(fields))
        elif tok.kind == "ident":
            if tok.value not in self.known:
                raise TemplateError(
                    f"function {tok.value!r} not defined; known: {', '.join(sorted(self.known))}"
                )
            operand = _Operand("func", tok.value)
        elif tok.kind == "(":
            pipe, i = self.commands(toks, i, [], False)
            if i >= len(toks) or toks[i].kind != ")":
                raise TemplateError("unclosed left paren")
            i += 1
            operand = _Operand("pipe", pipe)
        else:
            raise TemplateError(f"unexpected {tok.value!r} in operand")
        if i < len(toks) and toks[i].kind == "field" and not toks[i].spaced:
            if operand.kind in ("lit", "func"):
                raise TemplateError(f"unexpected {toks[i].value!r} after {tok.value!r}")
            extra = tuple(f for f in toks[i].value.split(".") if f)
            operand = _Operand(operand.kind, operand.value, operand.fields + extra)
            i += 1
        return operand, i


def _parse(
    template: str,
    known: frozenset[str] | None = None,
    predefined: Sequence[str] = (),
    methods: bool = False,
) -> _Parsed:
    """``template`` parsed; a ``TemplateError`` carries the line where parsing stopped.
    ``methods`` lets a field take arguments (a method call on the data)."""
    known = _KNOWN if known is None else known
    parser = _Parser(_lex(template), known, predefined or _PREDEFINED, methods)
    try:
        return parser.parse()
    except RecursionError:
        raise TemplateError("template nested too deeply", line=parser.line) from None
    except TemplateError as exc:
        if exc.line is not None:
            raise
        raise TemplateError(exc.reason, line=parser.line) from None


# --- running -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Data:
    """The template's dot: Prometheus' ``tmplData``."""

    Labels: Mapping[str, str]
    ExternalLabels: Mapping[str, str]
    ExternalURL: str
    Value: float


_MISSING = object()


class _Run:
    """One expansion: walks the parsed nodes, writing text and printed values to ``out``.
    A subclass may escape what it writes (``emit_text``, ``emit_value``), as Go's
    html/template does."""

    def __init__(
        self,
        parsed: _Parsed,
        funcs: Mapping[str, Callable[..., Any]],
        max_output: int = MAX_OUTPUT,
    ) -> None:
        self.parsed = parsed
        self.funcs = funcs
        self.max_output = max_output
        self.out: list[str] = []
        self.size = 0
        self.steps = 0
        self.depth = 0

    def emit(self, text: str) -> None:
        self.size += len(text)
        if self.size > self.max_output:
            raise TemplateError(f"output longer than {self.max_output:,} characters")
        self.out.append(text)

    def emit_text(self, text: str) -> None:
        """The template's own text."""
        self.emit(text)

    def emit_value(self, node: _Node, dot: Any, scope: list[tuple[str, Any]]) -> None:
        """The value an action prints."""
        assert node.pipe is not None
        self.emit(show(self.pipe(node.pipe, dot, scope)))

    def step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            raise TemplateError(f"more than {MAX_STEPS:,} steps")

    def walk(self, nodes: Sequence[_Node], dot: Any, scope: list[tuple[str, Any]]) -> None:
        mark = len(scope)
        for node in nodes:
            self.step()
            if node.kind == "text":
                self.emit_text(node.text)
            elif node.kind == "action":
                assert node.pipe is not None
                if node.pipe.decl:
                    self.pipe(node.pipe, dot, scope)
                else:
                    self.emit_value(node, dot, scope)
            elif node.kind in ("if", "with"):
                self.branch(node, dot, scope)
            elif node.kind == "range":
                self.range(node, dot, scope)
            else:
                arg = None if node.pipe is None else self.pipe(node.pipe, dot, scope)
                self.call_template(node.text, arg)
        del scope[mark:]

    def branch(self, node: _Node, dot: Any, scope: list[tuple[str, Any]]) -> None:
        assert node.pipe is not None
        inner = list(scope)
        value = self.pipe(node.pipe, dot, inner)
        if _truth(value):
            self.walk(node.body, value if node.kind == "with" else dot, inner)
        else:
            self.walk(node.orelse, dot, inner)

    def range(self, node: _Node, dot: Any, scope: list[tuple[str, Any]]) -> None:
        assert node.pipe is not None
        decl = node.pipe.decl
        plain = _Pipe((), False, node.pipe.commands)
        value = self.pipe(plain, dot, scope)
        if isinstance(value, Mapping):
            pairs: list[tuple[Any, Any]] = [(k, value[k]) for k in sorted(value)]
        elif isinstance(value, (list, tuple)):
            pairs = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            pairs = [(i, i) for i in range(max(value, 0))]
        elif value is None:
            pairs = []
        else:
            raise TemplateError(f"range can't iterate over {show(value)}")
        if not pairs:
            self.walk(node.orelse, dot, list(scope))
            return
        for key, item in pairs:
            self.step()
            inner = list(scope)
            if len(decl) == 1:
                inner.append((decl[0], item))
            elif len(decl) == 2:
                inner += [(decl[0], key), (decl[1], item)]
            self.walk(node.body, item, inner)

    def call_template(self, name: str, dot: Any) -> str:
        body = self.parsed.defines.get(name)
        if body is None:
            raise TemplateError(f'no such template "{name}"')
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise TemplateError(f"templates nested more than {MAX_DEPTH} deep")
        start = len(self.out)
        try:
            self.walk(body, dot, [("$", dot)])
        finally:
            self.depth -= 1
        return "".join(self.out[start:])

    def pipe(self, pipe: _Pipe, dot: Any, scope: list[tuple[str, Any]]) -> Any:
        value: Any = _MISSING
        for command in pipe.commands:
            value = self.command(command, dot, scope, value)
        if pipe.assign:
            for i in range(len(scope) - 1, -1, -1):
                if scope[i][0] == pipe.decl[0]:
                    scope[i] = (pipe.decl[0], value)
                    break
        elif pipe.decl:
            scope.append((pipe.decl[0], value))
        return value

    def command(
        self, command: tuple[_Operand, ...], dot: Any, scope: list[tuple[str, Any]], final: Any
    ) -> Any:
        head, *rest = command
        if head.kind != "func" and not rest and final is _MISSING:
            return self.operand(head, dot, scope)
        args = [self.operand(a, dot, scope) for a in rest]
        if final is not _MISSING:
            args.append(final)
        if head.kind == "func":
            return self.call(head.value, args)
        # ``.KV.Remove .Names``: the last field is a method, called with the arguments
        receiver = self.operand(_Operand(head.kind, head.value, head.fields[:-1]), dot, scope)
        name = head.fields[-1]
        method = _method(receiver, name)
        if method is None:
            raise TemplateError(f"{name} is not a method but has arguments")
        return self.invoke(name, method, args)

    def call(self, name: str, args: list[Any]) -> Any:
        func = self.funcs.get(name)
        if func is None:
            raise TemplateError(f"function {name!r} is not available here")
        return self.invoke(name, func, args)

    def invoke(self, name: str, func: Callable[..., Any], args: list[Any]) -> Any:
        try:
            return func(*args)
        except TemplateError as exc:
            raise TemplateError(f"error calling {name}: {exc}") from None
        except (TypeError, ValueError, OverflowError, OSError, IndexError) as exc:
            raise TemplateError(f"error calling {name}: {exc}") from None

    def operand(self, op: _Operand, dot: Any, scope: list[tuple[str, Any]]) -> Any:
        if op.kind == "lit":
            return op.value
        if op.kind == "func":
            return self.call(op.value, [])
        if op.kind == "field":
            value = dot
        elif op.kind == "var":
            value = next((v for k, v in reversed(scope) if k == op.value), None)
        else:
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise TemplateError(f"parentheses nested more than {MAX_DEPTH} deep")
            try:
                value = self.pipe(op.value, dot, list(scope))
            finally:
                self.depth -= 1
        for name in op.fields:
            value = _field(value, name)
        return value


def _method(value: Any, name: str) -> Callable[..., Any] | None:
    """A Go method of ``value`` (a value with ``go_method``, e.g. Alertmanager's ``KV``)."""
    finder = getattr(value, "go_method", None)
    return finder(name) if callable(finder) else None


def _field(value: Any, name: str) -> Any:
    method = _method(value, name)
    if method is not None:  # as in Go, a method wins over a map key of the same name
        try:
            return method()
        except TypeError as exc:
            raise TemplateError(f"calling {name}: {exc}") from None
    if isinstance(value, Mapping):
        return value.get(name, "")
    if isinstance(value, _Data) and name in _Data.__dataclass_fields__:
        return getattr(value, name)
    if isinstance(value, QuerySample) and name in ("Labels", "Value"):
        return value.labels if name == "Labels" else value.value
    raise TemplateError(f"can't evaluate field {name} in {show(value)}")


def check_template(template: str) -> None:
    """Raise ``TemplateError`` when ``template`` does not parse."""
    _parse(template)


RunFactory = Callable[[_Parsed, Mapping[str, Callable[..., Any]], int], _Run]
"""Makes the run of one expansion: ``_Run`` (text/template) or an escaping subclass."""


class TemplateSet:
    """Named templates (``{{define "name"}}``) gathered from several texts, and the functions
    they may call: Go's ``template.Template`` as Alertmanager uses it. ``execute`` parses a
    text against the set and runs it, as ``Clone().New("").Parse(text).Execute`` does.

    >>> ts = TemplateSet({"print": FUNCTIONS["print"]})
    >>> ts.add('{{ define "hi" }}hello {{ . }}{{ end }}')
    >>> ts.execute('{{ template "hi" "you" }}!', None)
    'hello you!'
    """

    def __init__(self, funcs: Mapping[str, Callable[..., Any]]) -> None:
        self.funcs = dict(funcs)
        self.known = frozenset(funcs)
        self.defines: dict[str, tuple[_Node, ...]] = {}

    def add(self, text: str) -> None:
        """Parse ``text`` and keep its ``define``s (a later one replaces an earlier one of
        the same name, as in Go); raises ``TemplateError`` with the ``line``."""
        self.defines.update(_parse(text, self.known, ("$",), methods=True).defines)

    def check(self, text: str) -> None:
        """Raise ``TemplateError`` when ``text`` does not parse."""
        _parse(text, self.known, ("$",), methods=True)

    def execute(
        self,
        text: str,
        data: Any,
        *,
        run: RunFactory | None = None,
        max_output: int = MAX_OUTPUT,
    ) -> str:
        """``text`` expanded with ``data`` as dot; raises ``TemplateError``."""
        parsed = _parse(text, self.known, ("$",), methods=True)
        whole = _Parsed(parsed.root, {**self.defines, **parsed.defines})
        runner = (run or _Run)(whole, self.funcs, max_output)
        try:
            runner.walk(whole.root, data, [("$", data)])
        except RecursionError:
            raise TemplateError("nested too deeply") from None
        return "".join(runner.out)


@dataclass(frozen=True)
class TemplateContext:
    """What a rule's templates see besides the alert: ``$externalLabels``,
    ``$externalURL`` (and ``externalURL``, ``pathPrefix``), and ``query``."""

    external_labels: Mapping[str, str] = field(default_factory=dict)
    external_url: str = ""
    query: QueryFunc | None = None


def render(
    template: str,
    labels: Mapping[str, str],
    value: float,
    context: TemplateContext | None = None,
) -> str:
    """Expand ``template``; an error is shown in the text, as Prometheus does."""
    context = context or TemplateContext()
    external_labels, external_url, query = (
        context.external_labels,
        context.external_url,
        context.query,
    )
    if "{{" not in template:
        return template
    try:
        parsed = _parse(template)
        data = _Data(dict(labels), dict(external_labels or {}), external_url, value)
        run = _Run(parsed, {})

        def run_query(expr: Any) -> list[QuerySample]:
            if query is None:
                raise TemplateError("no query engine here")
            try:
                return list(query(str(expr)))
            except TemplateError:
                raise
            except Exception as exc:  # a query error is the template's error, as in Prometheus
                raise TemplateError(str(exc)) from None

        run.funcs = {
            **FUNCTIONS,
            "query": run_query,
            "externalURL": lambda: external_url,
            "pathPrefix": lambda: urllib.parse.urlsplit(external_url).path,
        }
        scope: list[tuple[str, Any]] = [
            ("$", data),
            ("$labels", data.Labels),
            ("$externalLabels", data.ExternalLabels),
            ("$externalURL", external_url),
            ("$value", value),
        ]
        run.walk(parsed.root, data, scope)
        return "".join(run.out)
    except TemplateError as exc:
        return f"<error expanding template: {exc}>"
    except RecursionError:
        return "<error expanding template: nested too deeply>"
