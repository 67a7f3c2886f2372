"""Alertmanager's notification templates: its data, its functions, its default templates.

Notification fields (a Slack ``title``, an e-mail ``Subject``, ``html``, …) are
Go templates run with Alertmanager's data (``template.Data``): ``.Receiver``,
``.Status``, ``.Alerts`` (with ``.Firing`` and ``.Resolved``; each alert's
``.Status .Labels .Annotations .StartsAt .EndsAt .GeneratorURL
.Fingerprint``), ``.GroupLabels``, ``.CommonLabels``, ``.CommonAnnotations``
and ``.ExternalURL``; label sets are ``KV`` with ``.SortedPairs`` (alertname
first), ``.Names``, ``.Values``, ``.Remove``. The functions are Alertmanager's
(``toUpper toLower title trimSpace join match safeHtml reReplaceAll
stringSlice date tz since humanizeDuration``, ``alerting.am.gotime``) besides Go's
built-ins. The engine is ``alerting.templates``;
e-mail HTML is escaped as Go's html/template (``alerting.templates_html``).

``NotificationTemplates.load(globs, base_dir)`` reads Alertmanager's default
templates (``default.tmpl`` beside this module) and then the configuration's
``templates`` globs; a file that does not parse is a ``ConfigError`` at
``file:line``; ``files_signature`` is what a reload compares to see that one of
those files changed (or one was added or removed). Rendering is bounded
(``MAX_FIELD_OUTPUT`` characters per field, the engine's step limit)::

    t = NotificationTemplates.load(["templates/*.tmpl"], "/etc/alertmanager")
    t.render('{{ template "slack.default.title" . }}', group_data(notification))
"""

from __future__ import annotations

import datetime as dt
import functools
import glob as globlib
import logging
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter

from alerting.am.gotime import GoTime, am_humanize_duration, date, go_time, since, tz
from alerting.notify.base import GroupNotification
from alerting.notify.webhook import generator_url
from alerting.templates import (
    FUNCTIONS,
    TemplateError,
    TemplateSet,
    _match,
    re_replace_all,
    show,
)
from alerting.templates_html import HTML, HtmlRun
from vigil.errors import ConfigError

log = logging.getLogger("vigil.alertmanager.templates")

DEFAULT_TEMPLATES = Path(__file__).with_name("default.tmpl")
MAX_TEMPLATE_FILES = 100
MAX_TEMPLATE_BYTES = 1 << 20
"""Largest template file read (Alertmanager's own default is 14 KiB)."""
MAX_FIELD_OUTPUT = 256 * 1024
"""Most characters one notification field may expand to."""

# --- the data ------------------------------------------------------------------------------


class Pair:
    """A label name and value: ``.Name``, ``.Value``."""

    __slots__ = ("name", "value")

    def __init__(self, name: str, value: str) -> None:
        self.name = name
        self.value = value

    def go_method(self, name: str) -> Callable[..., Any] | None:
        fields: dict[str, Callable[..., Any]] = {
            "Name": lambda: self.name,
            "Value": lambda: self.value,
        }
        return fields.get(name)

    def go_string(self) -> str:
        return f"{{{self.name} {self.value}}}"


class Pairs(list[Pair]):
    """``.SortedPairs``: ``.Names``, ``.Values``; prints as ``a=b, c=d``."""

    def go_method(self, name: str) -> Callable[..., Any] | None:
        return {
            "Names": lambda: [p.name for p in self],
            "Values": lambda: [p.value for p in self],
            "String": self.go_string,
        }.get(name)

    def go_string(self) -> str:
        return ", ".join(f"{p.name}={p.value}" for p in self)


class KV(dict[str, str]):
    """A label or annotation set, Alertmanager's ``template.KV``."""

    def sorted_pairs(self) -> Pairs:
        """Sorted by name, ``alertname`` first."""
        names = sorted(self)
        if "alertname" in self:
            names.remove("alertname")
            names.insert(0, "alertname")
        return Pairs(Pair(k, self[k]) for k in names)

    def remove(self, names: Any) -> KV:
        if not isinstance(names, list):
            raise TemplateError(f"Remove needs a list of names, got {show(names)}")
        drop = {str(n) for n in names}
        return KV({k: v for k, v in self.items() if k not in drop})

    def go_method(self, name: str) -> Callable[..., Any] | None:
        methods: dict[str, Callable[..., Any]] = {
            "SortedPairs": self.sorted_pairs,
            "Names": lambda: [p.name for p in self.sorted_pairs()],
            "Values": lambda: [p.value for p in self.sorted_pairs()],
            "Remove": self.remove,
            "String": self.go_string,
        }
        return methods.get(name)

    def go_string(self) -> str:
        return self.sorted_pairs().go_string()


class Alert:
    """One alert of a notification (``template.Alert``)."""

    FIELDS = ("Status", "Labels", "Annotations", "StartsAt", "EndsAt", "GeneratorURL")

    def __init__(self, **fields: Any) -> None:
        self.fields = fields

    def go_method(self, name: str) -> Callable[..., Any] | None:
        if name in self.fields:
            return lambda: self.fields[name]
        return None

    def go_string(self) -> str:
        order = (*self.FIELDS, "Fingerprint")
        return "{" + " ".join(show(self.fields[k]) for k in order) + "}"


class Alerts(list[Alert]):
    """``.Alerts``: ``.Firing`` and ``.Resolved`` are the alerts in that state."""

    def go_method(self, name: str) -> Callable[..., Any] | None:
        if name in ("Firing", "Resolved"):
            return lambda: Alerts(a for a in self if a.fields["Status"] == name.lower())
        return None


class Data:
    """A notification's data (``template.Data``), the dot of every notification template."""

    def __init__(self, **fields: Any) -> None:
        self.fields = fields

    def go_method(self, name: str) -> Callable[..., Any] | None:
        if name in self.fields:
            return lambda: self.fields[name]
        return None

    def go_string(self) -> str:
        return "{" + " ".join(show(v) for v in self.fields.values()) + "}"


def _common(maps: Sequence[Mapping[str, str]]) -> KV:
    if not maps:
        return KV()
    return KV({k: v for k, v in maps[0].items() if all(m.get(k) == v for m in maps[1:])})


def group_data(n: GroupNotification) -> Data:
    """Alertmanager's data for one group notification. ``.Receiver`` is regex-quoted, as
    Alertmanager quotes it."""
    alerts = Alerts(
        Alert(
            Status=a.state,
            Labels=KV(a.labels),
            Annotations=KV(a.annotations),
            StartsAt=go_time(a.fired_at or a.active_at),
            EndsAt=go_time(a.resolved_at if a.state == "resolved" else None),
            GeneratorURL=generator_url(n.external_url, a.expr),
            Fingerprint=a.fingerprint,
        )
        for a in n.alerts
    )
    return Data(
        Receiver=_quote_meta(n.receiver),
        Status="firing" if any(a.state == "firing" for a in n.alerts) else "resolved",
        Alerts=alerts,
        GroupLabels=KV(n.group_labels),
        CommonLabels=_common([a.labels for a in n.alerts]),
        CommonAnnotations=_common([a.annotations for a in n.alerts]),
        ExternalURL=n.external_url,
    )


def data_from_json(doc: Mapping[str, Any]) -> Data:
    """Data from the webhook payload's JSON (what ``amtool template render
    --template.data`` reads), times as RFC 3339."""

    def when(text: str) -> GoTime:
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)
        return GoTime.combine(moment.date(), moment.timetz())

    return Data(
        Receiver=doc["receiver"],
        Status=doc["status"],
        Alerts=Alerts(
            Alert(
                Status=a["status"],
                Labels=KV(a["labels"]),
                Annotations=KV(a["annotations"]),
                StartsAt=when(a["startsAt"]),
                EndsAt=when(a["endsAt"]),
                GeneratorURL=a["generatorURL"],
                Fingerprint=a["fingerprint"],
            )
            for a in doc["alerts"]
        ),
        GroupLabels=KV(doc["groupLabels"]),
        CommonLabels=KV(doc["commonLabels"]),
        CommonAnnotations=KV(doc["commonAnnotations"]),
        ExternalURL=doc["externalURL"],
    )


def _quote_meta(text: str) -> str:
    """Go's ``regexp.QuoteMeta``."""
    return re.sub(r"([\\.+*?()|\[\]{}^$])", r"\\\1", text)


# --- the functions -------------------------------------------------------------------------


def _title(text: Any) -> str:
    """``cases.Title``: each word's first letter upper-case, the rest lower-case."""
    return re.sub(
        r"[^\W_]+(?:'[^\W_]+)?",
        lambda m: m.group(0)[:1].upper() + m.group(0)[1:].lower(),
        str(text),
    )


def _join(sep: Any, items: Any) -> str:
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        raise TemplateError(f"join needs a list of strings, got {show(items)}")
    return str(sep).join(items)


def _string(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TemplateError(f"{what} needs a string, got {show(value)}")
    return value


_GO_BUILTINS = [
    "and",
    "or",
    "not",
    "len",
    "index",
    "print",
    "println",
    "printf",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "html",
    "urlquery",
]
AM_FUNCTIONS: dict[str, Callable[..., Any]] = {
    **{name: FUNCTIONS[name] for name in _GO_BUILTINS},
    "toUpper": lambda s: _string(s, "toUpper").upper(),
    "toLower": lambda s: _string(s, "toLower").lower(),
    "title": lambda s: _title(_string(s, "title")),
    "trimSpace": lambda s: _string(s, "trimSpace").strip(),
    "join": _join,
    "match": lambda pattern, text: _match(_string(pattern, "match"), _string(text, "match")),
    "safeHtml": lambda s: HTML(_string(s, "safeHtml")),
    "reReplaceAll": re_replace_all,
    "stringSlice": lambda *s: [_string(x, "stringSlice") for x in s],
    "date": date,
    "tz": tz,
    "since": since,
    "humanizeDuration": am_humanize_duration,
}
"""Go's built-ins and Alertmanager's ``DefaultFuncs`` (``date tz since humanizeDuration``
are Alertmanager 0.27's)."""


# --- loading and rendering -----------------------------------------------------------------


@functools.cache
def _defaults() -> TemplateSet:
    defaults = TemplateSet(AM_FUNCTIONS)
    defaults.add(DEFAULT_TEMPLATES.read_text(encoding="utf-8"))
    return defaults


def template_files(globs: Iterable[str], base_dir: str | Path) -> list[Path]:
    """The files the ``templates`` globs match (relative to ``base_dir``, the configuration
    file's folder, as in Alertmanager), in load order; at most ``MAX_TEMPLATE_FILES`` + 1."""
    files: list[Path] = []
    for pattern in globs:
        matched = sorted(Path(p) for p in globlib.glob(str(Path(base_dir, pattern))))
        files += [p for p in matched if p.is_file()][: MAX_TEMPLATE_FILES + 1 - len(files)]
        if len(files) > MAX_TEMPLATE_FILES:
            break
    return files


def files_signature(globs: Iterable[str], base_dir: str | Path) -> tuple[tuple[str, int, int], ...]:
    """Each matched template file with its modification time and size: another value means
    a file was edited, added or removed."""
    rv: list[tuple[str, int, int]] = []
    for path in template_files(globs, base_dir):
        try:
            st = path.stat()
            rv.append((str(path), st.st_mtime_ns, st.st_size))
        except OSError:  # removed between the listing and the stat: seen on the next check
            rv.append((str(path), -1, -1))
    return tuple(rv)


class NotificationTemplates:
    """Alertmanager's default templates and the configuration's, ready to render fields."""

    def __init__(self, files: Sequence[str] = ()) -> None:
        self.set = TemplateSet(AM_FUNCTIONS)
        self.set.defines.update(_defaults().defines)
        self.files = tuple(files)

    @classmethod
    def load(cls, globs: Iterable[str], base_dir: str | Path) -> NotificationTemplates:
        """The defaults, then every file the ``globs`` match (relative to ``base_dir``, the
        configuration file's folder, as in Alertmanager); raises a located ``ConfigError``."""
        files = template_files(globs, base_dir)
        if len(files) > MAX_TEMPLATE_FILES:
            raise ConfigError(f"templates: more than {MAX_TEMPLATE_FILES} files match")
        rv = cls([str(f) for f in files])
        for path in files:
            try:
                if path.stat().st_size > MAX_TEMPLATE_BYTES:
                    raise ConfigError(
                        f"template file larger than {MAX_TEMPLATE_BYTES} bytes", file=str(path)
                    )
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ConfigError(
                    f"cannot read template file: {type(exc).__name__}: {exc}", file=str(path)
                ) from None
            try:
                rv.set.add(text)
            except TemplateError as exc:
                raise ConfigError(
                    f"template: {exc.reason}; fix the template (amtool template render checks it)",
                    file=str(path),
                    line=exc.line,
                ) from None
        return rv

    def render(self, text: str, data: Data, *, html: bool = False) -> str:
        """``text`` expanded with ``data``; raises ``TemplateError`` (a missing template, a
        bad call, output over ``MAX_FIELD_OUTPUT``)."""
        if not text:
            return ""
        run = HtmlRun if html else None
        return self.set.execute(text, data, run=run, max_output=MAX_FIELD_OUTPUT)


def check_field(text: str) -> str:
    """Why a notification field's template does not parse (``line 2: ...``), or empty."""
    try:
        _defaults().check(text)
    except TemplateError as exc:
        return f"line {exc.line}: {exc.reason}" if exc.line and exc.line > 1 else exc.reason
    return ""


class TemplateErrors:
    """Counts fields whose template failed (the notification goes out with Vigil's own text
    for that field): ``vigil_notifier_template_errors_total{receiver,field}``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.counter = Counter(
            "vigil_notifier_template_errors",
            "Notification fields whose template failed to render; Vigil's own text was sent",
            ["receiver", "field"],
            registry=registry,
        )

    def record(self, receiver: str, field: str, exc: Exception) -> None:
        self.counter.labels(receiver, field).inc()
        log.warning(
            "receiver %s: template of %s failed, Vigil's text sent: %s", receiver, field, exc
        )


_ERRORS: dict[int, tuple[CollectorRegistry, TemplateErrors]] = {}
_ERRORS_LOCK = threading.Lock()


def template_errors(registry: CollectorRegistry = REGISTRY) -> TemplateErrors:
    """The template error counter of ``registry`` (one per registry, shared)."""
    with _ERRORS_LOCK:
        entry = _ERRORS.get(id(registry))
        if entry is None or entry[0] is not registry:
            entry = (registry, TemplateErrors(registry))
            _ERRORS[id(registry)] = entry
        return entry[1]
