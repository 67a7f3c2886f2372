"""Typed settings: every option declared once, with its default and its env var.

Settings come from three layers, later ones winning: the defaults declared
here, a YAML file (``config/vigil.yaml`` by default, or ``VIGIL_CONFIG``), and
environment variables.  Unknown keys and wrong types are errors that name the
file, line and key, so a typo never silently falls back to a default.

Example::

    settings = load_settings("config/vigil.yaml", env={"VIGIL_SHOP_PORT": "9000"})
    settings.shop.port  # 9000
"""

from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, NoReturn, TypeVar, get_args, get_origin

import yaml

from vigil import safeyaml
from vigil.errors import ConfigError
from vigil.units import format_bytes, format_duration, parse_bytes, parse_duration

T = TypeVar("T")

DEFAULT_CONFIG = "config/vigil.yaml"


def option(default: Any, *, env: str | None = None, help: str = "") -> Any:
    """Declare a settings field with its default, its environment variable and help."""
    meta = {"env": env, "help": help}
    if isinstance(default, (dict, list)):
        return field(default_factory=lambda: _copy(default), metadata=meta)
    return field(default=default, metadata=meta)


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_copy(v) for v in value]
    return value


class Duration(float):
    """Seconds, written in the settings as a Prometheus duration (``15d``, ``12h``, ``1h30m``);
    ``0`` means off (keep forever)."""


class ByteSize(int):
    """Bytes, written in the settings like ``512MB``, ``10GB`` (units of 1024, as Prometheus)
    or a plain number; ``0`` means off."""


@dataclass(frozen=True)
class GatewaySettings:
    """One simulated payment gateway."""

    latency_ms: int = option(40, help="added latency of every authorisation")
    decline_rate: float = option(0.03, help="share of authorisations declined (0..1)")
    error_rate: float = option(0.0, help="share of authorisations failing with 5xx (0..1)")


@dataclass(frozen=True)
class FraudSettings:
    """Fraud check limits applied before a payment reaches a gateway."""

    max_amount_eur: Decimal = option(Decimal("5000"), help="decline payments above this")
    window_seconds: int = option(600, help="velocity window")
    max_per_card: int = option(5, help="payment attempts per card within the window")
    max_per_ip: int = option(20, help="payment attempts per client IP within the window")


@dataclass(frozen=True)
class LoginThrottleSettings:
    """Failed-login limits: past one, logins answer 429 with Retry-After until the window ends."""

    account_failures: int = option(
        5, env="VIGIL_SHOP_LOGIN_ACCOUNT_FAILURES", help="failed logins per account per window"
    )
    account_window_s: int = option(
        900, env="VIGIL_SHOP_LOGIN_ACCOUNT_WINDOW", help="account window, seconds"
    )
    ip_failures: int = option(
        20, env="VIGIL_SHOP_LOGIN_IP_FAILURES", help="failed logins per client IP per window"
    )
    ip_window_s: int = option(900, env="VIGIL_SHOP_LOGIN_IP_WINDOW", help="IP window, seconds")


@dataclass(frozen=True)
class MailSettings:
    """Order-confirmation e-mail."""

    smtp_host: str = option(
        "",
        env="VIGIL_SMTP_HOST",
        help="SMTP relay host; empty writes .eml files to <data_dir>/mail/outbox instead",
    )
    smtp_port: int = option(25, env="VIGIL_SMTP_PORT", help="SMTP relay port")
    sender: str = option("shop@vigil.example", env="VIGIL_MAIL_SENDER", help="From: address")
    daily_cap: int = option(
        500, env="VIGIL_SHOP_MAIL_DAILY_CAP", help="mails sent per UTC day; the rest wait"
    )
    batch_size: int = option(20, help="mails sent per queue run")


@dataclass(frozen=True)
class ShopSettings:
    """The reference shop."""

    host: str = option("127.0.0.1", env="VIGIL_SHOP_HOST", help="address the shop listens on")
    port: int = option(8001, env="VIGIL_SHOP_PORT", help="port the shop listens on")
    workers: int = option(2, env="VIGIL_SHOP_WORKERS", help="gunicorn worker processes")
    db: str = option(
        "", env="VIGIL_SHOP_DB", help="SQLAlchemy URL; empty means SQLite under the data dir"
    )
    db_busy_timeout_s: float = option(
        30.0,
        env="VIGIL_SHOP_DB_BUSY_TIMEOUT_S",
        help="how long a SQLite statement waits for a lock before the request gets 503",
    )
    release: str = option("v1", env="VIGIL_SHOP_RELEASE", help="v1 is healthy, v2 is bad")
    admin_api_key: str = option(
        "", env="VIGIL_SHOP_ADMIN_KEY", help="key for /api/admin; empty disables the admin API"
    )
    trusted_proxies: list[str] = option(
        ["127.0.0.1", "::1"],
        env="VIGIL_SHOP_TRUSTED_PROXIES",
        help="peers whose X-Forwarded-For/-Proto are believed (comma-separated in the env var)",
    )
    max_body_bytes: int = option(65536, help="larger request bodies get 413")
    faults_enabled: bool = option(
        False, env="VIGIL_SHOP_FAULTS_ENABLED", help="allow fault injection via the admin API"
    )
    vip_discount_percent: Decimal = option(Decimal("5"), help="discount for VIP customers")
    rates: dict[str, Decimal] = option(
        {
            "EUR": Decimal("1"),
            "USD": Decimal("1.08"),
            "PLN": Decimal("4.30"),
            "CNY": Decimal("7.80"),
        },
        help="units of each currency per 1 EUR",
    )
    gateways: dict[str, GatewaySettings] = option(
        {
            "stripe": GatewaySettings(latency_ms=40, decline_rate=0.03, error_rate=0.0),
            "adyen": GatewaySettings(latency_ms=60, decline_rate=0.02, error_rate=0.0),
            "payu": GatewaySettings(latency_ms=80, decline_rate=0.04, error_rate=0.0),
        },
        help="simulated payment gateways: latency_ms, decline_rate, error_rate",
    )
    fraud: FraudSettings = option(FraudSettings())
    login_throttle: LoginThrottleSettings = option(LoginThrottleSettings())
    mail: MailSettings = option(MailSettings())


REFRESH_MODES = ("false", "wait_for", "true")
"""``store.refresh``: Elasticsearch's ``refresh`` parameter of each bulk write."""


@dataclass(frozen=True)
class StoreSettings:
    """The SIEM store (events and samples)."""

    backend: str = option(
        "sqlite",
        env="VIGIL_STORE_BACKEND",
        help="sqlite (embedded), memory (nothing kept) or elasticsearch (store.url)",
    )
    path: str = option(
        "", env="VIGIL_STORE_PATH", help="SQLite file; empty means <data_dir>/siem.db"
    )
    url: str = option(
        "",
        env="VIGIL_STORE_URL",
        help="Elasticsearch/OpenSearch URL (backend elasticsearch); API key: VIGIL_STORE_API_KEY",
    )
    index_prefix: str = option(
        "vigil", env="VIGIL_STORE_INDEX_PREFIX", help="prefix of the Elasticsearch index names"
    )
    es_compat_headers: bool = option(
        True,
        env="VIGIL_STORE_ES_COMPAT_HEADERS",
        help="send Elasticsearch 8 compatible-with media types; false for OpenSearch/osmem-server",
    )
    request_timeout_s: float = option(
        30.0, env="VIGIL_STORE_REQUEST_TIMEOUT", help="Elasticsearch request timeout (seconds)"
    )
    retention: dict[str, Duration] = option(
        {"default": Duration(30 * 86400)},
        help="how long events are kept, per event.dataset (Prometheus durations: 7d, 12h);"
        " `default` for datasets not listed (30d when absent); 0 keeps forever",
    )
    samples_retention: Duration = option(
        Duration(15 * 86400),
        env="VIGIL_STORE_SAMPLES_RETENTION",
        help="how long metric samples are kept (Prometheus' --storage.tsdb.retention.time);"
        " 0 keeps forever",
    )
    max_bytes: ByteSize = option(
        ByteSize(0),
        env="VIGIL_STORE_MAX_BYTES",
        help="size cap of the SQLite store, e.g. 10GB (Prometheus' --storage.tsdb.retention.size):"
        " above it the oldest events and samples go first; 0: no cap; not for elasticsearch",
    )
    retention_interval_s: float = option(
        300.0,
        env="VIGIL_STORE_RETENTION_INTERVAL",
        help="seconds between the collector's retention passes (vigil store prune runs one now);"
        " 0 turns them off",
    )
    refresh: str = option(
        "false",
        env="VIGIL_STORE_REFRESH",
        help="Elasticsearch refresh after each bulk write: false (the index refresh interval"
        " makes writes searchable, ~1 s), wait_for (each write waits for that refresh) or"
        " true (refresh at once: costly on a real cluster; for tests)",
    )
    sqlite_busy_timeout_s: float = option(
        2.0,
        env="VIGIL_STORE_SQLITE_BUSY_TIMEOUT",
        help="how long `vigil collect` waits for a siem.db locked by another process before"
        " the write fails (it is then retried, and scrapes/syslog spool to disk); other"
        " processes wait 30 s",
    )


@dataclass(frozen=True)
class ScrapeJob:
    """One Prometheus scrape job: ``job`` label = its name in ``collect.scrape``."""

    targets: list[str] = option([], help="host:port of each instance")
    path: str = option("/metrics")
    timeout_s: float = option(3.0)


@dataclass(frozen=True)
class CollectSettings:
    """``vigil collect``: scrape metrics, tail logs, write to the store."""

    interval_s: float = option(
        2.0,
        env="VIGIL_COLLECT_INTERVAL",
        help="scrape interval; 2 s gives the 30 s windows of the fast-burn page 15 samples",
    )
    scrape: dict[str, ScrapeJob] = option(
        {}, help="extra scrape jobs by name (the job label), beside the stack's own"
    )
    scrape_stack: bool = option(
        True,
        env="VIGIL_COLLECT_SCRAPE_STACK",
        help="scrape what `vigil up` runs: job shop (up.* ports) and job vigil (own /metrics)",
    )
    tail: list[str] = option(
        ["logs/*.log"], help="globs of ECS JSON log files, relative to the data dir"
    )
    files: dict[str, str] = option(
        {},
        help="more log files: glob → parser (ecs, haproxy, nginx, nginx_error, postgresql,"
        " postgresql_stderr, python), e.g. {/var/log/haproxy.log: haproxy}",
    )
    postgresql_log_line_prefix: str = option(
        "%m [%p] %q%u@%d ",
        env="VIGIL_COLLECT_POSTGRESQL_LOG_LINE_PREFIX",
        help="PostgreSQL's log_line_prefix, as the postgresql_stderr parser reads it"
        " (escapes %m %t %n %s %p %u %d %r %h %a %b %c %l %e %i %v %x %Q %q %%)",
    )
    postgresql_log: str = option(
        "auto",
        env="VIGIL_COLLECT_POSTGRESQL_LOG",
        help="PostgreSQL's server log: auto finds it from the polled server (collect.postgres"
        " or the shop's database) when it runs on this machine; off; or the file's path",
    )
    syslog_udp: str = option(
        "",
        env="VIGIL_COLLECT_SYSLOG_UDP",
        help="host:port to receive haproxy's HTTP log over syslog UDP (e.g. 127.0.0.1:5140);"
        " empty is off (`vigil up` then uses up.syslog_port)",
    )
    port: int = option(8091, env="VIGIL_COLLECT_PORT", help="the collector's own /metrics")
    spool_max_bytes: int = option(
        256 << 20,
        env="VIGIL_COLLECT_SPOOL_MAX_BYTES",
        help="disk spool (data/spool) for scrapes, syslog and the PostgreSQL poller while the"
        " store refuses writes; past this many bytes their batches are dropped (counted);"
        " 0 turns the spool off",
    )
    spool_after_items: int = option(
        0,
        env="VIGIL_COLLECT_SPOOL_AFTER_ITEMS",
        help="spool once the store refused a write and this many such items wait in memory",
    )
    postgres: str = option(
        "",
        env="VIGIL_COLLECT_POSTGRES",
        help="postgresql:// URL to poll for postgres_exporter metrics (password from"
        " VIGIL_POSTGRES_PASSWORD or PGPASSWORD); empty means the shop's database"
        " when it is PostgreSQL; off turns the poller off",
    )
    postgres_timeout_s: float = option(
        3.0,
        env="VIGIL_COLLECT_POSTGRES_TIMEOUT",
        help="connect and statement timeout of each PostgreSQL poll",
    )
    postgres_max_tables: int = option(
        50,
        env="VIGIL_COLLECT_POSTGRES_MAX_TABLES",
        help="per-table series only for this many tables, the largest first",
    )
    payments_interval_s: float = option(
        30.0,
        env="VIGIL_COLLECT_PAYMENTS_INTERVAL",
        help="how often to recompute the payment funnel metrics and reconcile the shop's"
        " orders (shop.db) with the gateway ledgers; 0 turns it off",
    )
    payments_window_s: float = option(
        86400.0,
        env="VIGIL_COLLECT_PAYMENTS_WINDOW",
        help="reconcile orders and captures of this many seconds back",
    )
    payments_grace_s: float = option(
        120.0,
        env="VIGIL_COLLECT_PAYMENTS_GRACE",
        help="report a reconciliation discrepancy only once its newest capture or order"
        " update is this many seconds old (a checkout between its two writes is no fault)",
    )


@dataclass(frozen=True)
class SlackSettings:
    """Slack notifier; the token comes from the environment only."""

    token: str = option("", env="VIGIL_SLACK_TOKEN", help="bot token; empty disables Slack")
    channel: str = option("#alerts", env="VIGIL_SLACK_CHANNEL")
    api_url: str = option(
        "https://slack.com/api/", env="VIGIL_SLACK_API_URL", help="Slack Web API base URL"
    )
    signing_secret: str = option(
        "",
        env="VIGIL_SLACK_SIGNING_SECRET",
        help="the Slack app's signing secret; set: `vigil alert` serves the buttons'"
        " interactivity endpoint POST /slack/actions on interactivity_port",
    )
    interactivity_port: int = option(
        8093, env="VIGIL_SLACK_INTERACTIVITY_PORT", help="port of POST /slack/actions"
    )
    interactivity_host: str = option(
        "127.0.0.1", help="address of POST /slack/actions (put a TLS proxy in front)"
    )
    users: dict[str, str] = option({}, help="Slack user id → Vigil user name (the audit actor)")
    roles: dict[str, str] = option(
        {}, help="Slack user id → Vigil role for the buttons (operator may acknowledge/silence)"
    )
    default_role: str = option(
        "operator", help="role of Slack users not in roles (viewer: buttons refused)"
    )


@dataclass(frozen=True)
class EmailTLSSettings:
    """How the SMTP server's certificate is checked (Alertmanager's ``tls_config``)."""

    ca_file: str = option("", help="CA bundle to trust instead of the system's")
    cert_file: str = option("", help="client certificate (with key_file)")
    key_file: str = option("", help="client certificate's key")
    server_name: str = option("", help="name the certificate must carry; default: the host")
    insecure_skip_verify: bool = option(False, help="accept any certificate (tests only)")
    min_version: str = option("TLS12", help="oldest TLS version: TLS10, TLS11, TLS12, TLS13")


@dataclass(frozen=True)
class EmailSettings:
    """E-mail receiver (Alertmanager's ``email_config``); the password comes from
    ``auth_password_file`` or ``$VIGIL_SMTP_AUTH_PASSWORD``, never from this file."""

    to: str = option(
        "", env="VIGIL_ALERT_EMAIL_TO", help="recipients, comma-separated; empty disables e-mail"
    )
    sender: str = option(
        "vigil@vigil.example", env="VIGIL_ALERT_EMAIL_FROM", help="From: address ('from')"
    )
    smarthost: str = option(
        "localhost:587",
        env="VIGIL_ALERT_EMAIL_SMARTHOST",
        help="SMTP server host:port; port 465 is implicit TLS, others use STARTTLS",
    )
    hello: str = option("localhost", help="host name sent in EHLO")
    auth_username: str = option("", env="VIGIL_ALERT_EMAIL_AUTH_USERNAME", help="SMTP user")
    auth_password_file: str = option(
        "", help="file holding the SMTP password; else $VIGIL_SMTP_AUTH_PASSWORD"
    )
    auth_identity: str = option("", help="PLAIN authorisation identity")
    require_tls: bool = option(
        True,
        env="VIGIL_ALERT_EMAIL_REQUIRE_TLS",
        help="refuse to send unless the server offers STARTTLS (ports other than 465)",
    )
    tls_config: EmailTLSSettings = option(EmailTLSSettings())
    headers: dict[str, str] = option({}, help="extra or replaced headers (Subject, To, From…)")
    send_resolved: bool = option(False, help="also mail when alerts resolve")
    rate_limit: str = option(
        "",
        env="VIGIL_ALERT_EMAIL_RATE_LIMIT",
        help="at most N mails per window, like 10/h; more are merged into the next mail"
        " the limit allows (counted in vigil_email_deferred_total); empty: no limit",
    )
    timeout: Duration = option(Duration(10), help="limit of the connection and each SMTP step")


@dataclass(frozen=True)
class AlertSettings:
    """``vigil alert``: rule evaluation and notification."""

    rules: list[str] = option(["config/rules/*.yaml"], help="rule file globs")
    slos: list[str] = option(
        ["config/slos.yaml"],
        help="SLO file globs; their recording rules and burn-rate alerts run beside the rules",
    )
    interval_s: float = option(
        1.0,
        env="VIGIL_ALERT_INTERVAL",
        help="evaluation interval; 1 s sees a new scrape at most a second after it is stored",
    )
    slack: SlackSettings = option(SlackSettings())
    email: EmailSettings = option(EmailSettings())
    webhooks: list[str] = option(
        [], env="VIGIL_ALERT_WEBHOOKS", help="URLs that get the Alertmanager v4 payload"
    )
    runbook_base_url: str = option(
        "",
        env="VIGIL_RUNBOOK_BASE_URL",
        help="prefix for relative runbook_url annotations; empty means the web UI",
    )
    port: int = option(
        8092,
        env="VIGIL_ALERT_PORT",
        help="127.0.0.1 port of the evaluator's /metrics, /-/healthy, /-/ready, POST /-/reload"
        " and, with alert.alertmanager_config, the Alertmanager API v2 (/api/v2/..., as"
        " Alertmanager's 9093)",
    )
    alertmanager_config: str = option(
        "",
        env="VIGIL_ALERTMANAGER_CONFIG",
        help="Alertmanager configuration file (routes, grouping, inhibition, receivers);"
        " empty: every alert goes to alert.slack and alert.webhooks, one message per alert",
    )
    notify_queue_size: int = option(
        1000,
        env="VIGIL_ALERT_NOTIFY_QUEUE_SIZE",
        help="alerts each receiver's queue holds; more wait in alerts.db for a later pass",
    )
    notify_max_backoff_s: float = option(
        30.0,
        env="VIGIL_ALERT_NOTIFY_MAX_BACKOFF",
        help="longest wait between a failing receiver's retries",
    )
    cache_max_samples: int = option(
        5_000_000,
        env="VIGIL_ALERT_CACHE_MAX_SAMPLES",
        help="samples the evaluator keeps in memory (about 16 bytes each) for the rules'"
        " recent windows; names that do not fit are read from the store; 0: no cache",
    )
    cache_max_window_s: float = option(
        3600.0,
        env="VIGIL_ALERT_CACHE_MAX_WINDOW",
        help="windows reaching back further than this (an SLO's [3d]) are read from the store",
    )


@dataclass(frozen=True)
class WebSettings:
    """``vigil web``: dashboards."""

    host: str = option("127.0.0.1", env="VIGIL_WEB_HOST")
    port: int = option(8090, env="VIGIL_WEB_PORT")
    session_idle_s: float = option(
        1800.0,
        env="VIGIL_WEB_SESSION_IDLE_S",
        help="log a dashboards session out after this many seconds without a request",
    )


@dataclass(frozen=True)
class QuerySettings:
    """Limits of one PromQL or event query, in ``vigil web`` and ``vigil alert``."""

    max_samples: int = option(
        10_000_000,
        env="VIGIL_QUERY_MAX_SAMPLES",
        help="samples (and rows) one query may hold, ~75 bytes each; "
        "Prometheus' --query.max-samples; 0: none",
    )
    timeout_s: float = option(
        120.0,
        env="VIGIL_QUERY_TIMEOUT",
        help="seconds one query may run; Prometheus' --query.timeout; 0: none",
    )
    max_concurrency: int = option(
        4,
        env="VIGIL_QUERY_MAX_CONCURRENCY",
        help="queries the web API runs at once, others wait (within their timeout); "
        "Prometheus' --query.max-concurrency",
    )


@dataclass(frozen=True)
class UpSettings:
    """``vigil up``: the supervised stack."""

    shop_instances: int = option(2, env="VIGIL_UP_SHOP_INSTANCES", help="shop processes")
    shop_base_port: int = option(
        8001, env="VIGIL_UP_SHOP_BASE_PORT", help="first shop port; instance n gets base + n - 1"
    )
    haproxy_port: int = option(8100, env="VIGIL_UP_HAPROXY_PORT", help="haproxy frontend")
    haproxy_metrics_port: int = option(
        8101,
        env="VIGIL_UP_HAPROXY_METRICS_PORT",
        help="haproxy's Prometheus exporter (/metrics) and stats page (/stats)",
    )
    control_port: int = option(
        8099, env="VIGIL_UP_CONTROL_PORT", help="supervisor control API and its /metrics"
    )
    syslog_port: int = option(
        8093,
        env="VIGIL_UP_SYSLOG_PORT",
        help="UDP port on 127.0.0.1 where the collector receives haproxy's HTTP log when"
        " collect.syslog_udp is empty; 0 turns haproxy's log off",
    )


@dataclass(frozen=True)
class Settings:
    """All of Vigil's settings."""

    data_dir: str = option("data", env="VIGIL_DATA_DIR", help="where files and SQLite live")
    shop: ShopSettings = option(ShopSettings())
    store: StoreSettings = option(StoreSettings())
    collect: CollectSettings = option(CollectSettings())
    alert: AlertSettings = option(AlertSettings())
    web: WebSettings = option(WebSettings())
    query: QuerySettings = option(QuerySettings())
    up: UpSettings = option(UpSettings())

    @property
    def store_path(self) -> Path:
        return Path(self.store.path) if self.store.path else Path(self.data_dir) / "siem.db"

    @property
    def log_dir(self) -> Path:
        return Path(self.data_dir) / "logs"

    @property
    def shop_db_url(self) -> str:
        if self.shop.db:
            return self.shop.db
        return f"sqlite:///{Path(self.data_dir).resolve() / 'shop.db'}"


def load_settings(
    path: str | os.PathLike[str] | None = None, env: Mapping[str, str] | None = None
) -> Settings:
    """Load settings from defaults, then the YAML file, then the environment.

    With ``path`` None, ``VIGIL_CONFIG`` or ``config/vigil.yaml`` is read if it
    exists; a path given explicitly must exist.
    """
    env = os.environ if env is None else env
    explicit = path is not None or "VIGIL_CONFIG" in env
    file = Path(path if path is not None else env.get("VIGIL_CONFIG", DEFAULT_CONFIG))
    data: dict[str, Any] = {}
    try:
        exists = file.exists()
    except OSError as exc:  # e.g. a name longer than the file system allows
        raise ConfigError(f"cannot open the config file: {exc.strerror}", file=str(file)) from None
    if exists:
        data = _read_yaml(file)
    elif explicit:
        raise ConfigError("config file not found; pass an existing file", file=str(file))
    return check(_build(Settings, data, str(file), "", env), str(file), data, env)


def from_mapping(data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from an in-memory mapping (tests), then the given env."""
    plain = _plain(data)
    return check(_build(Settings, plain, "<mapping>", "", env or {}), "<mapping>", plain, env or {})


Fail = Callable[[str, str], NoReturn]
# Checks a subsystem adds for its own options (see add_check).
_CHECKS: list[Callable[[Settings, Fail], None]] = []


def add_check(hook: Callable[[Settings, Fail], None]) -> None:
    """Run ``hook(settings, fail)`` whenever settings are loaded, after the checks here.

    For checks that need a subsystem's own code (the collectors' parser names):
    this module depends on no subsystem, the subsystem registers its check when
    it is imported. ``fail(key, message)`` raises the :class:`ConfigError`,
    located at the file and the key's line.
    """
    if hook not in _CHECKS:
        _CHECKS.append(hook)


def check(
    settings: Settings,
    file: str,
    data: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
) -> Settings:
    """Checks that span a value's type: ranges and required entries, then the added ones.

    ``data`` (the file as read) and ``env`` locate an error at its key's line.
    """
    shop = settings.shop

    def fail(key: str, message: str) -> NoReturn:
        line = _key_line(data, key, env or {}) if data is not None else None
        raise ConfigError(f"{key}: {message}", file=file, line=line)

    if not 1 <= shop.port <= 65535:
        fail("shop.port", f"must be between 1 and 65535, got {shop.port}")
    if shop.workers < 1:
        fail("shop.workers", "must be at least 1")
    if "EUR" not in shop.rates or shop.rates["EUR"] != 1:
        fail("shop.rates", "must contain EUR: 1 (prices are kept in EUR)")
    for code, rate in shop.rates.items():
        if len(code) != 3 or not code.isalpha() or rate <= 0:
            fail(f"shop.rates.{code}", "needs a 3-letter code and a positive rate")
    if not shop.gateways:
        fail("shop.gateways", "needs at least one payment gateway")
    for name, gw in shop.gateways.items():
        for field_name in ("decline_rate", "error_rate"):
            if not 0 <= getattr(gw, field_name) <= 1:
                fail(f"shop.gateways.{name}.{field_name}", "must be between 0 and 1")
        if gw.latency_ms < 0:
            fail(f"shop.gateways.{name}.latency_ms", "must not be negative")
    if shop.mail.daily_cap < 0:
        fail("shop.mail.daily_cap", "must not be negative")
    if not (math.isfinite(shop.db_busy_timeout_s) and 0 <= shop.db_busy_timeout_s <= 3600):
        fail("shop.db_busy_timeout_s", "must be between 0 and 3600 seconds")
    store = settings.store
    if store.backend == "elasticsearch" and not store.url:
        fail("store.url", "is required with store.backend: elasticsearch")
    store_secret: str | None = None
    try:
        store_secret = urllib.parse.urlsplit(store.url).password
    except ValueError:
        fail("store.url", "is not a valid URL")
    if store_secret:
        fail("store.url", "must not contain a password; set VIGIL_STORE_API_KEY")
    allowed = set("abcdefghijklmnopqrstuvwxyz0123456789._-")
    if not store.index_prefix or not set(store.index_prefix) <= allowed:
        fail("store.index_prefix", "use lower-case letters, digits, '.', '-' and '_'")
    if not math.isfinite(store.request_timeout_s) or store.request_timeout_s <= 0:
        fail("store.request_timeout_s", "must be positive")
    if store.retention_interval_s < 0:
        fail("store.retention_interval_s", "must not be negative (0 turns retention passes off)")
    if store.max_bytes and store.backend == "elasticsearch":
        fail(
            "store.max_bytes",
            "applies to the SQLite store only; size an Elasticsearch cluster with ILM"
            " and its disk watermarks, and set 0 here",
        )
    if store.refresh not in REFRESH_MODES:
        fail("store.refresh", f"use one of {', '.join(REFRESH_MODES)}")
    if not math.isfinite(store.sqlite_busy_timeout_s) or store.sqlite_busy_timeout_s < 0:
        fail("store.sqlite_busy_timeout_s", "must be a number of seconds, 0 or more")
    collect = settings.collect
    if collect.postgres_timeout_s <= 0:
        fail("collect.postgres_timeout_s", "must be positive")
    if collect.postgres_max_tables < 0:
        fail("collect.postgres_max_tables", "must not be negative")
    if collect.spool_max_bytes < 0:
        fail("collect.spool_max_bytes", "must not be negative (0 turns the spool off)")
    if collect.spool_after_items < 0:
        fail("collect.spool_after_items", "must not be negative")
    if not math.isfinite(collect.payments_grace_s) or collect.payments_grace_s < 0:
        fail("collect.payments_grace_s", "must not be negative (0 reports at once)")
    try:
        password = urllib.parse.urlsplit(collect.postgres).password
    except ValueError:
        password = None
        fail("collect.postgres", "is not a URL")
    if password is not None:
        fail("collect.postgres", "must not contain a password; set VIGIL_POSTGRES_PASSWORD")
    if settings.collect.syslog_udp:
        host, _, port = settings.collect.syslog_udp.rpartition(":")
        if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            fail("collect.syslog_udp", f"expected host:port, got {settings.collect.syslog_udp!r}")
    for hook in _CHECKS:
        hook(settings, fail)
    return settings


class _Located:
    """A value read from YAML with the line it came from."""

    __slots__ = ("line", "value")

    def __init__(self, value: Any, line: int) -> None:
        self.value = value
        self.line = line


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    return _Located(value, 0)


def _read_yaml(file: Path) -> dict[str, Any]:
    try:
        node = safeyaml.compose(safeyaml.read_text(file), str(file))
    except safeyaml.YamlInputError as exc:
        raise ConfigError(exc.reason, file=str(file), line=exc.line, column=exc.column) from None
    if node is None:
        return {}
    if not isinstance(node, yaml.MappingNode):
        raise ConfigError(
            "the top level must be a mapping of keys", file=str(file), line=node.start_mark.line + 1
        )
    return _unnode(node, file)


def _unnode(node: yaml.Node, file: Path) -> Any:
    if isinstance(node, yaml.MappingNode):
        out: dict[str, Any] = {}
        for key_node, value_node in node.value:
            out[str(key_node.value)] = _unnode(value_node, file)
        out["__line__"] = node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        items = [_unnode(n, file) for n in node.value]
        return _Located(
            [i.value if isinstance(i, _Located) else i for i in items], node.start_mark.line + 1
        )
    try:
        value = safeyaml.construct(node, str(file))
    except safeyaml.YamlInputError as exc:
        raise ConfigError(exc.reason, file=str(file), line=exc.line, column=exc.column) from None
    return _Located(value, node.start_mark.line + 1)


def _build(cls: type[T], data: dict[str, Any], file: str, prefix: str, env: Mapping[str, str]) -> T:
    hints = typing.get_type_hints(cls)
    names = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    block_line = data.get("__line__")
    for key in data:
        if key != "__line__" and key not in names:
            known = ", ".join(sorted(names))
            line = _line_of(data[key], block_line)
            raise ConfigError(
                f"{prefix}{key}: unknown key; known keys here are: {known}", file=file, line=line
            )
    kwargs: dict[str, Any] = {}
    for name, f in names.items():
        key = prefix + name
        typ = hints[name]
        env_name = f.metadata.get("env")
        if env_name and env_name in env:
            kwargs[name] = _convert(
                env[env_name], typ, f"{key} (from ${env_name})", "<environment>", None, env
            )
        elif name in data:
            raw = data[name]
            line = _line_of(raw, block_line)
            kwargs[name] = _convert(raw, typ, key, file, line, env)
        elif dataclasses.is_dataclass(typ):
            # Nested sections still read their env vars when absent from the file.
            kwargs[name] = _build(typing.cast(type, typ), {}, file, key + ".", env)
    return cls(**kwargs)


def _key_line(data: Mapping[str, Any], key: str, env: Mapping[str, str]) -> int | None:
    """The line of the dotted ``key`` in a file read as ``data``.

    None when the file does not set it or its environment variable does
    (``collect.files./var/log/x.log``: a key of a mapping may hold dots).
    """
    node: Any = data
    line = data.get("__line__")
    typ: Any = Settings
    rest = key
    while rest:
        if not isinstance(node, dict):
            return line
        names = sorted((k for k in node if k != "__line__"), key=len, reverse=True)
        name = next((k for k in names if rest == k or rest.startswith(k + ".")), None)
        if name is None:
            return None
        if dataclasses.is_dataclass(typ):
            fields = {f.name: f for f in dataclasses.fields(typ)}
            env_name = fields[name].metadata.get("env") if name in fields else None
            if env_name and env_name in env:
                return None
            typ = typing.get_type_hints(typ).get(name)
        node = node[name]
        line = _line_of(node, line)
        rest = rest[len(name) + 1 :]
    return line


def _line_of(raw: Any, fallback: int | None) -> int | None:
    if isinstance(raw, _Located):
        return raw.line or fallback
    if isinstance(raw, dict):
        return raw.get("__line__", fallback)
    return fallback


def _convert(
    raw: Any, typ: Any, key: str, file: str, line: int | None, env: Mapping[str, str]
) -> Any:
    if dataclasses.is_dataclass(typ):
        if not isinstance(raw, dict):
            raise ConfigError(f"{key}: expected a mapping of keys", file=file, line=line)
        return _build(typing.cast(type, typ), raw, file, key + ".", env)
    origin = get_origin(typ)
    if origin is dict:
        _, value_type = get_args(typ)
        if not isinstance(raw, dict):
            raise ConfigError(f"{key}: expected a mapping", file=file, line=line)
        block = raw.get("__line__", line)
        return {
            str(k): _convert(v, value_type, f"{key}.{k}", file, _line_of(v, block), env)
            for k, v in raw.items()
            if k != "__line__"
        }
    value = raw.value if isinstance(raw, _Located) else raw
    if origin is list:
        (item_type,) = get_args(typ)
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",") if part.strip()]
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list", file=file, line=line)
        return [_scalar(v, item_type, key, file, line) for v in value]
    if isinstance(typ, types.UnionType):
        raise ConfigError(f"{key}: unsupported option type", file=file, line=line)
    return _scalar(value, typ, key, file, line)


_UNIT_TYPES: dict[type, tuple[Callable[[str], float], str]] = {
    Duration: (parse_duration, "a duration like 30d, 12h or 1h30m (0: keep forever)"),
    ByteSize: (parse_bytes, "a size like 500MB or 10GB (0: no cap)"),
}
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _scalar(value: Any, typ: Any, key: str, file: str, line: int | None) -> Any:
    def bad(expected: str) -> ConfigError:
        return ConfigError(f"{key}: expected {expected}, got {value!r}", file=file, line=line)

    if typ in _UNIT_TYPES:
        parse, expected = _UNIT_TYPES[typ]
        number = 0 if isinstance(value, str) and value.strip() == "0" else value
        if isinstance(number, int) and not isinstance(number, bool):
            # A bare number of seconds is ambiguous (Prometheus wants a unit); bytes are not.
            if number == 0 or (typ is ByteSize and number > 0):
                return typ(number)
            raise bad(expected)
        if not isinstance(value, str):
            raise bad(expected)
        try:
            return typ(parse(value))
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}", file=file, line=line) from None
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise bad("true or false")
    if typ is int:
        if isinstance(value, bool):
            raise bad("an integer")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                raise bad("an integer") from None
        raise bad("an integer")
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise bad("a number")
        try:
            number = float(value)
        except (ValueError, OverflowError):
            raise bad("a number") from None
        if not math.isfinite(number):  # NaN and infinity slip through every range check
            raise bad("a finite number")
        return number
    if typ is Decimal:
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise bad("a decimal number")
        try:
            decimal = Decimal(str(value))
        except InvalidOperation:
            raise bad("a decimal number") from None
        if not decimal.is_finite():  # NaN would make every later comparison raise
            raise bad("a finite decimal number")
        return decimal
    if typ is str:
        if isinstance(value, bool):  # YAML reads unquoted true/false/on/off/yes/no so
            raise bad("a string (quote it in YAML)")
        if isinstance(value, (str, int, float)):
            return str(value)
        raise bad("a string")
    raise bad(f"a value of type {typ}")


def describe_options() -> list[tuple[str, str, str, str]]:
    """Every option as (key, default, env var, help), for the config reference."""
    rows: list[tuple[str, str, str, str]] = []

    def walk(cls: type, prefix: str) -> None:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            typ = hints[f.name]
            if dataclasses.is_dataclass(typ):
                walk(typing.cast(type, typ), prefix + f.name + ".")
                continue
            if f.default is not dataclasses.MISSING:
                default = f.default
            else:
                default = typing.cast(Any, f.default_factory)()
            rows.append(
                (
                    prefix + f.name,
                    _show(default),
                    f.metadata.get("env") or "",
                    f.metadata.get("help", ""),
                )
            )

    walk(Settings, "")
    return rows


def _show(value: Any) -> str:
    """A default as it would be written in YAML (flow style)."""

    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, list):
            return [plain(x) for x in v]
        if isinstance(v, Duration):
            return format_duration(v) if v else 0
        if isinstance(v, ByteSize):
            return format_bytes(v) if v else 0
        if isinstance(v, Decimal):
            return float(v) if v != v.to_integral_value() else int(v)
        return v

    text: str = yaml.safe_dump(plain(value), default_flow_style=True, width=10_000)
    return text.strip().removesuffix("...").strip()
