"""E-mail: one message per alert group over SMTP, as Alertmanager's ``email_config`` sends.

The configuration mirrors Alertmanager's ``email_config`` (``to``, ``from``,
``smarthost``, ``hello``, ``auth_*``, ``require_tls``, ``tls_config``,
``headers``, ``html``, ``text``, ``send_resolved``) plus two Vigil keys:
``rate_limit`` (``10/h``: at most ten mails an hour; more are held back,
counted, and go out merged into the next mail the window allows) and
``timeout`` (each connect and SMTP exchange). ``parse_email_config`` turns a
mapping (an ``email_configs`` entry, or ``alert.email`` in the settings)
into an ``EmailConfig`` or raises a located ``ConfigError``.

TLS as Alertmanager decides it: port 465 is implicit TLS from the first byte
(``SMTP_SSL``); any other port speaks plain SMTP and, with ``require_tls``
(the default), upgrades with STARTTLS or refuses to send when the server does
not offer it. Passwords never come from the configuration file: they come
from ``auth_password_file`` (read at every send, so rotating it needs no
restart) or the environment, and are kept out of logs, errors and ``repr``.

``EmailNotifier.notify_group`` (the alert manager's ``email_configs``) and
``EmailNotifier.notify`` (the ``alert.email`` section without an alert manager)
never raise: a failure is a delivery with ``ok=False`` that the receiver's worker
retries with backoff; a mail the rate limit holds back is one with ``deferred``.
Example::

    config = parse_email_config(
        {"to": "oncall@example.com", "from": "vigil@example.com",
         "smarthost": "smtp.example.com:587", "rate_limit": "10/h"},
        where="receivers[0].email_configs[0]", env=os.environ)
    notifier = EmailNotifier(config, name="team-mail", external_url="http://vigil:8090/")
"""

from __future__ import annotations

import collections
import email.policy
import email.utils
import html
import logging
import re
import smtplib
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge

from alerting.am.templates import NotificationTemplates, template_errors
from alerting.am.templates import group_data as am_group_data
from alerting.notify.base import Delivery, GroupDelivery, GroupNotification, NotifyError
from alerting.notify.webhook import payload
from alerting.state import Alert
from vigil.errors import ConfigError
from vigil.settings import EmailSettings
from vigil.units import format_duration, parse_duration

log = logging.getLogger("vigil.alert.email")

PASSWORD_ENV = "VIGIL_SMTP_AUTH_PASSWORD"
"""Where the SMTP password comes from when no ``auth_password_file`` is given."""
SECRET_ENV = "VIGIL_SMTP_AUTH_SECRET"
"""Where the CRAM-MD5 secret comes from when no ``auth_secret_file`` is given."""
DEFAULT_TIMEOUT_S = 10.0
MAX_LISTED_ALERTS = 100
"""Alerts shown in one mail; the rest are counted in a line at the end."""
MAX_SUBJECT = 250
MAX_VALUE = 2000
"""Characters of one label or annotation value shown in a mail."""
TLS_VERSIONS = {
    "TLS10": ssl.TLSVersion.TLSv1,
    "TLS11": ssl.TLSVersion.TLSv1_1,
    "TLS12": ssl.TLSVersion.TLSv1_2,
    "TLS13": ssl.TLSVersion.TLSv1_3,
}
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1"}
_HEADER_NAME = re.compile(r"[!-9;-~]{1,76}")  # RFC 5322 field name: printable, no colon
_HOSTNAME = re.compile(r"[A-Za-z0-9._:\[\]-]{1,253}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u0085\u2028\u2029]+")
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}

Templater = Callable[[str, bool], str]
"""Expands an Alertmanager notification template (``{{ template "x" . }}``) with the
group's data (bound by the caller); the flag asks for html/template escaping."""
DEFAULT_HTML = '{{ template "email.default.html" . }}'
"""Alertmanager's default ``html`` (``DefaultEmailConfig``), used with templates."""


@dataclass(frozen=True)
class TLSConfig:
    """Alertmanager's ``tls_config``: how the SMTP server's certificate is checked."""

    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    server_name: str = ""
    insecure_skip_verify: bool = False
    min_version: str = "TLS12"


@dataclass(frozen=True)
class RateLimit:
    """At most ``count`` mails per ``window_s`` seconds."""

    count: int
    window_s: float

    def __str__(self) -> str:
        return f"{self.count}/{format_duration(self.window_s)}"


@dataclass(frozen=True)
class EmailConfig:
    """One ``email_configs`` entry, checked. ``sender`` is Alertmanager's ``from``."""

    to: str
    sender: str
    host: str
    port: int
    hello: str = "localhost"
    auth_username: str = ""
    auth_password: str = field(default="", repr=False)
    auth_password_file: str = ""
    auth_identity: str = ""
    auth_secret: str = field(default="", repr=False)
    auth_secret_file: str = ""
    require_tls: bool = True
    tls: TLSConfig = field(default_factory=TLSConfig)
    headers: Mapping[str, str] = field(default_factory=dict)
    html: str | None = None
    text: str | None = None
    send_resolved: bool = False
    rate_limit: RateLimit | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S
    force_implicit_tls: bool | None = None
    """Alertmanager's ``force_implicit_tls``: true is TLS from the first byte, false is
    STARTTLS, unset decides by the port (465: implicit)."""

    @property
    def recipients(self) -> list[str]:
        """The envelope recipients: every address in ``to``."""
        return [addr for _, addr in email.utils.getaddresses([self.to]) if addr]

    @property
    def implicit_tls(self) -> bool:
        """TLS from the first byte: ``force_implicit_tls``, else port 465, as Alertmanager
        decides."""
        if self.force_implicit_tls is not None:
            return self.force_implicit_tls
        return self.port == 465


# --- parsing -------------------------------------------------------------------------------

_TLS_KEYS = {f for f in TLSConfig.__dataclass_fields__}
_KEYS = {
    "to",
    "from",
    "smarthost",
    "hello",
    "auth_username",
    "auth_password",
    "auth_password_file",
    "auth_identity",
    "auth_secret",
    "auth_secret_file",
    "require_tls",
    "tls_config",
    "headers",
    "html",
    "text",
    "send_resolved",
    "rate_limit",
    "timeout",
    "force_implicit_tls",
    "threading",
}


class _Parser:
    def __init__(self, where: str, file: str | None, line: int | None, lines: Mapping[str, int]):
        self.where = where
        self.file = file
        self.line = line
        self.lines = lines

    def fail(self, key: str, reason: str) -> ConfigError:
        path = f"{self.where}.{key}" if self.where else key
        line = self.lines.get(key.split(".")[0], self.line)
        return ConfigError(f"{path}: {reason}", file=self.file, line=line)

    def warn(self, key: str, reason: str) -> None:
        """Log a located WARNING about ``key`` (something Alertmanager accepts, Vigil
        advises against)."""
        log.warning("%s", self.fail(key, reason))

    def text(self, raw: Mapping[str, Any], key: str, *, required: bool = False) -> str:
        value = raw.get(key)
        if value is None or value == "":
            if required:
                raise self.fail(key, "is required")
            return ""
        if not isinstance(value, str):
            raise self.fail(key, f"expected a string, got {type(value).__name__}")
        if len(value) > 100_000:
            raise self.fail(key, "is longer than 100000 characters")
        return value

    def line_text(self, raw: Mapping[str, Any], key: str, *, required: bool = False) -> str:
        """A string that ends up in an SMTP command or header: one line."""
        value = self.text(raw, key, required=required)
        if _CONTROL.search(value):
            raise self.fail(key, "must be one line without control characters")
        return value

    def flag(self, raw: Mapping[str, Any], key: str, default: bool) -> bool:
        value = raw.get(key, default)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise self.fail(key, f"expected true or false, got {value!r}"[:200])
        return value


def parse_email_config(
    raw: Any,
    *,
    where: str = "email_configs[0]",
    file: str | None = None,
    line: int | None = None,
    lines: Mapping[str, int] | None = None,
    env: Mapping[str, str] | None = None,
) -> EmailConfig:
    """Check one ``email_configs`` entry; a mistake is a ``ConfigError`` naming ``where.key``.

    ``lines`` gives the line of each key when the caller knows it; ``env`` is
    where the password and CRAM-MD5 secret come from (``$VIGIL_SMTP_AUTH_PASSWORD``,
    ``$VIGIL_SMTP_AUTH_SECRET``) when no ``*_file`` is set.
    """
    p = _Parser(where, file, line, lines or {})
    env = {} if env is None else env
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping of keys", file=file, line=line)
    for key in raw:
        if key not in _KEYS:
            known = ", ".join(sorted(_KEYS))
            raise p.fail(str(key), f"unknown key; known keys here are: {known}")
    literal = {}
    for secret, source in (("auth_password", PASSWORD_ENV), ("auth_secret", SECRET_ENV)):
        literal[secret] = p.text(raw, secret)  # any text: it goes base64-encoded into AUTH
        if literal[secret] and p.line_text(raw, f"{secret}_file"):
            raise p.fail(secret, f"at most one of {secret} & {secret}_file must be configured")
        if literal[secret]:  # Alertmanager accepts it, so an existing file must load
            p.warn(
                secret,
                f"a secret in the configuration file: it belongs in {secret}_file or ${source}",
            )
    to = p.line_text(raw, "to", required=True)
    if not _addresses_ok(to, many=True):
        raise p.fail("to", "expected e-mail addresses like oncall@example.com, comma-separated")
    sender = p.line_text(raw, "from", required=True)
    if not _addresses_ok(sender, many=False):
        raise p.fail("from", "expected one e-mail address like vigil@example.com")
    host, port = _smarthost(p, p.line_text(raw, "smarthost", required=True))
    hello = p.line_text(raw, "hello") or "localhost"
    if not _HOSTNAME.fullmatch(hello):
        raise p.fail("hello", "expected a host name like vigil.example.com")
    username = p.line_text(raw, "auth_username")
    password_file = p.line_text(raw, "auth_password_file")
    secret_file = p.line_text(raw, "auth_secret_file")
    tls = _tls(p, raw.get("tls_config"))
    config = EmailConfig(
        to=to,
        sender=sender,
        host=host,
        port=port,
        hello=hello,
        auth_username=username,
        auth_password=literal["auth_password"]
        or ("" if password_file else env.get(PASSWORD_ENV, "")),
        auth_password_file=password_file,
        auth_identity=p.line_text(raw, "auth_identity"),
        auth_secret=literal["auth_secret"] or ("" if secret_file else env.get(SECRET_ENV, "")),
        auth_secret_file=secret_file,
        require_tls=p.flag(raw, "require_tls", True),
        tls=tls,
        headers=_headers(p, raw.get("headers")),
        html=p.text(raw, "html") or None,
        text=p.text(raw, "text") or None,
        send_resolved=p.flag(raw, "send_resolved", False),
        rate_limit=_rate_limit(p, raw.get("rate_limit")),
        timeout_s=_timeout(p, raw.get("timeout")),
        force_implicit_tls=_optional_flag(p, raw, "force_implicit_tls"),
    )
    if raw.get("threading") is not None and not isinstance(raw["threading"], Mapping):
        raise p.fail("threading", "expected a mapping (enabled, thread_by_date)")
    return config


def _optional_flag(p: _Parser, raw: Mapping[str, Any], key: str) -> bool | None:
    return None if raw.get(key) is None else p.flag(raw, key, False)


def config_from_settings(
    settings: EmailSettings, *, file: str | None = None, env: Mapping[str, str] | None = None
) -> EmailConfig:
    """The ``alert.email`` section of ``vigil.yaml`` as an ``EmailConfig`` (checked alike)."""
    tls = settings.tls_config
    raw: dict[str, Any] = {
        "to": settings.to,
        "from": settings.sender,
        "smarthost": settings.smarthost,
        "hello": settings.hello,
        "auth_username": settings.auth_username,
        "auth_password_file": settings.auth_password_file,
        "auth_identity": settings.auth_identity,
        "require_tls": settings.require_tls,
        "tls_config": {
            "ca_file": tls.ca_file,
            "cert_file": tls.cert_file,
            "key_file": tls.key_file,
            "server_name": tls.server_name,
            "insecure_skip_verify": tls.insecure_skip_verify,
            "min_version": tls.min_version,
        },
        "headers": dict(settings.headers),
        "send_resolved": settings.send_resolved,
        "rate_limit": settings.rate_limit,
        "timeout": format_duration(settings.timeout) if settings.timeout > 0 else "0s",
    }
    return parse_email_config(raw, where="alert.email", file=file, env=env)


def _addresses_ok(value: str, *, many: bool) -> bool:
    try:
        pairs = email.utils.getaddresses([value])
    except Exception:  # the parser trips on some hostile input: not an address
        return False
    addrs = [a for _, a in pairs]
    if not addrs or (not many and len(addrs) != 1):
        return False
    return all(
        "@" in a and a.rsplit("@", 1)[0] and a.rsplit("@", 1)[1] and a.isprintable() for a in addrs
    )


def _smarthost(p: _Parser, value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isascii() or not port.isdigit():
        raise p.fail("smarthost", f"expected host:port like smtp.example.com:587, got {value!r}")
    if not 1 <= int(port) <= 65535 or not _HOSTNAME.fullmatch(host):
        raise p.fail("smarthost", f"expected host:port with a port 1-65535, got {value!r}")
    return host, int(port)


def _tls(p: _Parser, raw: Any) -> TLSConfig:
    if raw is None:
        return TLSConfig()
    if not isinstance(raw, Mapping):
        raise p.fail("tls_config", "expected a mapping of keys")
    for key in raw:
        if key not in _TLS_KEYS:
            known = ", ".join(sorted(_TLS_KEYS))
            raise p.fail(f"tls_config.{key}", f"unknown key; known keys here are: {known}")
    sub = _Parser(f"{p.where}.tls_config", p.file, p.lines.get("tls_config", p.line), {})
    version = sub.line_text(raw, "min_version") or "TLS12"
    if version not in TLS_VERSIONS:
        raise sub.fail("min_version", f"expected one of {', '.join(TLS_VERSIONS)}")
    cert, key = sub.line_text(raw, "cert_file"), sub.line_text(raw, "key_file")
    if bool(cert) != bool(key):
        raise sub.fail("cert_file", "cert_file and key_file go together (a client certificate)")
    return TLSConfig(
        ca_file=sub.line_text(raw, "ca_file"),
        cert_file=cert,
        key_file=key,
        server_name=sub.line_text(raw, "server_name"),
        insecure_skip_verify=sub.flag(raw, "insecure_skip_verify", False),
        min_version=version,
    )


def _headers(p: _Parser, raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise p.fail("headers", "expected a mapping of header names to values")
    rv: dict[str, str] = {}
    for name, value in raw.items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise p.fail("headers", f"{str(name)[:80]!r} is not a header name")
        if not isinstance(value, str) or _CONTROL.search(value) or len(value) > 10_000:
            raise p.fail(f"headers.{name}", "expected a one-line string")
        canonical = "-".join(part.capitalize() for part in name.split("-"))
        if canonical.lower() in {r.lower() for r in rv}:
            raise p.fail(f"headers.{name}", "is given twice (header names ignore case)")
        rv[canonical] = value
    return rv


def parse_rate_limit(value: str) -> RateLimit:
    """``10/h``, ``3/5m``, ``100/1d``: a count of mails per window; ValueError otherwise."""
    count, sep, per = value.strip().partition("/")
    if not sep or not count.isascii() or not count.isdigit() or int(count) < 1:
        raise ValueError(f"expected a count and a window like 10/h or 3/5m, got {value!r}")
    window = _UNITS.get(per.strip()) or parse_duration(per.strip())
    if window <= 0:
        raise ValueError(f"the window must be longer than 0, got {value!r}")
    return RateLimit(int(count), window)


def _rate_limit(p: _Parser, raw: Any) -> RateLimit | None:
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise p.fail("rate_limit", "expected a count per window like 10/h")
    try:
        return parse_rate_limit(raw)
    except ValueError as exc:
        raise p.fail("rate_limit", str(exc)[:300]) from None


def _timeout(p: _Parser, raw: Any) -> float:
    if raw is None or raw == "":
        return DEFAULT_TIMEOUT_S
    try:
        seconds = parse_duration(raw) if isinstance(raw, str) else float("nan")
    except ValueError as exc:
        raise p.fail("timeout", str(exc)[:300]) from None
    if not 0 < seconds <= 300:
        raise p.fail("timeout", "expected a duration between 1ms and 5m, like 10s")
    return seconds


# --- rendering ------------------------------------------------------------------------------


def one_line(value: str, limit: int = MAX_VALUE) -> str:
    """``value`` without line breaks or control characters (which could forge a header)."""
    flat = _CONTROL.sub(" ", value.encode("utf-8", "replace").decode("utf-8"))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


_TEMPLATE_FIELDS = {
    "status": "Status",
    "labels": "Labels",
    "annotations": "Annotations",
    "startsAt": "StartsAt",
    "endsAt": "EndsAt",
    "generatorURL": "GeneratorURL",
    "fingerprint": "Fingerprint",
}


def group_data(
    alerts: Sequence[Alert],
    *,
    receiver: str,
    external_url: str,
    group_labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Alertmanager's notification data for a group (what its templates see as ``.``):
    the webhook payload's content under the Go field names."""
    body = payload(alerts, receiver=receiver, external_url=external_url)
    return {
        "Receiver": receiver,
        "Status": body["status"],
        "Alerts": [{_TEMPLATE_FIELDS[k]: v for k, v in a.items()} for a in body["alerts"]],
        "GroupLabels": dict(group_labels) if group_labels is not None else body["groupLabels"],
        "CommonLabels": body["commonLabels"],
        "CommonAnnotations": body["commonAnnotations"],
        "ExternalURL": external_url,
    }


def subject(data: Mapping[str, Any]) -> str:
    """Alertmanager's default subject: ``[FIRING:2] InstanceDown (shop critical)``."""
    firing = sum(1 for a in data["Alerts"] if a["Status"] == "firing")
    status = f"FIRING:{firing}" if data["Status"] == "firing" else "RESOLVED"
    group: Mapping[str, str] = data["GroupLabels"]
    rest = {k: v for k, v in data["CommonLabels"].items() if k not in group}
    text = f"[{status}] " + " ".join(v for _, v in sorted(group.items()))
    if rest:
        text += " (" + " ".join(v for _, v in sorted(rest.items())) + ")"
    return one_line(text, MAX_SUBJECT)


def _safe_url(url: str) -> str:
    """``url`` when it is http(s), else empty: no ``javascript:`` links in a mail."""
    try:
        scheme = urllib.parse.urlsplit(url).scheme.lower()
    except ValueError:
        return ""
    return one_line(url) if scheme in ("http", "https") else ""


def _links(alert: Mapping[str, Any]) -> list[tuple[str, str]]:
    annotations: Mapping[str, str] = alert["Annotations"]
    rv = [("Runbook", _safe_url(annotations.get("runbook_url", "")))]
    rv.append(("Source", _safe_url(alert["GeneratorURL"])))
    return [(name, url) for name, url in rv if url]


def _sections(data: Mapping[str, Any]) -> list[tuple[str, list[Mapping[str, Any]], int]]:
    rv = []
    for status in ("firing", "resolved"):
        alerts = [a for a in data["Alerts"] if a["Status"] == status]
        if alerts:
            shown = alerts[:MAX_LISTED_ALERTS]
            rv.append((status, shown, len(alerts) - len(shown)))
    return rv


def text_body(data: Mapping[str, Any]) -> str:
    """The plain-text part: every alert with its labels, annotations, start and links."""
    out = [subject(data), ""]
    for status, alerts, more in _sections(data):
        out += [f"{len(alerts) + more} {status}", "=" * 20]
        for alert in alerts:
            out.append("Labels:")
            out += [f"  {one_line(k)} = {one_line(v)}" for k, v in sorted(alert["Labels"].items())]
            if alert["Annotations"]:
                out.append("Annotations:")
                out += [
                    f"  {one_line(k)} = {one_line(v)}"
                    for k, v in sorted(alert["Annotations"].items())
                ]
            out.append(f"Started: {alert['StartsAt']}")
            if status == "resolved":
                out.append(f"Ended: {alert['EndsAt']}")
            out += [f"{name}: {url}" for name, url in _links(alert)]
            out.append("")
        if more:
            out += [f"… and {more} more {status} alerts", ""]
    if data["ExternalURL"]:
        out.append(f"Sent by Vigil ({data['ExternalURL']})")
    return "\n".join(out) + "\n"


def _e(value: str) -> str:
    return html.escape(one_line(value), quote=True)


def html_body(data: Mapping[str, Any]) -> str:
    """The HTML part: the same content as the text part, every value escaped."""
    color = {"firing": "#d40e0d", "resolved": "#2eb886"}
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>{_e(subject(data))}</title></head>",
        "<body style='font-family:sans-serif'>",
        f"<h2>{_e(subject(data))}</h2>",
    ]
    for status, alerts, more in _sections(data):
        parts.append(f"<h3 style='color:{color[status]}'>{len(alerts) + more} {_e(status)}</h3>")
        for alert in alerts:
            parts.append("<table style='border-collapse:collapse;margin-bottom:1em'>")
            rows = [("Labels", alert["Labels"]), ("Annotations", alert["Annotations"])]
            for title, values in rows:
                for k, v in sorted(values.items()):
                    parts.append(f"<tr><th>{title}</th><td>{_e(k)}</td><td>{_e(v)}</td></tr>")
            parts.append(f"<tr><th>Started</th><td colspan='2'>{_e(alert['StartsAt'])}</td></tr>")
            if status == "resolved":
                parts.append(f"<tr><th>Ended</th><td colspan='2'>{_e(alert['EndsAt'])}</td></tr>")
            for name, url in _links(alert):
                parts.append(
                    f"<tr><th>{name}</th><td colspan='2'><a href='{_e(url)}'>{_e(url)}</a>"
                    "</td></tr>"
                )
            parts.append("</table>")
        if more:
            parts.append(f"<p>… and {more} more {_e(status)} alerts</p>")
    if data["ExternalURL"]:
        parts.append(f"<p>Sent by <a href='{_e(data['ExternalURL'])}'>Vigil</a></p>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def build_message(
    config: EmailConfig,
    data: Mapping[str, Any],
    *,
    templater: Templater | None = None,
    now: float | None = None,
    on_error: Callable[[str, Exception], None] | None = None,
) -> EmailMessage:
    """The mail for one group: headers (``headers`` overrides), text and HTML parts.

    A ``text``/``html``/header value with ``{{`` is expanded by ``templater``
    (the alert manager's notification templates; the HTML part defaults to
    Alertmanager's ``email.default.html`` then); without one, Vigil's rendering
    stands in. A template that fails is replaced by Vigil's rendering of that part
    and reported to ``on_error(field, exc)``. Whatever a template or a label
    contains, a header value is one line: CR and LF cannot add a header.
    """

    def expand(
        template: str | None, default: Callable[[], str], field: str, html: bool = False
    ) -> str:
        if template is None:
            return default()
        if "{{" not in template:
            return template
        if templater is None:
            return default()
        try:
            return templater(template, html)
        except Exception as exc:  # a broken template must not lose the alert
            if on_error is not None:
                on_error(field, exc)
            else:
                log.warning("email template failed, using the default: %s", exc)
            return default()

    msg = EmailMessage(policy=email.policy.SMTP)
    headers = {
        "From": config.sender,
        "To": config.to,
        "Subject": '{{ template "email.default.subject" . }}',
        **config.headers,
    }
    headers["Subject"] = expand(headers["Subject"], lambda: subject(data), "Subject")
    for name, value in headers.items():
        if name != "Subject":
            value = expand(value, lambda v=value: v, name)  # type: ignore[misc]
        msg[name] = one_line(value, MAX_SUBJECT if name == "Subject" else 10_000)
    if "Date" not in headers:
        msg["Date"] = email.utils.formatdate(now, localtime=False)
    if "Message-Id" not in headers:
        domain = config.sender.rpartition("@")[2].strip("> ") or "vigil"
        msg["Message-Id"] = email.utils.make_msgid("vigil", domain=one_line(domain, 200))
    msg.set_content(expand(config.text, lambda: text_body(data), "text"))
    html_template = config.html if config.html is not None or templater is None else DEFAULT_HTML
    msg.add_alternative(
        expand(html_template, lambda: html_body(data), "html", html=True), subtype="html"
    )
    return msg


# --- sending --------------------------------------------------------------------------------


class _Metrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.sent = Counter(
            "vigil_email_sent",
            "Alert mails the SMTP server accepted",
            ["receiver"],
            registry=registry,
        )
        self.deferred = Counter(
            "vigil_email_deferred",
            "Alert mails held back by the receiver's rate limit; they go out merged into"
            " the next mail the limit allows, never dropped",
            ["receiver"],
            registry=registry,
        )
        self.waiting = Gauge(
            "vigil_email_deferred_groups",
            "Alert groups whose mail waits for the receiver's rate limit",
            ["receiver"],
            registry=registry,
        )


_METRICS: dict[int, tuple[CollectorRegistry, _Metrics]] = {}
_METRICS_LOCK = threading.Lock()


def _metrics(registry: CollectorRegistry) -> _Metrics:
    """One set of e-mail metrics per registry, shared by every e-mail receiver."""
    with _METRICS_LOCK:
        entry = _METRICS.get(id(registry))
        if entry is None or entry[0] is not registry:
            entry = (registry, _Metrics(registry))
            _METRICS[id(registry)] = entry
        return entry[1]


class _SMTP(smtplib.SMTP):
    """``smtplib.SMTP`` that checks the certificate against ``server_name`` when set."""

    def connect_to(self, host: str, port: int, server_name: str) -> None:
        code, reply = self.connect(host, port)
        self._host = server_name or host  # what STARTTLS / SMTP_SSL check the certificate for
        if code != 220:
            raise smtplib.SMTPConnectError(code, reply)


class _SMTPS(smtplib.SMTP_SSL):
    def connect_to(self, host: str, port: int, server_name: str) -> None:
        self._host = server_name or host
        code, reply = self.connect(host, port)
        if code != 220:
            raise smtplib.SMTPConnectError(code, reply)


def tls_context(tls: TLSConfig) -> ssl.SSLContext:
    """The client TLS context ``tls_config`` describes."""
    context = ssl.create_default_context(cafile=tls.ca_file or None)
    context.minimum_version = TLS_VERSIONS[tls.min_version]
    if tls.cert_file:
        context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.insecure_skip_verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _read_secret(path: str, what: str) -> str:
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise NotifyError(f"cannot read {what} {path}: {type(exc).__name__}") from None


class EmailNotifier:
    """Sends one mail per alert group through ``config.smarthost``: a ``GroupNotifier`` of
    the alert manager (``notify_group``) and a ``Notifier`` of the legacy ``alert.email``
    path (``notify``); neither raises."""

    def __init__(
        self,
        config: EmailConfig,
        *,
        name: str = "email",
        external_url: str = "",
        registry: CollectorRegistry = REGISTRY,
        templates: NotificationTemplates | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.name = name
        self.external_url = external_url
        self.templates = templates
        """Alertmanager's templates (the alert manager's ``email_configs``); None renders
        Vigil's own mail."""
        self.template_errors = template_errors(registry)
        self.clock = clock
        self.metrics = _metrics(registry)
        self._sent_at: collections.deque[float] = collections.deque()
        self._waiting: set[tuple[str, ...]] = set()
        self._lock = threading.Lock()
        self.metrics.waiting.labels(name).set(0)
        self.integration = "email"
        self.send_resolved = config.send_resolved

    def notify(
        self, alerts: Sequence[Alert], group_labels: Mapping[str, str] | None = None
    ) -> list[Delivery]:
        """One mail about ``alerts`` (one rule, the legacy ``alert.email`` path); one
        ``Delivery`` per alert, all alike."""
        key = tuple(sorted(a.fingerprint for a in alerts))
        d = self._mail(alerts, group_labels, key, self.external_url)
        return [Delivery(a.fingerprint, d.ok, error=d.error, deferred=d.deferred) for a in alerts]

    def notify_group(self, n: GroupNotification) -> GroupDelivery:
        """One mail per group notification of the alert manager, its subject as
        Alertmanager's (``[FIRING:2] HighLatency (checkout critical)``). A rate-limited mail
        is a deferred, not-ok ``GroupDelivery`` the receiver's worker retries; never raises."""
        return self._mail(n.alerts, n.group_labels, (n.group_key,), n.external_url, n.receiver)

    def _mail(
        self,
        alerts: Sequence[Alert],
        group_labels: Mapping[str, str] | None,
        key: tuple[str, ...],
        external_url: str,
        receiver: str = "",
    ) -> GroupDelivery:
        shown = [a for a in alerts if a.state == "firing" or self.config.send_resolved]
        if not shown:  # only resolutions, and send_resolved is off: nothing to say
            return GroupDelivery(True)
        wait = self._take_slot(key)
        if wait is not None:
            note = f"rate limit {self.config.rate_limit} reached; next mail in {wait:.0f} s"
            return GroupDelivery(False, error=note, deferred=True)
        data = group_data(
            shown,
            receiver=self.name,
            external_url=external_url or self.external_url,
            group_labels=group_labels,
        )
        templater: Templater | None = None
        templates = self.templates
        if templates is not None:
            am_data = am_group_data(
                GroupNotification(
                    receiver or self.name,
                    key[0],
                    dict(data["GroupLabels"]),
                    shown,
                    external_url=data["ExternalURL"],
                )
            )

            def templater(template: str, html: bool) -> str:
                return templates.render(template, am_data, html=html)

        try:
            message = build_message(
                self.config,
                data,
                templater=templater,
                on_error=lambda field, exc: self.template_errors.record(self.name, field, exc),
            )
            self.send(message)
        except Exception as exc:  # the SMTP server being down must never stop the engine
            self._give_back_slot()
            reason = _describe(exc)
            log.warning("email %s: sending %s failed: %s", self.name, message_subject(data), reason)
            return GroupDelivery(False, error=reason)
        self.metrics.sent.labels(self.name).inc()
        log.info("email %s: sent %s", self.name, message_subject(data))
        return GroupDelivery(True)

    def _take_slot(self, key: tuple[str, ...]) -> float | None:
        """Reserve a place in the rate-limit window; else seconds until one frees up."""
        limit = self.config.rate_limit
        with self._lock:
            if limit is None:
                return None
            now = self.clock()
            while self._sent_at and self._sent_at[0] <= now - limit.window_s:
                self._sent_at.popleft()
            if len(self._sent_at) < limit.count:
                self._sent_at.append(now)
                self._waiting.discard(key)
                self.metrics.waiting.labels(self.name).set(len(self._waiting))
                return None
            if key not in self._waiting:  # count a held-back mail once, not every retry
                self._waiting.add(key)
                self.metrics.deferred.labels(self.name).inc()
                self.metrics.waiting.labels(self.name).set(len(self._waiting))
            return max(0.0, self._sent_at[0] + limit.window_s - now)

    def _give_back_slot(self) -> None:
        with self._lock:
            if self.config.rate_limit is not None and self._sent_at:
                self._sent_at.pop()

    def send(self, message: EmailMessage) -> None:
        """Deliver ``message`` to ``config.to`` over SMTP (TLS as configured); raises on error."""
        c = self.config
        context = tls_context(c.tls) if c.implicit_tls or c.require_tls else None
        smtp: _SMTP | _SMTPS
        if c.implicit_tls:
            assert context is not None
            smtp = _SMTPS(local_hostname=c.hello, timeout=c.timeout_s, context=context)
        else:
            smtp = _SMTP(local_hostname=c.hello, timeout=c.timeout_s)
        try:
            smtp.connect_to(c.host, c.port, c.tls.server_name)
            smtp.ehlo(c.hello)
            encrypted = c.implicit_tls
            if not encrypted and c.require_tls:
                if not smtp.has_extn("starttls"):
                    raise NotifyError(
                        f"{c.host}:{c.port} does not offer STARTTLS and require_tls is true;"
                        " use port 465 for TLS, or set require_tls: false to send in clear"
                    )
                smtp.starttls(context=context)
                smtp.ehlo(c.hello)
                encrypted = True
            if c.auth_username:
                self._login(smtp, encrypted)
            refused = smtp.send_message(
                message,
                from_addr=email.utils.parseaddr(c.sender)[1],
                to_addrs=c.recipients,
            )
            if refused:
                raise NotifyError(f"the server refused recipients {sorted(refused)}")
        finally:
            try:
                smtp.quit()
            except Exception:  # already closed or broken: nothing more to say
                smtp.close()

    def _login(self, smtp: smtplib.SMTP, encrypted: bool) -> None:
        """Authenticate as Alertmanager does: CRAM-MD5 with a secret, else PLAIN, else LOGIN."""
        c = self.config
        if not encrypted and c.host not in _LOCAL_HOSTS:
            raise NotifyError("refusing to send the SMTP password over an unencrypted connection")
        mechanisms = set(smtp.esmtp_features.get("auth", "").upper().split())
        secret = (
            _read_secret(c.auth_secret_file, "auth_secret_file")
            if c.auth_secret_file
            else (c.auth_secret)
        )
        if "CRAM-MD5" in mechanisms and secret:
            smtp.user, smtp.password = c.auth_username, secret
            smtp.auth("CRAM-MD5", smtp.auth_cram_md5)
            return
        password = (
            _read_secret(c.auth_password_file, "auth_password_file")
            if c.auth_password_file
            else c.auth_password
        )
        if not password:
            raise NotifyError(
                f"auth_username is set but no password: set auth_password_file or ${PASSWORD_ENV}"
            )
        smtp.user, smtp.password = c.auth_username, password
        if "PLAIN" in mechanisms:
            plain = f"{c.auth_identity}\0{c.auth_username}\0{password}"
            smtp.auth("PLAIN", lambda challenge=None: plain)
        elif "LOGIN" in mechanisms:
            smtp.auth("LOGIN", smtp.auth_login, initial_response_ok=False)
        else:
            offered = " ".join(sorted(mechanisms)) or "none"
            raise NotifyError(f"the server offers no AUTH mechanism Vigil speaks ({offered})")


def message_subject(data: Mapping[str, Any]) -> str:
    """The default subject, for log lines."""
    return repr(subject(data))


def _describe(exc: BaseException) -> str:
    """What went wrong, for logs and the outbox: never the password (smtplib never echoes it,
    and our own errors do not contain it)."""
    if isinstance(exc, smtplib.SMTPResponseException):
        text = (
            exc.smtp_error.decode("utf-8", "replace")
            if isinstance(exc.smtp_error, bytes)
            else str(exc.smtp_error)
        )
        return f"{type(exc).__name__}: {exc.smtp_code} {one_line(text, 300)}"
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"TLS certificate refused: {exc.verify_message}"
    return f"{type(exc).__name__}: {one_line(str(exc), 300)}"
