"""Annotation templates: the part of Prometheus' Go templates that alert rules use.

Supported inside ``{{ ... }}``: ``$value``, ``$labels``, ``$labels.name``
(and the older ``.Value`` / ``.Labels.name``), string and number literals,
pipelines ``x | f`` and calls ``f x``, with the functions in ``FUNCTIONS``
(``humanize``, ``humanizePercentage``, ``humanizeDuration``, ``printf``, ...).
``{{-`` and ``-}}`` trim white space as in Go. Nothing is executed: a template
is parsed into words and only these names are looked up.

>>> render("{{ $labels.job }} at {{ $value | humanizePercentage }}", {"job": "shop"}, 0.0712)
'shop at 7.12%'
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from vigil.errors import VigilError


class TemplateError(VigilError):
    """A template uses syntax or a function Vigil does not support."""


_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.S)
_SI_BIG = ("", "k", "M", "G", "T", "P", "E", "Z", "Y")
_SI_SMALL = ("", "m", "u", "n", "p", "f", "a", "z", "y")


def go_float(value: float) -> str:
    """A float as Go's ``%v`` prints it: ``1`` not ``1.0``, ``0.25``, ``1e+21``."""
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


def humanize(value: Any) -> str:
    """SI prefixes, four significant digits: ``1234567`` → ``1.235M``."""
    v = _number(value)
    if v == 0 or math.isnan(v) or math.isinf(v):
        return _g4(v)
    if abs(v) >= 1:
        i = 0
        while abs(v) >= 1000 and i < len(_SI_BIG) - 1:
            v /= 1000
            i += 1
        return _g4(v) + _SI_BIG[i]
    i = 0
    while abs(v) < 1 and i < len(_SI_SMALL) - 1:
        v *= 1000
        i += 1
    return _g4(v) + _SI_SMALL[i]


def humanize1024(value: Any) -> str:
    """Binary prefixes: ``2048`` → ``2ki``."""
    v = _number(value)
    if abs(v) <= 1:
        return _g4(v)
    prefixes = ("", "ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi")
    i = 0
    while abs(v) >= 1024 and i < len(prefixes) - 1:
        v /= 1024
        i += 1
    return _g4(v) + prefixes[i]


def humanize_percentage(value: Any) -> str:
    """A ratio as a percentage: ``0.0712`` → ``7.12%``."""
    return _g4(_number(value) * 100) + "%"


def humanize_duration(value: Any) -> str:
    """Seconds as ``1d 2h 3m 4s`` (or ``250ms`` below a second)."""
    v = _number(value)
    if math.isnan(v) or math.isinf(v):
        return _g4(v)
    sign = "-" if v < 0 else ""
    v = abs(v)
    if v == 0:
        return "0s"
    if v < 1:
        for unit, scale in (("ms", 1e3), ("us", 1e6), ("ns", 1e9)):
            if v * scale >= 1 or unit == "ns":
                return f"{sign}{_g4(v * scale)}{unit}"
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


def humanize_timestamp(value: Any) -> str:
    """Seconds since the epoch as a UTC time."""
    moment = dt.datetime.fromtimestamp(_number(value), tz=dt.UTC)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f +0000 UTC")


def printf(fmt: Any, *args: Any) -> str:
    """Go's ``printf`` for the verbs alerts use (``%s %d %f %.2f %g %v %%``)."""
    py_fmt = str(fmt).replace("%v", "%s")
    converted = tuple(int(a) if isinstance(a, float) and "%d" in py_fmt else a for a in args)
    try:
        return py_fmt % converted
    except (TypeError, ValueError) as exc:
        raise TemplateError(f"printf {fmt!r}: {exc}") from None


FUNCTIONS: dict[str, Callable[..., str]] = {
    "humanize": humanize,
    "humanize1024": humanize1024,
    "humanizePercentage": humanize_percentage,
    "humanizeDuration": humanize_duration,
    "humanizeTimestamp": humanize_timestamp,
    "printf": printf,
    "toUpper": lambda s: str(s).upper(),
    "toLower": lambda s: str(s).lower(),
    "title": lambda s: str(s).title(),
}


@dataclass(frozen=True)
class _Word:
    kind: str  # "value" | "labels" | "label" | "literal" | "func"
    text: str
    literal: Any = None


def _word(token: str, quoted: bool) -> _Word:
    if quoted:
        return _Word("literal", token, token)
    if token in ("$value", ".Value"):
        return _Word("value", token)
    if token in ("$labels", ".Labels"):
        return _Word("labels", token)
    for prefix in ("$labels.", ".Labels."):
        if token.startswith(prefix) and re.fullmatch(r"[A-Za-z_]\w*", token[len(prefix) :]):
            return _Word("label", token[len(prefix) :])
    if token in FUNCTIONS:
        return _Word("func", token)
    try:
        return _Word("literal", token, float(token))
    except ValueError:
        pass
    known = ", ".join(sorted(FUNCTIONS))
    raise TemplateError(
        f"unsupported template word {token!r}; use $value, $labels.NAME, literals "
        f"or one of the functions: {known}"
    )


_TOKEN = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|`([^`]*)`|(\|)|([^\s|"`]+))')


_ESCAPE = re.compile(
    r"\\(?:([abfnrtv\\\"'])|x([0-9A-Fa-f]{2})|u([0-9A-Fa-f]{4})|U([0-9A-Fa-f]{8}))"
)
_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}


def _unquote(text: str, action: str) -> str:
    """A Go double-quoted string's content with its escapes (``\\n``, ``\\x41``, ``\\u00e9``)."""
    out: list[str] = []
    pos = 0
    for match in [*_ESCAPE.finditer(text), None]:
        gap = text[pos : match.start() if match is not None else len(text)]
        if "\\" in gap:
            bad = gap[gap.index("\\") :][:2]
            raise TemplateError(
                f"{{{{ {action} }}}}: unknown escape {bad!r} in a string; "
                'use \\n, \\t, \\\\, \\", \\xHH or \\uHHHH'
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
                raise TemplateError(f"{{{{ {action} }}}}: {match.group(0)} is not a character")
            out.append(chr(code))
        pos = match.end()
    return "".join(out)


def _parse(action: str) -> list[list[_Word]]:
    commands: list[list[_Word]] = [[]]
    pos = 0
    while pos < len(action.rstrip()):
        match = _TOKEN.match(action, pos)
        if match is None or match.end() == pos:
            raise TemplateError(f"{{{{ {action} }}}}: cannot read from {action[pos:]!r}")
        pos = match.end()
        dq, bq, pipe, bare = match.groups()
        if pipe:
            commands.append([])
        elif bare is not None:
            commands[-1].append(_word(bare, quoted=False))
        else:
            text = bq if bq is not None else _unquote(dq, action)
            commands[-1].append(_word(text, quoted=True))
    if any(not c for c in commands):
        raise TemplateError(f"{{{{ {action} }}}}: empty command in pipeline")
    for i, command in enumerate(commands):
        if (i > 0 or len(command) > 1) and command[0].kind != "func":
            raise TemplateError(f"{{{{ {action} }}}}: {command[0].text!r} is not a function")
    return commands


def _eval(commands: list[list[_Word]], labels: Mapping[str, str], value: float) -> Any:
    def operand(word: _Word) -> Any:
        if word.kind == "value":
            return value
        if word.kind == "labels":
            return "map[" + " ".join(f"{k}:{v}" for k, v in sorted(labels.items())) + "]"
        if word.kind == "label":
            return labels.get(word.text, "")
        if word.kind == "func":
            raise TemplateError(f"function {word.text} used as a value")
        return word.literal

    rv: Any = None
    for i, command in enumerate(commands):
        head, *rest = command
        if head.kind != "func":
            rv = operand(head)
            continue
        args = [operand(w) for w in rest]
        if i > 0:
            args.append(rv)
        try:
            rv = FUNCTIONS[head.text](*args)
        except (TypeError, ValueError, OverflowError, OSError) as exc:  # e.g. a year past 9999
            raise TemplateError(f"{head.text}: {exc}") from None
    return rv


def _show(rv: Any) -> str:
    if isinstance(rv, float):
        return go_float(rv)
    return str(rv)


def _actions(template: str) -> list[str | list[list[_Word]]]:
    """The template split into literal text and parsed actions, with trimming applied."""
    parts: list[str | list[list[_Word]]] = []
    pos = 0
    trim_next = False
    for match in _ACTION.finditer(template):
        text = template[pos : match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        parts.append(text)
        parts.append(_parse(match.group(2).strip()))
        trim_next = bool(match.group(3))
        pos = match.end()
    tail = template[pos:]
    parts.append(tail.lstrip() if trim_next else tail)
    if "{{" in "".join(p for p in parts if isinstance(p, str)):
        raise TemplateError("unclosed '{{' in template")
    return parts


def check_template(template: str) -> None:
    """Raise ``TemplateError`` when ``template`` cannot be rendered."""
    _actions(template)


def render(template: str, labels: Mapping[str, str], value: float) -> str:
    """Expand ``template``; an error is shown in the text, as Prometheus does."""
    try:
        return "".join(
            part if isinstance(part, str) else _show(_eval(part, labels, value))
            for part in _actions(template)
        )
    except TemplateError as exc:
        return f"<error expanding template: {exc}>"
