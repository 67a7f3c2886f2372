"""Alertmanager's configuration file (``config/alertmanager.yaml``), in Alertmanager's format.

``load_config(path)`` reads the file through ``vigil.safeyaml`` and returns an
``AMConfig``: ``global``, the ``route`` tree, ``receivers``, ``inhibit_rules``,
``time_intervals`` (and the older ``mute_time_intervals``) and ``templates``, with
Alertmanager's defaults filled in (``group_wait`` 30s, ``group_interval`` 5m,
``repeat_interval`` 4h, ``resolve_timeout`` 5m, ``send_resolved`` true for
webhooks and false for Slack and e-mail). Every key Alertmanager knows is
accepted, so an existing file loads unchanged; an unknown key or a bad value
raises ``AMConfigError`` with ``file:line:column`` and the reason, and so do the
checks ``amtool check-config`` makes (the root route needs a receiver and no
matchers, receivers must exist and be unique, time intervals must exist,
``group_by: ['...']`` stands alone, Slack needs an API URL, e-mail needs a
smarthost and a sender). Integrations Vigil does not deliver to (PagerDuty,
Opsgenie, …) are accepted and listed in ``Receiver.unsupported``. Example::

    cfg = load_config("config/alertmanager.yaml")
    [r.receiver for r in cfg.route.match({"alertname": "X", "severity": "critical"})]
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import zoneinfo
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from alerting.am.matchers import MatcherSyntaxError, format_matcher, parse_matchers
from alerting.am.templates import NotificationTemplates, check_field
from alerting.notify.email import EmailConfig, parse_email_config
from siem.model import Matcher, MatcherError
from vigil import safeyaml
from vigil.errors import ConfigError
from vigil.units import parse_duration

log = logging.getLogger("vigil.alertmanager")
MAX_CHECKED_NODES = 10_000
"""Most YAML nodes of one receiver entry looked at for templates."""

DEFAULT_GROUP_WAIT_S = 30.0
DEFAULT_GROUP_INTERVAL_S = 300.0
DEFAULT_REPEAT_INTERVAL_S = 4 * 3600.0
DEFAULT_RESOLVE_TIMEOUT_S = 300.0
GROUP_BY_ALL = "..."
SLACK_APP_URL = "https://slack.com/api/chat.postMessage"

_LABEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")

OTHER_INTEGRATIONS = (
    "discord_configs",
    "incidentio_configs",
    "jira_configs",
    "mattermost_configs",
    "msteams_configs",
    "msteamsv2_configs",
    "opsgenie_configs",
    "pagerduty_configs",
    "pushover_configs",
    "rocketchat_configs",
    "sns_configs",
    "telegram_configs",
    "victorops_configs",
    "webex_configs",
    "wechat_configs",
)
"""Alertmanager integrations Vigil accepts in a file but does not deliver to."""

REQUIRED_ONE_OF: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "opsgenie_configs": (
        ("api_key", "api_key_file"),
        ("opsgenie_api_key", "opsgenie_api_key_file"),
        "no global OpsGenie API Key set either inline or in a file",
    ),
    "victorops_configs": (
        ("api_key", "api_key_file"),
        ("victorops_api_key", "victorops_api_key_file"),
        "no global VictorOps API Key set",
    ),
    "wechat_configs": (
        ("api_secret", "api_secret_file"),
        ("wechat_api_secret", "wechat_api_secret_file"),
        "no global Wechat ApiSecret set",
    ),
    "telegram_configs": (
        ("bot_token", "bot_token_file"),
        ("telegram_bot_token", "telegram_bot_token_file"),
        "missing bot_token on telegram_config",
    ),
    "sns_configs": (
        ("target_arn", "topic_arn", "phone_number"),
        (),
        "must provide either a Target ARN, Topic ARN, or Phone Number for SNS config",
    ),
    "mattermost_configs": (
        ("webhook_url", "webhook_url_file"),
        ("mattermost_webhook_url", "mattermost_webhook_url_file"),
        "missing webhook_url or webhook_url_file on mattermost_config",
    ),
    "rocketchat_configs": (
        ("token", "token_file"),
        ("rocketchat_token", "rocketchat_token_file"),
        "no global Rocketchat Token set either inline or in a file",
    ),
    "pagerduty_configs": (
        ("routing_key", "routing_key_file", "service_key", "service_key_file"),
        (),
        "missing service or routing key in PagerDuty config",
    ),
}
"""Per integration Vigil does not deliver to: the keys of which one must be set (in the
entry, or globally) and Alertmanager's message when none is, so such files fail as in
``amtool check-config``."""

GLOBAL_KEYS = (
    "resolve_timeout",
    "http_config",
    "smtp_from",
    "smtp_hello",
    "smtp_smarthost",
    "smtp_auth_username",
    "smtp_auth_password",
    "smtp_auth_password_file",
    "smtp_auth_secret",
    "smtp_auth_secret_file",
    "smtp_auth_identity",
    "smtp_require_tls",
    "smtp_tls_config",
    "smtp_force_implicit_tls",
    "slack_api_url",
    "slack_api_url_file",
    "slack_app_token",
    "slack_app_token_file",
    "slack_app_url",
    "victorops_api_key",
    "victorops_api_key_file",
    "victorops_api_url",
    "pagerduty_url",
    "opsgenie_api_key",
    "opsgenie_api_key_file",
    "opsgenie_api_url",
    "wechat_api_url",
    "wechat_api_secret",
    "wechat_api_secret_file",
    "wechat_api_corp_id",
    "telegram_api_url",
    "telegram_bot_token",
    "telegram_bot_token_file",
    "webex_api_url",
    "rocketchat_api_url",
    "rocketchat_token",
    "rocketchat_token_file",
    "rocketchat_token_id",
    "rocketchat_token_id_file",
    "jira_api_url",
    "mattermost_webhook_url",
    "mattermost_webhook_url_file",
)
TOP_KEYS = (
    "global",
    "route",
    "receivers",
    "inhibit_rules",
    "time_intervals",
    "mute_time_intervals",
    "templates",
    "tracing",
)
ROUTE_KEYS = (
    "receiver",
    "group_by",
    "continue",
    "match",
    "match_re",
    "matchers",
    "routes",
    "group_wait",
    "group_interval",
    "repeat_interval",
    "mute_time_intervals",
    "active_time_intervals",
    "escalation",  # Vigil's extension: a file using it is Vigil-only (amtool refuses it)
)
ESCALATION_KEYS = ("after", "notify")
ESCALATION_TARGETS = ("slack_mention", "channel", "email")
MAX_ESCALATION_STEPS = 10
INHIBIT_KEYS = (
    "name",
    "source_match",
    "source_match_re",
    "source_matchers",
    "target_match",
    "target_match_re",
    "target_matchers",
    "equal",
)
SLACK_KEYS = (
    "send_resolved",
    "http_config",
    "api_url",
    "api_url_file",
    "app_token",
    "app_token_file",
    "app_url",
    "channel",
    "username",
    "color",
    "title",
    "title_link",
    "pretext",
    "text",
    "message_text",
    "fields",
    "short_fields",
    "footer",
    "fallback",
    "callback_id",
    "icon_emoji",
    "icon_url",
    "image_url",
    "thumb_url",
    "link_names",
    "mrkdwn_in",
    "actions",
    "update_message",
    "timeout",
)
WEBHOOK_KEYS = (
    "send_resolved",
    "http_config",
    "url",
    "url_file",
    "max_alerts",
    "timeout",
    "payload",
)
EMAIL_KEYS = (
    "send_resolved",
    "to",
    "from",
    "hello",
    "smarthost",
    "auth_username",
    "auth_password",
    "auth_password_file",
    "auth_secret",
    "auth_secret_file",
    "auth_identity",
    "headers",
    "html",
    "text",
    "require_tls",
    "tls_config",
    "force_implicit_tls",
    "threading",
    "rate_limit",  # Vigil: at most N mails per window, e.g. 10/h
    "timeout",  # Vigil: each connect and SMTP exchange
)
EMAIL_GLOBALS = {
    "from": "smtp_from",
    "smarthost": "smtp_smarthost",
    "hello": "smtp_hello",
    "auth_username": "smtp_auth_username",
    "auth_identity": "smtp_auth_identity",
    "require_tls": "smtp_require_tls",
    "tls_config": "smtp_tls_config",
    "force_implicit_tls": "smtp_force_implicit_tls",
}
"""An ``email_configs`` key and the ``global`` key that stands in when it is not given;
``auth_password``/``auth_secret`` (and ``*_file``) come from the global pair as a pair."""
TIME_RANGE_KEYS = ("times", "weekdays", "days_of_month", "months", "years", "location")
WEEKDAYS = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
MONTHS = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)


class AMConfigError(ConfigError):
    """The Alertmanager configuration is wrong; ``file:line:column: reason``."""


@dataclass(frozen=True)
class SlackConfig:
    """One ``slack_configs`` entry. Vigil posts through Slack's Web API with the bot token
    of the settings (``alert.slack``); ``channel`` picks the channel."""

    send_resolved: bool = False
    channel: str = ""
    api_url: str = ""
    fields: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhookConfig:
    """One ``webhook_configs`` entry: the v4 payload POSTed to ``url``."""

    send_resolved: bool = True
    url: str = ""
    url_file: str = ""
    max_alerts: int = 0
    timeout_s: float = 0.0


@dataclass(frozen=True)
class Receiver:
    name: str
    slack: tuple[SlackConfig, ...] = ()
    webhook: tuple[WebhookConfig, ...] = ()
    email: tuple[EmailConfig, ...] = ()
    unsupported: tuple[str, ...] = ()
    """Integrations in the file Vigil does not deliver to, e.g. ``pagerduty_configs``."""


@dataclass(frozen=True)
class TimeRange:
    """One entry of a time interval; every given field must match (empty = any)."""

    times: tuple[tuple[int, int], ...] = ()
    """Minutes of the day, [start, end)."""
    weekdays: tuple[tuple[int, int], ...] = ()
    """0 = Sunday, inclusive ranges."""
    days_of_month: tuple[tuple[int, int], ...] = ()
    """1..31 or -31..-1 (from the end of the month), inclusive ranges."""
    months: tuple[tuple[int, int], ...] = ()
    years: tuple[tuple[int, int], ...] = ()
    location: str = "UTC"

    def contains(self, at: float) -> bool:
        t = dt.datetime.fromtimestamp(at, tz=zoneinfo.ZoneInfo(self.location))
        if self.times and not any(s <= t.hour * 60 + t.minute < e for s, e in self.times):
            return False
        weekday = (t.weekday() + 1) % 7
        if self.weekdays and not any(s <= weekday <= e for s, e in self.weekdays):
            return False
        if self.days_of_month and not self._day_in(t):
            return False
        if self.months and not any(s <= t.month <= e for s, e in self.months):
            return False
        return not self.years or any(s <= t.year <= e for s, e in self.years)

    def _day_in(self, t: dt.datetime) -> bool:
        nxt = (t.replace(day=28) + dt.timedelta(days=4)).replace(day=1)
        last = (nxt - dt.timedelta(days=1)).day
        for s, e in self.days_of_month:
            start = s if s > 0 else last + s + 1
            end = e if e > 0 else last + e + 1
            if start <= t.day <= end:
                return True
        return False


@dataclass(frozen=True)
class TimeInterval:
    name: str
    ranges: tuple[TimeRange, ...]

    def contains(self, at: float) -> bool:
        return any(r.contains(at) for r in self.ranges)


@dataclass(frozen=True)
class InhibitRule:
    source: tuple[Matcher, ...]
    target: tuple[Matcher, ...]
    equal: tuple[str, ...] = ()
    name: str = ""


@dataclass(frozen=True)
class EscalationStep:
    """``after`` seconds unacknowledged: mention someone in the group's Slack thread,
    post the group to another channel, or e-mail it through another receiver."""

    after_s: float
    slack_mention: str = ""
    channel: str = ""
    email: str = ""
    """The name of a receiver with ``email_configs``."""

    def describe(self) -> str:
        target = self.slack_mention or self.channel or f"e-mail via {self.email}"
        return f"after {self.after_s:g}s: {target}"


@dataclass(frozen=True)
class Route:
    """A node of the route tree, with its parent's settings inherited."""

    receiver: str
    matchers: tuple[Matcher, ...] = ()
    group_by: tuple[str, ...] = ()
    group_by_all: bool = False
    group_wait_s: float = DEFAULT_GROUP_WAIT_S
    group_interval_s: float = DEFAULT_GROUP_INTERVAL_S
    repeat_interval_s: float = DEFAULT_REPEAT_INTERVAL_S
    continue_: bool = False
    routes: tuple[Route, ...] = ()
    mute_time_intervals: tuple[str, ...] = ()
    active_time_intervals: tuple[str, ...] = ()
    escalation: tuple[EscalationStep, ...] = ()
    """Vigil's escalation policy (inherited by child routes); repeats until acknowledged."""
    id: str = "{}"
    """Alertmanager's route key: the matchers of the path from the root, e.g.
    ``{}/{severity="critical"}``; part of each group's key. A route matching alike an
    earlier sibling gets its position too (``{}/{}/1``), so its groups are its own."""
    index: str = "0"
    """Position in the tree (``0``, ``0.1``, …), unique even when two routes match alike."""

    def match(self, labels: Mapping[str, str]) -> list[Route]:
        """The routes an alert with ``labels`` goes to, as Alertmanager's ``Route.Match``."""
        if not all(m.matches(labels) for m in self.matchers):
            return []
        rv: list[Route] = []
        for child in self.routes:
            found = child.match(labels)
            rv.extend(found)
            if found and not child.continue_:
                break
        return rv or [self]

    def walk(self) -> list[Route]:
        """This route and every route below it, depth first."""
        return [self, *(r for child in self.routes for r in child.walk())]

    def group_labels(self, labels: Mapping[str, str]) -> dict[str, str]:
        """The labels that make an alert's group under this route."""
        if self.group_by_all:
            return dict(labels)
        return {k: labels[k] for k in self.group_by if labels.get(k, "") != ""}


@dataclass(frozen=True)
class GlobalConfig:
    resolve_timeout_s: float = DEFAULT_RESOLVE_TIMEOUT_S
    smtp_from: str = ""
    smtp_hello: str = "localhost"
    smtp_smarthost: str = ""
    smtp_require_tls: bool = True
    slack_api_url: str = ""
    raw: Mapping[str, Any] = field(default_factory=dict)
    lines: Mapping[str, int] = field(default_factory=dict)
    """The line of each key given in ``global``."""


@dataclass(frozen=True)
class AMConfig:
    file: str
    global_: GlobalConfig
    route: Route
    receivers: Mapping[str, Receiver]
    inhibit_rules: tuple[InhibitRule, ...] = ()
    time_intervals: Mapping[str, TimeInterval] = field(default_factory=dict)
    templates: tuple[str, ...] = ()
    text: str = ""
    """The file as read, for the API's ``/status`` ``config.original``."""
    notification_templates: NotificationTemplates = field(default_factory=NotificationTemplates)
    """Alertmanager's default templates and the files ``templates`` names, parsed."""

    def routes_for(self, labels: Mapping[str, str]) -> list[Route]:
        return self.route.match(labels)

    def muted(self, route: Route, at: float) -> bool:
        """True when ``route``'s mute intervals hold at ``at`` or its active ones do not."""
        if any(self.time_intervals[n].contains(at) for n in route.mute_time_intervals):
            return True
        if route.active_time_intervals:
            return not any(self.time_intervals[n].contains(at) for n in route.active_time_intervals)
        return False


class _Parser:
    """Walks the YAML node tree; the first problem raises ``AMConfigError`` at its node."""

    def __init__(self, file: str) -> None:
        self.file = file

    def fail(self, node: yaml.Node | None, message: str) -> AMConfigError:
        if node is None:
            return AMConfigError(message, file=self.file)
        mark = node.start_mark
        return AMConfigError(message, file=self.file, line=mark.line + 1, column=mark.column + 1)

    def is_null(self, node: yaml.Node | None) -> bool:
        return node is None or (isinstance(node, yaml.ScalarNode) and node.tag.endswith(":null"))

    def mapping(self, node: yaml.Node, what: str, allowed: Sequence[str]) -> dict[str, yaml.Node]:
        if self.is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping")
        rv: dict[str, yaml.Node] = {}
        for key_node, value_node in node.value:
            key = str(key_node.value)
            if key not in allowed:
                raise self.fail(key_node, f"field {key} not found in {what}")
            if key in rv:
                raise self.fail(key_node, f"{what}: {key!r} given twice")
            rv[key] = value_node
        return rv

    def value(self, node: yaml.Node) -> Any:
        return safeyaml.construct(node, self.file)

    def string(self, node: yaml.Node, what: str) -> str:
        if self.is_null(node):
            return ""
        if not isinstance(node, yaml.ScalarNode):
            raise self.fail(node, f"{what} must be a string")
        v = self.value(node)
        if isinstance(v, (bool, dt.date, dt.datetime)):
            raise self.fail(node, f"{what} must be a string; quote it")
        return str(v)

    def boolean(self, node: yaml.Node, what: str) -> bool:
        v = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(v, bool):
            raise self.fail(node, f"{what} must be true or false")
        return v

    def integer(self, node: yaml.Node, what: str) -> int:
        v = self.value(node) if isinstance(node, yaml.ScalarNode) else None
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise self.fail(node, f"{what} must be a whole number, 0 or more")
        return v

    def duration(self, node: yaml.Node, what: str) -> float:
        text = self.string(node, what)
        try:
            return parse_duration(text)
        except ValueError as exc:
            raise self.fail(node, f"{what}: {exc}") from None

    def strings(self, node: yaml.Node, what: str) -> list[str]:
        if self.is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list of strings")
        return [self.string(n, what) for n in node.value]

    def string_map(self, node: yaml.Node, what: str) -> dict[tuple[str, yaml.Node], str]:
        if self.is_null(node):
            return {}
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, f"{what} must be a mapping of label names to values")
        return {(str(k.value), k): self.string(v, f"{what}.{k.value}") for k, v in node.value}

    def label_name(self, node: yaml.Node, name: str, what: str) -> str:
        if not _LABEL_NAME.fullmatch(name):
            raise self.fail(node, f"{what}: {name!r} is not a valid label name")
        return name

    def matchers(
        self, keys: Mapping[str, yaml.Node], prefix: str, what: str
    ) -> tuple[Matcher, ...]:
        """``{prefix}matchers`` plus the older ``{prefix}match`` and ``{prefix}match_re``."""
        rv: list[Matcher] = []
        if f"{prefix}match" in keys:
            for (name, node), value in self.string_map(keys[f"{prefix}match"], what).items():
                rv.append(Matcher(self.label_name(node, name, what), "=", value))
        if f"{prefix}match_re" in keys:
            re_node = keys[f"{prefix}match_re"]
            for (name, node), value in self.string_map(re_node, what).items():
                self.label_name(node, name, what)
                if isinstance(re_node, yaml.MappingNode) and any(
                    str(k.value) == name and self.is_null(v) for k, v in re_node.value
                ):
                    raise self.fail(node, f'invalid regexp value for "{name}"')
                try:
                    rv.append(Matcher(name, "=~", value))
                except MatcherError as exc:
                    raise self.fail(node, f"{what}: {exc}") from None
        listed = keys.get(f"{prefix}matchers")
        if listed is not None and not self.is_null(listed):
            if not isinstance(listed, yaml.SequenceNode):
                raise self.fail(listed, f"{prefix}matchers must be a list of matchers")
            for item in listed.value:
                text = self.string(item, f"{prefix}matchers")
                try:
                    rv.extend(parse_matchers(text))
                except MatcherSyntaxError as exc:
                    raise self.fail(item, f"{prefix}matchers: {exc}") from None
        return tuple(rv)

    # -- top level ---------------------------------------------------------------------

    def parse(self, root: yaml.Node | None, text: str) -> AMConfig:
        if root is None:
            raise self.fail(None, "the file is empty; it needs at least 'route' and 'receivers'")
        top = self.mapping(root, "config", TOP_KEYS)
        glob = self.global_(top.get("global"))
        intervals: dict[str, TimeInterval] = {}
        for key in ("time_intervals", "mute_time_intervals"):
            for interval in self.time_intervals(top.get(key), key):
                if interval.name in intervals:
                    raise self.fail(top[key], f"time interval {interval.name!r} is not unique")
                intervals[interval.name] = interval
        receivers: dict[str, Receiver] = {}
        rnode = top.get("receivers")
        if rnode is not None and not self.is_null(rnode):
            if not isinstance(rnode, yaml.SequenceNode):
                raise self.fail(rnode, "receivers must be a list")
            for item in rnode.value:
                receiver = self.receiver(item, glob)
                if receiver.name in receivers:
                    raise self.fail(
                        item, f"notification config name {receiver.name!r} is not unique"
                    )
                receivers[receiver.name] = receiver
        if "route" not in top or self.is_null(top["route"]):
            raise self.fail(root, "no routes provided; add 'route:' with a 'receiver'")
        route_node = top["route"]
        root_keys = self.mapping(route_node, "route", ROUTE_KEYS)
        if "receiver" not in root_keys:
            raise self.fail(route_node, "root route must specify a default receiver")
        if any(k in root_keys for k in ("match", "match_re", "matchers")):
            raise self.fail(route_node, "root route must not have any matchers")
        if "continue" in root_keys and self.boolean(root_keys["continue"], "continue"):
            raise self.fail(route_node, "cannot have continue in root route")
        if root_keys.keys() & {"mute_time_intervals", "active_time_intervals"}:
            raise self.fail(route_node, "root route must not have any mute time intervals")
        route = self.route(route_node, None, "0", receivers, intervals)
        inhibit = tuple(self.inhibit_rules(top.get("inhibit_rules")))
        templates = tuple(self.strings(top["templates"], "templates")) if "templates" in top else ()
        try:
            loaded = NotificationTemplates.load(templates, Path(self.file).parent)
        except ConfigError as exc:
            if exc.file is None:
                raise self.fail(top["templates"], exc.reason) from None
            raise AMConfigError(exc.reason, file=exc.file, line=exc.line) from None
        if "tracing" in top:
            self.mapping(
                top["tracing"],
                "tracing",
                (
                    "client_type",
                    "endpoint",
                    "sampling_fraction",
                    "insecure",
                    "tls_config",
                    "headers",
                    "compression",
                    "timeout",
                ),
            )
        return AMConfig(
            self.file, glob, route, receivers, inhibit, intervals, templates, text, loaded
        )

    def global_(self, node: yaml.Node | None) -> GlobalConfig:
        if node is None:
            return GlobalConfig()
        keys = self.mapping(node, "global", GLOBAL_KEYS)
        raw: dict[str, Any] = {}
        for key, value in keys.items():
            if key in ("http_config", "smtp_tls_config"):
                raw[key] = self.value(value)
            elif key == "resolve_timeout":
                raw[key] = self.duration(value, "global.resolve_timeout")
            elif key in ("smtp_require_tls", "smtp_force_implicit_tls"):
                raw[key] = self.boolean(value, f"global.{key}")
            else:
                raw[key] = self.string(value, f"global.{key}")
                if key.endswith("_url") and raw[key]:
                    self.url(value, raw[key], f"global.{key}")
        app_url = raw.get("slack_app_url") or SLACK_APP_URL
        if (
            (raw.get("slack_app_token") or raw.get("slack_app_token_file"))
            and (raw.get("slack_api_url") or raw.get("slack_api_url_file"))
            and raw.get("slack_api_url") != app_url
        ):
            raise self.fail(
                node,
                "at most one of slack_app_token/slack_app_token_file & "
                "slack_api_url/slack_api_url_file must be configured",
            )
        for key in sorted(raw):
            if raw.get(key) and raw.get(f"{key}_file"):
                raise self.fail(node, f"at most one of {key} & {key}_file must be configured")
        if raw.get("smtp_auth_password") and raw.get("smtp_auth_password_file"):
            raise self.fail(
                node,
                "at most one of smtp_auth_password & smtp_auth_password_file must be configured",
            )
        return GlobalConfig(
            resolve_timeout_s=raw.get("resolve_timeout", DEFAULT_RESOLVE_TIMEOUT_S),
            smtp_from=raw.get("smtp_from", ""),
            smtp_hello=raw.get("smtp_hello", "localhost") or "localhost",
            smtp_smarthost=raw.get("smtp_smarthost", ""),
            smtp_require_tls=raw.get("smtp_require_tls", True),
            slack_api_url=raw.get("slack_api_url", "")
            or raw.get("slack_api_url_file", "")
            or raw.get("slack_app_token", "")
            or raw.get("slack_app_token_file", ""),
            raw=raw,
            lines={k: v.start_mark.line + 1 for k, v in keys.items()},
        )

    def url(self, node: yaml.Node, text: str, what: str) -> str:
        if not re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://[^\s/]", text):
            raise self.fail(
                node, f"{what}: unsupported scheme or missing host in URL {text[:80]!r}"
            )
        return text

    # -- route tree ---------------------------------------------------------------------

    def route(
        self,
        node: yaml.Node,
        parent: Route | None,
        index: str,
        receivers: Mapping[str, Receiver],
        intervals: Mapping[str, TimeInterval],
        siblings: set[str] | None = None,
    ) -> Route:
        keys = self.mapping(node, "route", ROUTE_KEYS)
        receiver = self.string(keys["receiver"], "receiver") if "receiver" in keys else ""
        if not receiver:
            if parent is None:
                raise self.fail(node, "root route must specify a default receiver")
            receiver = parent.receiver
        if receiver not in receivers:
            where = keys.get("receiver", node)
            raise self.fail(where, f'undefined receiver "{receiver}" used in route')
        matchers = self.matchers(keys, "", "route")
        group_by = parent.group_by if parent else ()
        group_by_all = parent.group_by_all if parent else False
        if "group_by" in keys:
            names = self.strings(keys["group_by"], "group_by")
            if GROUP_BY_ALL in names:
                if len(names) > 1:
                    raise self.fail(
                        keys["group_by"],
                        "cannot have wildcard group_by (`...`) and other other labels"
                        " at the same time",
                    )
                group_by, group_by_all = (), True
            else:
                seen: set[str] = set()
                for name in names:
                    self.label_name(keys["group_by"], name, "group_by")
                    if name in seen:
                        raise self.fail(keys["group_by"], f"duplicated label {name!r} in group_by")
                    seen.add(name)
                group_by, group_by_all = tuple(names), False

        def inherited(key: str, default: float) -> float:
            if key in keys:
                return self.duration(keys[key], key)
            return getattr(parent, key + "_s") if parent else default

        group_interval = inherited("group_interval", DEFAULT_GROUP_INTERVAL_S)
        if group_interval == 0:
            raise self.fail(keys["group_interval"], "group_interval cannot be zero")
        repeat_interval = inherited("repeat_interval", DEFAULT_REPEAT_INTERVAL_S)
        if repeat_interval == 0:
            raise self.fail(keys["repeat_interval"], "repeat_interval cannot be zero")
        named: dict[str, tuple[str, ...]] = {}
        for key in ("mute_time_intervals", "active_time_intervals"):
            names = self.strings(keys[key], key) if key in keys else []
            for name in names:
                if name not in intervals:
                    raise self.fail(keys[key], f'undefined time interval "{name}" used in route')
            named[key] = tuple(names)
        route_id = parent.id if parent else "{}"
        if parent is not None:
            route_id += "/{" + ",".join(format_matcher(m) for m in matchers) + "}"
            if siblings is not None:
                # Siblings that match alike (`continue: true` to two receivers, no
                # matchers) are each their own group, as in Alertmanager, which keeps
                # groups per route; the later one's key gets its position (Route.ID).
                if route_id in siblings:
                    route_id += "/" + index.rsplit(".", 1)[-1]
                siblings.add(route_id)
        this = Route(
            receiver=receiver,
            matchers=matchers,
            group_by=group_by,
            group_by_all=group_by_all,
            group_wait_s=inherited("group_wait", DEFAULT_GROUP_WAIT_S),
            group_interval_s=group_interval,
            repeat_interval_s=repeat_interval,
            continue_=self.boolean(keys["continue"], "continue") if "continue" in keys else False,
            mute_time_intervals=named["mute_time_intervals"],
            active_time_intervals=named["active_time_intervals"],
            escalation=self.escalation(keys["escalation"], receivers)
            if "escalation" in keys
            else (parent.escalation if parent else ()),
            id=route_id,
            index=index,
        )
        children: list[Route] = []
        sub = keys.get("routes")
        if sub is not None and not self.is_null(sub):
            if not isinstance(sub, yaml.SequenceNode):
                raise self.fail(sub, "routes must be a list of routes")
            taken: set[str] = set()
            for i, child in enumerate(sub.value):
                children.append(
                    self.route(child, this, f"{index}.{i}", receivers, intervals, taken)
                )
        return Route(**{**this.__dict__, "routes": tuple(children)})

    def escalation(
        self, node: yaml.Node, receivers: Mapping[str, Receiver]
    ) -> tuple[EscalationStep, ...]:
        """``escalation: [{after: 5m, notify: {slack_mention: "<!subteam^S1>"}}, …]``."""
        if self.is_null(node):
            return ()
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, "escalation must be a list of {after, notify} steps")
        if len(node.value) > MAX_ESCALATION_STEPS:
            raise self.fail(node, f"escalation: at most {MAX_ESCALATION_STEPS} steps")
        steps: list[EscalationStep] = []
        for item in node.value:
            keys = self.mapping(item, "escalation step", ESCALATION_KEYS)
            for key in ESCALATION_KEYS:
                if key not in keys:
                    raise self.fail(item, f"escalation step: {key} is required")
            after = self.duration(keys["after"], "escalation.after")
            if after <= 0:
                raise self.fail(keys["after"], "escalation.after must be more than 0s")
            if steps and after <= steps[-1].after_s:
                raise self.fail(keys["after"], "escalation.after must grow from step to step")
            target = self.mapping(keys["notify"], "escalation.notify", ESCALATION_TARGETS)
            if len(target) != 1:
                raise self.fail(
                    keys["notify"],
                    "escalation.notify: give exactly one of " + ", ".join(ESCALATION_TARGETS),
                )
            ((kind, value_node),) = target.items()
            value = self.string(value_node, f"escalation.notify.{kind}")
            if not value:
                raise self.fail(value_node, f"escalation.notify.{kind} must not be empty")
            if kind == "email":
                found = receivers.get(value)
                if found is None:
                    raise self.fail(value_node, f'undefined receiver "{value}" in escalation')
                if not found.email:
                    raise self.fail(value_node, f'receiver "{value}" has no email_configs')
            steps.append(EscalationStep(after, **{kind: value}))
        return tuple(steps)

    # -- receivers ----------------------------------------------------------------------

    def receiver(self, node: yaml.Node, glob: GlobalConfig) -> Receiver:
        allowed = ("name", "slack_configs", "webhook_configs", "email_configs", *OTHER_INTEGRATIONS)
        keys = self.mapping(node, "receiver", allowed)
        name = self.string(keys["name"], "receiver name") if "name" in keys else ""
        if not name:
            raise self.fail(node, "missing name in receiver")
        slack = tuple(
            self.slack(n, glob) for n in self.items(keys.get("slack_configs"), "slack_configs")
        )
        webhook = tuple(
            self.webhook(n) for n in self.items(keys.get("webhook_configs"), "webhook_configs")
        )
        email = tuple(
            self.email(n, glob, f"receivers[{name}].email_configs[{i}]")
            for i, n in enumerate(self.items(keys.get("email_configs"), "email_configs"))
        )
        unsupported: list[str] = []
        for key in OTHER_INTEGRATIONS:
            for item in self.items(keys.get(key), key):
                if not isinstance(item, yaml.MappingNode):
                    raise self.fail(item, f"each of {key} must be a mapping")
                entry = self.value(item)
                self.required(item, key, entry if isinstance(entry, dict) else {}, glob)
                unsupported.append(key)
        return Receiver(name, slack, webhook, email, tuple(unsupported))

    def required(
        self, node: yaml.Node, kind: str, entry: Mapping[str, Any], glob: GlobalConfig
    ) -> None:
        """The checks Alertmanager makes on an integration Vigil only accepts."""
        for key in entry:
            if entry.get(key) and entry.get(f"{key}_file"):
                raise self.fail(node, f"at most one of {key} & {key}_file must be configured")
        if kind not in REQUIRED_ONE_OF:
            return
        local, glob_keys, message = REQUIRED_ONE_OF[kind]
        if not any(entry.get(k) for k in local) and not any(glob.raw.get(k) for k in glob_keys):
            raise self.fail(node, message)

    def items(self, node: yaml.Node | None, what: str) -> list[yaml.Node]:
        if node is None or self.is_null(node):
            return []
        if not isinstance(node, yaml.SequenceNode):
            raise self.fail(node, f"{what} must be a list")
        return list(node.value)

    def _fields(
        self,
        node: yaml.Node,
        what: str,
        allowed: Sequence[str],
        kinds: Mapping[str, Callable[[yaml.Node, str], Any]],
    ) -> dict[str, Any]:
        keys = self.mapping(node, what, allowed)
        rv: dict[str, Any] = {}
        for key, value in keys.items():
            convert = kinds.get(key)
            rv[key] = convert(value, f"{what}.{key}") if convert else self.value(value)
        return rv

    def slack(self, node: yaml.Node, glob: GlobalConfig) -> SlackConfig:
        kinds: dict[str, Callable[[yaml.Node, str], Any]] = {
            "send_resolved": self.boolean,
            "update_message": self.boolean,
            "short_fields": self.boolean,
            "link_names": self.boolean,
            "timeout": self.duration,
            "mrkdwn_in": self.strings,
        }
        for key in SLACK_KEYS:
            if key not in kinds and key not in ("http_config", "fields", "actions"):
                kinds[key] = self.string
        rv = self._fields(node, "slack_config", SLACK_KEYS, kinds)
        self.check_templates(node, "slack_config", SLACK_KEYS)
        if rv.get("api_url") and rv.get("api_url_file"):
            raise self.fail(node, "at most one of api_url & api_url_file must be configured")
        api_url = (
            rv.get("api_url")
            or rv.get("api_url_file")
            or rv.get("app_token")
            or rv.get("app_token_file")
        )
        if rv.get("api_url"):
            self.url(node, rv["api_url"], "slack_config.api_url")
        if (rv.get("api_url") or rv.get("api_url_file")) and (
            rv.get("app_token") or rv.get("app_token_file")
        ):
            raise self.fail(
                node,
                "at most one of api_url/api_url_file & app_token/app_token_file must be configured",
            )
        app = rv.get("app_token") or rv.get("app_token_file") or glob.raw.get("slack_app_token")
        effective = rv.get("api_url") or glob.raw.get("slack_api_url", "")
        if rv.get("update_message") and not app and effective != SLACK_APP_URL:
            raise self.fail(
                node,
                "update_message can only be used with bot tokens. api_url must be set to"
                " https://slack.com/api/chat.postMessage",
            )
        if not api_url and not glob.slack_api_url:
            raise self.fail(node, "no global Slack API URL set either inline or in a file")
        return SlackConfig(
            send_resolved=rv.get("send_resolved", False),
            channel=rv.get("channel", ""),
            api_url=api_url or glob.slack_api_url,
            fields=rv,
        )

    def check_templates(self, node: yaml.Node, what: str, keys: Sequence[str]) -> None:
        """Log a located WARNING for a templated field that does not parse: Alertmanager
        loads it and fails when it sends, so Vigil loads it too (and sends its own text)."""
        todo = [(f"{what}.{k}", v) for k, v in self.mapping(node, what, keys).items()]
        seen = 0
        while todo and seen < MAX_CHECKED_NODES:
            seen += 1
            where, value = todo.pop()
            if isinstance(value, yaml.MappingNode):
                todo += [(f"{where}.{k.value}", v) for k, v in value.value]
            elif isinstance(value, yaml.SequenceNode):
                todo += [(f"{where}[{i}]", v) for i, v in enumerate(value.value)]
            elif isinstance(value, yaml.ScalarNode) and "{{" in str(value.value):
                problem = check_field(str(value.value))
                if problem:
                    log.warning("%s", self.fail(value, f"{where}: template: {problem}"))

    def webhook(self, node: yaml.Node) -> WebhookConfig:
        kinds: dict[str, Callable[[yaml.Node, str], Any]] = {
            "send_resolved": self.boolean,
            "url": self.string,
            "url_file": self.string,
            "max_alerts": self.integer,
            "timeout": self.duration,
        }
        rv = self._fields(node, "webhook_config", WEBHOOK_KEYS, kinds)
        if rv.get("url") and rv.get("url_file"):
            raise self.fail(node, "at most one of url & url_file must be configured")
        if not rv.get("url") and not rv.get("url_file"):
            raise self.fail(node, "one of url or url_file must be configured")
        if rv.get("url"):
            self.url(node, rv["url"], "webhook_config.url")
        return WebhookConfig(
            send_resolved=rv.get("send_resolved", True),
            url=rv.get("url", ""),
            url_file=rv.get("url_file", ""),
            max_alerts=rv.get("max_alerts", 0),
            timeout_s=rv.get("timeout", 0.0),
        )

    def email(self, node: yaml.Node, glob: GlobalConfig, where: str) -> EmailConfig:
        """An ``email_configs`` entry with the ``global`` ``smtp_*`` defaults applied, checked
        by the e-mail receiver's own parser (errors at the file and line of the key)."""
        keys = self.mapping(node, "email_config", EMAIL_KEYS)
        self.check_templates(node, "email_config", EMAIL_KEYS)
        raw = {k: self.value(v) for k, v in keys.items()}
        lines = {k: v.start_mark.line + 1 for k, v in keys.items()}
        g = glob.raw

        def inherit(key: str, global_key: str) -> None:
            if raw.get(key) in (None, "") and g.get(global_key) not in (None, ""):
                raw[key] = g[global_key]
                lines[key] = glob.lines.get(global_key, node.start_mark.line + 1)

        for key, global_key in EMAIL_GLOBALS.items():
            inherit(key, global_key)
        for secret in ("auth_password", "auth_secret"):
            if not raw.get(secret) and not raw.get(f"{secret}_file"):
                inherit(secret, f"smtp_{secret}")
                inherit(f"{secret}_file", f"smtp_{secret}_file")
        if not raw.get("to"):
            raise self.fail(node, "missing to address in email config")
        if not raw.get("smarthost"):
            raise self.fail(node, "no global SMTP smarthost set")
        if not raw.get("from"):
            raise self.fail(node, "no global SMTP from set")
        try:
            return parse_email_config(
                raw,
                where=where,
                file=self.file,
                line=node.start_mark.line + 1,
                lines=lines,
                env=os.environ,
            )
        except ConfigError as exc:
            raise AMConfigError(exc.reason, file=exc.file, line=exc.line) from None

    # -- inhibition and time intervals --------------------------------------------------

    def inhibit_rules(self, node: yaml.Node | None) -> list[InhibitRule]:
        rv: list[InhibitRule] = []
        for item in self.items(node, "inhibit_rules"):
            keys = self.mapping(item, "inhibit rule", INHIBIT_KEYS)
            equal = self.strings(keys["equal"], "equal") if "equal" in keys else []
            for name in equal:
                self.label_name(keys["equal"], name, "equal")
            rv.append(
                InhibitRule(
                    source=self.matchers(keys, "source_", "inhibit rule"),
                    target=self.matchers(keys, "target_", "inhibit rule"),
                    equal=tuple(equal),
                    name=self.string(keys["name"], "name") if "name" in keys else "",
                )
            )
        return rv

    def time_intervals(self, node: yaml.Node | None, what: str) -> list[TimeInterval]:
        rv: list[TimeInterval] = []
        for item in self.items(node, what):
            keys = self.mapping(item, what[:-1], ("name", "time_intervals"))
            name = self.string(keys["name"], "name") if "name" in keys else ""
            if not name:
                raise self.fail(item, f"missing name in {what[:-1]}")
            ranges = tuple(
                self.time_range(n) for n in self.items(keys.get("time_intervals"), "time_intervals")
            )
            rv.append(TimeInterval(name, ranges))
        return rv

    def time_range(self, node: yaml.Node) -> TimeRange:
        keys = self.mapping(node, "time interval", TIME_RANGE_KEYS)
        times: list[tuple[int, int]] = []
        for item in self.items(keys.get("times"), "times"):
            tk = self.mapping(item, "times", ("start_time", "end_time"))
            if "start_time" not in tk or "end_time" not in tk:
                raise self.fail(item, "times need both start_time and end_time")
            start = self.clock(tk["start_time"])
            end = self.clock(tk["end_time"])
            if start >= end:
                raise self.fail(item, "start time cannot be equal or greater than end time")
            times.append((start, end))
        location = "UTC"
        if "location" in keys:
            location = self.string(keys["location"], "location")
            if location == "Local":
                location = "UTC"
            try:
                zoneinfo.ZoneInfo(location)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError):
                raise self.fail(keys["location"], f"unknown time zone {location!r}") from None
        return TimeRange(
            times=tuple(times),
            weekdays=self.ranges(keys.get("weekdays"), "weekdays", WEEKDAYS, 0, 6),
            days_of_month=self.ranges(keys.get("days_of_month"), "days_of_month", (), -31, 31),
            months=self.ranges(keys.get("months"), "months", MONTHS, 1, 12),
            years=self.ranges(keys.get("years"), "years", (), 1, 9999),
            location=location,
        )

    def clock(self, node: yaml.Node) -> int:
        text = self.string(node, "time")
        m = re.fullmatch(r"(\d{2}):(\d{2})", text)
        if (
            m is None
            or int(m.group(1)) > 24
            or int(m.group(2)) > 59
            or (int(m.group(1)) == 24 and int(m.group(2)) != 0)
        ):
            raise self.fail(node, f"couldn't parse timestamp {text!r}, invalid format")
        return int(m.group(1)) * 60 + int(m.group(2))

    def ranges(
        self, node: yaml.Node | None, what: str, names: Sequence[str], low: int, high: int
    ) -> tuple[tuple[int, int], ...]:
        rv: list[tuple[int, int]] = []
        for item in self.items(node, what):
            text = self.string(item, what).strip().lower()
            parts = text.split(":")
            if len(parts) > 2:
                raise self.fail(item, f"{what}: bad range {text!r}")
            bounds: list[int] = []
            for part in parts:
                if part in names:
                    bounds.append(names.index(part) + (1 if what == "months" else 0))
                    continue
                try:
                    n = int(part)
                except ValueError:
                    raise self.fail(item, f"{what}: {part!r} is not a valid {what[:-1]}") from None
                if not low <= n <= high or (n == 0 and what == "days_of_month"):
                    raise self.fail(item, f"{what}: {n} is out of range {low}..{high}")
                bounds.append(n)
            start, end = bounds[0], bounds[-1]
            if (start > 0) == (end > 0) and start > end:
                raise self.fail(item, f"{what}: start {start} is after end {end}")
            rv.append((start, end))
        return tuple(rv)


def parse_config(text: str, file: str) -> AMConfig:
    """The configuration in ``text``; raises ``AMConfigError`` (``YamlInputError`` is turned
    into one) naming ``file:line`` and the reason."""
    try:
        root = safeyaml.compose(text, file)
        return _Parser(file).parse(root, text)
    except safeyaml.YamlInputError as exc:
        raise AMConfigError(exc.reason, file=exc.file, line=exc.line, column=exc.column) from None


def load_config(path: str | Path) -> AMConfig:
    """Read and check ``path``; raises ``AMConfigError``."""
    file = str(path)
    try:
        text = safeyaml.read_text(path)
    except safeyaml.YamlInputError as exc:
        raise AMConfigError(exc.reason, file=exc.file, line=exc.line, column=exc.column) from None
    return parse_config(text, file)


def template_globs(path: str | Path) -> tuple[str, ...]:
    """The ``templates`` globs of the file at ``path`` as far as they can be read, even when
    the file does not load (a reload watches those template files until it does)."""
    try:
        root = safeyaml.compose(safeyaml.read_text(path), str(path))
    except safeyaml.YamlInputError:
        return ()
    if not isinstance(root, yaml.MappingNode):
        return ()
    for key, value in root.value:
        if getattr(key, "value", None) == "templates" and isinstance(value, yaml.SequenceNode):
            return tuple(str(v.value) for v in value.value if isinstance(v, yaml.ScalarNode))
    return ()
